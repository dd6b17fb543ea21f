package verify

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
)

// TestJudgeAuditLog: the audit check fails on each defect of the log.
func TestJudgeAuditLog(t *testing.T) {
	if got, ok := judgeAuditLog(map[string]string{"mode": "600", "events": "42", "metadata": "42", "bodies": "0"}); !ok {
		t.Errorf("good log: %q", got)
	}
	for name, kv := range map[string]map[string]string{
		"no log (flags missing)":           {"mode": "missing"},
		"readable by others":               {"mode": "644", "events": "42", "metadata": "42", "bodies": "0"},
		"empty":                            {"mode": "600", "events": "0", "metadata": "0", "bodies": "0"},
		"bodies (level Request)":           {"mode": "600", "events": "42", "metadata": "40", "bodies": "2"},
		"another level than Metadata":      {"mode": "600", "events": "42", "metadata": "30", "bodies": "0"},
		"the probe printed nothing at all": {},
	} {
		if got, ok := judgeAuditLog(kv); ok {
			t.Errorf("%s passed: %q", name, got)
		}
	}
}

// TestJudgeSecretsEncrypted: a plain Secret (Kubernetes' "k8s\0" protobuf, masked to "k8s.")
// or no Secret at all fails; sealed ones pass.
func TestJudgeSecretsEncrypted(t *testing.T) {
	sealed := "secret /registry/secrets/kube-system/bootstrap-token-abcdef k8s:enc:secretbox:v1:key1:"
	if got, ok := judgeSecretsEncrypted([]string{sealed, sealed}); !ok || got != "2 Secrets sealed with secretbox" {
		t.Errorf("sealed: %q %v", got, ok)
	}
	plain := "secret /registry/secrets/default/db k8s..Secret.v1"
	if got, ok := judgeSecretsEncrypted([]string{sealed, plain}); ok || !strings.Contains(got, "not sealed: /registry/secrets/default/db") {
		t.Errorf("a plain Secret passed: %q", got)
	}
	if got, ok := judgeSecretsEncrypted(nil); ok {
		t.Errorf("no Secret passed: %q", got)
	}
	aescbc := "secret /registry/secrets/default/x k8s:enc:aescbc:v1:key1:..."
	if _, ok := judgeSecretsEncrypted([]string{aescbc}); ok {
		t.Errorf("a Secret under another provider than the image's passed")
	}
}

// TestJudgeSSHD: passwords, keyboard-interactive or root by password fail the check.
func TestJudgeSSHD(t *testing.T) {
	good := []string{"permitrootlogin without-password", "passwordauthentication no", "kbdinteractiveauthentication no", "permitemptypasswords no"}
	if got, ok := judgeSSHD(good); !ok {
		t.Errorf("keys only: %q", got)
	}
	for i, bad := range []string{"permitrootlogin yes", "passwordauthentication yes", "kbdinteractiveauthentication yes", "permitemptypasswords yes"} {
		lines := append([]string(nil), good...)
		lines[i] = bad
		if got, ok := judgeSSHD(lines); ok {
			t.Errorf("%s passed: %q", bad, got)
		}
	}
	if got, ok := judgeSSHD([]string{"/etc/ssh/sshd_config line 3: Bad configuration option"}); ok {
		t.Errorf("an sshd that cannot read its config passed: %q", got)
	}
}

func TestJudgeSandbox(t *testing.T) {
	want := roles.Sandbox("kube-apiserver.service")
	p := sandboxProbe("kube-apiserver.service", want)
	var full []string
	for _, s := range want {
		full = append(full, s.Key+"="+s.Value)
	}
	if got, pass := p.Eval(Output{Text: strings.Join(full, "\n")}); !pass {
		t.Errorf("the sandbox as written: %s", got)
	}
	// A drop-in that loosens one setting, and a systemd that does not know one.
	loosened := strings.Replace(strings.Join(full, "\n"), "ProtectSystem=strict", "ProtectSystem=no", 1)
	if got, pass := p.Eval(Output{Text: loosened}); pass || !strings.Contains(got, `ProtectSystem=no (want "strict")`) {
		t.Errorf("ProtectSystem=no: %s %v", got, pass)
	}
	if got, pass := p.Eval(Output{Text: strings.Join(full[1:], "\n")}); pass || !strings.Contains(got, want[0].Key+" not reported") {
		t.Errorf("a setting missing: %s %v", got, pass)
	}
	// Every sandboxed unit of the default recipe gets the probe, on every role.
	s := Spec{Role: RoleMinion, Roles: map[string][]string{RoleMaster: {"etcd.service", "kube-apiserver.service"}, RoleMinion: {"kubelet.service"}}}
	ps := Probes(s)
	probeByName(t, ps, "security/sandbox/etcd.service")
	probeByName(t, ps, "security/sandbox/kube-apiserver.service")
	for _, p := range ps {
		if p.Name == "security/etcd-user" {
			t.Error("the etcd user is checked on a minion, which runs no etcd")
		}
	}
	s.Role = RoleMaster
	probeByName(t, Probes(s), "security/etcd-user")
}

