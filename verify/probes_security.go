package verify

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/roles"
)

// Master security checks (docs/security.md): the API server's audit log, and Secrets sealed
// in etcd.

// auditLogProbe: the API server writes an audit log, 0600, with events at Metadata level and
// never a request body (a Secret's value must not land in it).
func auditLogProbe() Probe {
	return Probe{
		Name:     "master/audit-log",
		Expected: roles.AuditLogPath + " 0600 with Metadata events, no request bodies",
		Script: fmt.Sprintf(`f=%s
if [ -f "$f" ]; then
  echo "mode=$(stat -c %%a "$f")"
  echo "events=$(grep -c '"kind":"Event"' "$f")"
  echo "metadata=$(grep -c '"level":"Metadata"' "$f")"
  echo "bodies=$(grep -c '"requestObject"\|"responseObject"' "$f")"
else
  echo mode=missing
fi`, roles.AuditLogPath),
		Units: []string{"kube-apiserver.service"},
		Eval:  func(o Output) (string, bool) { return judgeAuditLog(o.KV()) },
	}
}

func judgeAuditLog(kv map[string]string) (string, bool) {
	if kv["mode"] == "missing" || kv["mode"] == "" {
		return "no audit log", false
	}
	events, _ := strconv.Atoi(kv["events"])
	metadata, _ := strconv.Atoi(kv["metadata"])
	bodies, _ := strconv.Atoi(kv["bodies"])
	got := fmt.Sprintf("mode %s, %d events (%d Metadata), %d with bodies", kv["mode"], events, metadata, bodies)
	return got, kv["mode"] == "600" && events > 0 && metadata == events && bodies == 0
}

// etcdctlArgs reach the master's etcd as the API server does.
const etcdctlArgs = "--endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt " +
	"--cert=/etc/kubernetes/pki/apiserver-etcd-client.crt --key=/etc/kubernetes/pki/apiserver-etcd-client.key"

// secretsEncryptedProbe reads Secrets raw from etcd (the first 20): each value must start with
// the secretbox envelope, not Kubernetes' plain "k8s\0" protobuf. Only a short prefix of each
// value leaves the node, with anything but letters, digits and ':' masked.
func secretsEncryptedProbe() Probe {
	return Probe{
		Name:     "master/secrets-encrypted",
		Expected: "every Secret in etcd sealed (k8s:enc:secretbox:v1:...)",
		Script: fmt.Sprintf(`for k in $(timeout 60 etcdctl %[1]s get --prefix --keys-only /registry/secrets/ | head -n 20); do
  printf 'secret %%s %%s\n' "$k" "$(timeout 30 etcdctl %[1]s get "$k" --print-value-only | head -c 26 | tr -c 'A-Za-z0-9:' '.')"
done
true`, etcdctlArgs),
		Units: []string{"etcd.service", "kube-apiserver.service"},
		Eval:  func(o Output) (string, bool) { return judgeSecretsEncrypted(o.Lines()) },
	}
}

func judgeSecretsEncrypted(lines []string) (string, bool) {
	var sealed int
	var plain []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "secret" {
			continue
		}
		if strings.HasPrefix(f[2], "k8s:enc:secretbox:v1:") {
			sealed++
		} else {
			plain = append(plain, fmt.Sprintf("%s (%s)", f[1], f[2]))
		}
	}
	switch {
	case len(plain) > 0:
		return "not sealed: " + strings.Join(plain, ", "), false
	case sealed == 0:
		return "no Secret found in etcd to check", false
	}
	return fmt.Sprintf("%d Secrets sealed with secretbox", sealed), true
}

// sshdProbe: sshd's effective settings (sshd -T) refuse passwords, keyboard-interactive
// logins and root with a password.
func sshdProbe() Probe {
	return Probe{
		Name:     "hygiene/sshd-keys-only",
		Expected: "passwordauthentication no, kbdinteractiveauthentication no, permitrootlogin prohibit-password or no",
		Script:   `sshd -T 2>&1 | grep -Ei '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin|permitemptypasswords) |rror'; true`,
		Units:    []string{"ssh.service"},
		Eval:     func(o Output) (string, bool) { return judgeSSHD(o.Lines()) },
	}
}

func judgeSSHD(lines []string) (string, bool) {
	got := map[string]string{}
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, " "); ok {
			got[strings.ToLower(k)] = strings.ToLower(strings.TrimSpace(v))
		}
	}
	desc := fmt.Sprintf("passwordauthentication %s, kbdinteractiveauthentication %s, permitrootlogin %s, permitemptypasswords %s",
		orNone(got["passwordauthentication"]), orNone(got["kbdinteractiveauthentication"]), orNone(got["permitrootlogin"]), orNone(got["permitemptypasswords"]))
	root := got["permitrootlogin"]
	return desc, got["passwordauthentication"] == "no" && got["kbdinteractiveauthentication"] == "no" &&
		got["permitemptypasswords"] == "no" && (root == "prohibit-password" || root == "without-password" || root == "no" || root == "forced-commands-only")
}

