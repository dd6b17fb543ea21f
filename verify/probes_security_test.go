package verify

import (
	"strings"
	"testing"
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