func TestJudgeEtcdUser(t *testing.T) {
	for _, c := range []struct {
		kv   map[string]string
		pass bool
	}{
		{map[string]string{"process": "etcd ", "data": "etcd 700"}, true},
		{map[string]string{"process": "root ", "data": "root 700"}, false}, // as before
		{map[string]string{"process": "etcd ", "data": "etcd 755"}, false},
		{map[string]string{"process": "", "data": "etcd 700"}, false}, // not running
	} {
		if got, pass := judgeEtcdUser(c.kv); pass != c.pass {
			t.Errorf("%v: %s %v", c.kv, got, pass)
		}
	}
}

// TestRelaxedDefaultsExpected: an image whose recipe relaxed defaults (security.relax, read
// from its manifest) is checked for the relaxed setting, not the default.
func TestRelaxedDefaultsExpected(t *testing.T) {
	s := Spec{Role: RoleMaster, Roles: map[string][]string{RoleMaster: {"etcd.service", "kube-apiserver.service"}}}
	strict := Probes(s)
	probeByName(t, strict, "security/sandbox/etcd.service")
	probeByName(t, strict, "sysctl/net.ipv4.conf.all.rp_filter")
	access := probeByName(t, strict, "security/apiserver-access")
	kv := "readyz=200\nclusterinfo=200\nversion=401\napi=401\nstrong=accepted\nweak=refused\netcd=refused\nsuperadmin=absent\nkubeletca=set\nkubeletproxy=ok\nkubeletconfig=protectKernelDefaults,seccompDefault\n"
	if _, pass := access.Eval(Output{Text: kv + "podsecurity=admitted"}); pass {
		t.Error("a privileged pod admitted passes on a strict image")
	}

	s.Relaxed = []string{recipes.RelaxSandbox, recipes.RelaxRPFilter, recipes.RelaxPodSecurity}
	relaxed := Probes(s)
	for _, p := range relaxed {
		if strings.HasPrefix(p.Name, "security/sandbox/") || p.Name == "security/etcd-user" || p.Name == "sysctl/net.ipv4.conf.all.rp_filter" {
			t.Errorf("relaxed image still gets %s", p.Name)
		}
	}
	access = probeByName(t, relaxed, "security/apiserver-access")
	if got, pass := access.Eval(Output{Text: kv + "podsecurity=admitted"}); !pass {
		t.Errorf("pod-security-baseline relaxed, privileged pod admitted: %s", got)
	}
	if _, pass := access.Eval(Output{Text: kv + "podsecurity=enforced"}); pass {
		t.Error("pod-security-baseline relaxed, yet the privileged pod refused passes")
	}
	// The manifest carries the recipe's relaxations into the spec.
	m := &Manifest{}
	m.Recipe = &recipes.Recipe{Security: &recipes.Security{Relax: []string{recipes.RelaxRPFilter}}}
	if got := m.Spec(RoleMinion).Relaxed; len(got) != 1 || got[0] != recipes.RelaxRPFilter {
		t.Errorf("Spec.Relaxed = %q", got)
	}
}

func TestJudgeSecretFileModes(t *testing.T) {
	good := []string{"file=600 root /etc/kubernetes/admin.conf", "file=600 root " + roles.KubeletConfigPath, "file=400 root /etc/kubebake/cluster.env"}
	if got, pass := judgeSecretFileModes(good, true); !pass {
		t.Errorf("good modes: %s", got)
	}
	for name, lines := range map[string][]string{
		"kubelet.yaml 0644":       {"file=644 root " + roles.KubeletConfigPath},
		"a key readable by group": {"file=600 root " + roles.KubeletConfigPath, "file=640 root /etc/kubernetes/pki/ca.key"},
		"another owner":           {"file=600 etcd " + roles.KubeletConfigPath},
		"no kubelet config":       {"file=600 root /etc/kubernetes/admin.conf"},
	} {
		if got, pass := judgeSecretFileModes(lines, true); pass {
			t.Errorf("%s passed: %s", name, got)
		}
	}
	if _, pass := judgeSecretFileModes(nil, false); !pass {
		t.Error("a role without kubelet and no credential files failed")
	}
	// The script lists what exists on this machine without failing.
	p := secretFileModesProbe(false)
	if out, err := exec.Command("sh", "-c", p.Script).CombinedOutput(); err != nil {
		t.Errorf("script: %v\n%s", err, out)
	}
}