// sandboxProbe: a control-plane unit's systemd sandbox (roles.Sandbox) is in force as systemd
// reads the unit with every drop-in, on every role (the settings are the image's, whether the
// unit runs or not), so a later drop-in that loosens one fails the check.
func sandboxProbe(unit string, want []roles.Setting) Probe {
	keys := make([]string, len(want))
	for i, s := range want {
		keys[i] = s.Key
	}
	return Probe{
		Static:   true,
		Name:     "security/sandbox/" + unit,
		Expected: "systemd sandbox of roles/sandbox.go (" + strings.Join(keys, ", ") + ")",
		Script:   fmt.Sprintf("systemctl show -p %s %s", shell.Quote(strings.Join(keys, ",")), shell.Quote(unit)),
		Units:    []string{unit},
		Eval:     func(o Output) (string, bool) { return judgeSandbox(o.Lines(), want) },
	}
}

func judgeSandbox(lines []string, want []roles.Setting) (string, bool) {
	got := map[string]string{}
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	var off []string
	for _, s := range want {
		v, ok := got[s.Key]
		if !ok {
			off = append(off, s.Key+" not reported")
		} else if v != s.Value {
			off = append(off, fmt.Sprintf("%s=%s (want %q)", s.Key, v, s.Value))
		}
	}
	if len(off) > 0 {
		return strings.Join(off, "; "), false
	}
	return fmt.Sprintf("all %d settings in force", len(want)), true
}

// etcdUserProbe (master): etcd runs as its own user, which owns its data, 0700.
func etcdUserProbe() Probe {
	return Probe{
		Name:     "security/etcd-user",
		Expected: "etcd runs as " + roles.EtcdUser + "; /var/lib/etcd owned by it, 0700",
		Script:   `echo "process=$(ps -o user= -C etcd | sort -u | tr '\n' ' ')"; echo "data=$(stat -c '%U %a' /var/lib/etcd 2>&1)"`,
		Units:    []string{"etcd.service"},
		Eval:     func(o Output) (string, bool) { return judgeEtcdUser(o.KV()) },
	}
}

func judgeEtcdUser(kv map[string]string) (string, bool) {
	process, data := strings.TrimSpace(kv["process"]), strings.TrimSpace(kv["data"])
	got := fmt.Sprintf("process user %s, data %s", orNone(process), orNone(data))
	return got, process == roles.EtcdUser && data == roles.EtcdUser+" 700"
}

// secretFileGlobs are the files holding credentials or credential-bearing settings on a node:
// kubeconfigs, private keys, the Secrets encryption key, the node agents' configurations and
// the user-data's cluster settings. Each must be root's and unreadable by group and others.
var secretFileGlobs = []string{
	"/etc/kubernetes/*.conf",
	"/etc/kubernetes/pki/*.key",
	"/etc/kubernetes/pki/etcd/*.key",
	"/etc/kubernetes/pki/encryption-config.yaml",
	roles.KubeletConfigPath,
	roles.KubeProxyConfigPath,
	"/var/lib/kubelet/pki/*.key",
	"/var/lib/kubelet/pki/*.pem",
	"/etc/kubebake/cluster.env",
}

// secretFileModesProbe: every credential file present is owned by root, mode 0600 or
// stricter; the kubelet's configuration must be among them where the role runs a kubelet.
// stat -L: the kubelet's current certificates are symlinks to dated files.
func secretFileModesProbe(runsKubelet bool) Probe {
	return Probe{
		Name:     "security/secret-file-modes",
		Expected: "credential files (kubeconfigs, keys, agent configs, cluster.env) root's, 0600 or stricter",
		Script:   "for f in " + strings.Join(secretFileGlobs, " ") + "; do [ -f \"$f\" ] && printf 'file=%s %s\\n' \"$(stat -L -c '%a %U' \"$f\")\" \"$f\"; done; true",
		Eval:     func(o Output) (string, bool) { return judgeSecretFileModes(o.Lines(), runsKubelet) },
	}
}

func judgeSecretFileModes(lines []string, runsKubelet bool) (string, bool) {
	var bad []string
	n, kubelet := 0, false
	for _, l := range lines {
		v, ok := strings.CutPrefix(l, "file=")
		if !ok {
			continue
		}
		f := strings.SplitN(v, " ", 3)
		if len(f) != 3 {
			continue
		}
		n++
		mode, err := strconv.ParseUint(f[0], 8, 32)
		if err != nil || mode&0o077 != 0 || f[1] != "root" {
			bad = append(bad, fmt.Sprintf("%s %s %s", f[2], f[0], f[1]))
		}
		kubelet = kubelet || f[2] == roles.KubeletConfigPath
	}
	switch {
	case len(bad) > 0:
		return "readable by others or not root's: " + strings.Join(bad, ", "), false
	case runsKubelet && !kubelet:
		return fmt.Sprintf("%d files, but no %s", n, roles.KubeletConfigPath), false
	}
	return fmt.Sprintf("%d files, each root's and 0600 or stricter", n), true
}
