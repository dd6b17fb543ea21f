package verify

import (
	"fmt"
	"strconv"
	"strings"

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
