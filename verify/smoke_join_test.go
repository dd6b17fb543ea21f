package verify

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func tokenSecret(id, node, expiration string) k8sSecret {
	var s k8sSecret
	s.Metadata.Name = "bootstrap-token-" + id
	if node != "" {
		s.Metadata.Labels = map[string]string{"kubebake.dev/node-name": node}
	}
	s.Type = "bootstrap.kubernetes.io/token"
	s.Data = map[string]string{"token-id": base64.StdEncoding.EncodeToString([]byte(id))}
	if expiration != "" {
		s.Data["expiration"] = base64.StdEncoding.EncodeToString([]byte(expiration))
	}
	return s
}

// TestJudgeJoinTokens: each defect of the join tokens on the master fails the join step.
func TestJudgeJoinTokens(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ttl := 24 * time.Hour
	in23h := now.Add(23 * time.Hour).Format(time.RFC3339)
	registered := []string{"kb-master", "kb-minion-1", "kb-minion-2"}
	good := []k8sSecret{tokenSecret("shared", "", in23h), tokenSecret("later1", "kb-minion-3", in23h)}
	if got, ok := judgeJoinTokens(good, registered, ttl, now); !ok || got != "shared (shared) expires 2026-12-01T11:00:00Z, later1 (node kb-minion-3) expires 2026-12-01T11:00:00Z" {
		t.Errorf("good tokens: %q %v", got, ok)
	}
	if got, ok := judgeJoinTokens(nil, registered, ttl, now); !ok || got != "no join token left" {
		t.Errorf("no tokens: %q %v", got, ok)
	}
	for _, tc := range []struct {
		name   string
		secret k8sSecret
		want   string
	}{
		{"a token that never expires (ttl: 0s)", tokenSecret("forevr", "", ""), "token forevr (shared) never expires"},
		{"a token past the TTL", tokenSecret("longer", "", now.Add(30*24*time.Hour).Format(time.RFC3339)), "token longer (shared) lives 720h0m0s more, past the TTL 24h0m0s"},
		{"a used token left behind", tokenSecret("usedup", "kb-minion-1", in23h), "token usedup is still there after kb-minion-1 registered"},
		{"an unreadable expiration", tokenSecret("badexp", "", "tomorrow"), `token badexp (shared) expiration "tomorrow" is not RFC 3339`},
	} {
		got, ok := judgeJoinTokens(append(good[:1:1], tc.secret), registered, ttl, now)
		if ok || got != tc.want {
			t.Errorf("%s: %q %v, want a failure %q", tc.name, got, ok, tc.want)
		}
	}
	// Other Secrets are not tokens.
	other := tokenSecret("x", "", "")
	other.Type = "Opaque"
	if _, ok := judgeJoinTokens([]k8sSecret{other}, registered, ttl, now); !ok {
		t.Errorf("an Opaque Secret failed the token check")
	}
}

// TestJudgeJoinLeftovers: a joined minion keeps neither its token nor the bootstrap kubeconfig.
func TestJudgeJoinLeftovers(t *testing.T) {
	if got, ok := judgeJoinLeftovers("file=/etc/kubernetes/kubelet.conf\ntoken-lines=0\n"); !ok {
		t.Errorf("clean node: %q", got)
	}
	for out, want := range map[string]string{
		"file=/etc/kubernetes/bootstrap-kubelet.conf\nfile=/etc/kubernetes/kubelet.conf\ntoken-lines=0\n": "bootstrap-kubelet.conf still there",
		"file=/etc/kubernetes/kubelet.conf\ntoken-lines=1\n":                                              "cluster.env holds the join token",
		"file=/etc/kubernetes/kubelet.conf\n":                                                             "cluster.env unreadable",
		"file=/etc/kubernetes/bootstrap-kubelet.conf\ntoken-lines=1\n":                                    "no kubelet.conf: not joined; bootstrap-kubelet.conf still there; cluster.env holds the join token",
	} {
		if got, ok := judgeJoinLeftovers(out); ok || got != want {
			t.Errorf("%q: %q %v, want a failure %q", out, got, ok, want)
		}
	}
}

// TestJudgeStolenCSR: only a denial passes; approval or a certificate is the defect.
func TestJudgeStolenCSR(t *testing.T) {
	csr := func(cert string, conds ...string) k8sCSR {
		var c k8sCSR
		c.Status.Certificate = cert
		for _, typ := range conds {
			c.Status.Conditions = append(c.Status.Conditions, k8sCondition{Type: typ, Status: "True"})
		}
		return c
	}
	for _, tc := range []struct {
		name     string
		csr      k8sCSR
		done, ok bool
	}{
		{"denied", csr("", "Denied"), true, true},
		{"pending", csr(""), false, false},
		{"approved", csr("", "Approved"), true, false},
		{"signed", csr("LS0t", "Approved"), true, false},
	} {
		got, done, ok := judgeStolenCSR(tc.csr)
		if done != tc.done || ok != tc.ok {
			t.Errorf("%s: %q done=%v ok=%v", tc.name, got, done, ok)
		}
	}
}

func TestKubeconfigWithToken(t *testing.T) {
	admin := []byte(`apiVersion: v1
clusters:
- cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: Q0E=}
  name: kb
users:
- name: admin
  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}
contexts:
- context: {cluster: kb, user: admin}
  name: admin@kb
current-context: admin@kb
`)
	out, err := kubeconfigWithToken(admin, "abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	var kc struct {
		Users []struct {
			User map[string]string
		}
	}
	if err := yaml.Unmarshal(out, &kc); err != nil || len(kc.Users) != 1 || len(kc.Users[0].User) != 1 || kc.Users[0].User["token"] != "abcdef.0123456789abcdef" {
		t.Errorf("token kubeconfig: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "S0VZ") {
		t.Errorf("the admin key stayed in the token kubeconfig:\n%s", out)
	}
	if _, err := kubeconfigWithToken([]byte("clusters: []\n"), "abcdef.0123456789abcdef"); err == nil {
		t.Errorf("a kubeconfig with no user was taken")
	}
}
