package cloudinit

import (
	"strings"
	"testing"
	"time"
)

// TestNodeTokens: each named node joins with its own token, derived from the bundle (so the
// master's and the minion's user-data agree), distinct per name and per bundle; the master
// lists the tokens of its --join nodes; an unnamed minion gets the shared token.
func TestNodeTokens(t *testing.T) {
	b := testBundle(t)
	other, err := NewBundle("demo", BundleOptions{KeyType: KeyECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := b.NodeToken("demo-minion-1"), b.NodeToken("demo-minion-2")
	for _, tok := range []string{t1, t2} {
		if err := ValidateToken(tok); err != nil {
			t.Errorf("node token %q: %v", tok, err)
		}
	}
	if t1 == t2 || t1 == b.BootstrapToken || t1 != b.NodeToken("demo-minion-1") || t1 == other.NodeToken("demo-minion-1") {
		t.Errorf("node tokens not distinct and stable: %s %s shared %s other bundle %s", t1, t2, b.BootstrapToken, other.NodeToken("demo-minion-1"))
	}
	master := string(ClusterEnv(b, RoleMaster, Options{JoinNodes: []string{"demo-minion-1", "demo-minion-2"}}))
	for _, want := range []string{EnvJoinTokens + "=demo-minion-1=" + t1 + ",demo-minion-2=" + t2 + "\n", EnvJoinTokenTTL + "=86400\n", EnvBootstrapToken + "=" + b.BootstrapToken + "\n"} {
		if !strings.Contains(master, want) {
			t.Errorf("master cluster.env lacks %q:\n%s", want, master)
		}
	}
	named := string(ClusterEnv(b, RoleMinion, Options{Hostname: "demo-minion-1"}))
	if !strings.Contains(named, EnvBootstrapToken+"="+t1+"\n") || strings.Contains(named, b.BootstrapToken) || strings.Contains(named, EnvJoinTokens) {
		t.Errorf("named minion's cluster.env:\n%s", named)
	}
	if unnamed := string(ClusterEnv(b, RoleMinion, Options{})); !strings.Contains(unnamed, EnvBootstrapToken+"="+b.BootstrapToken+"\n") {
		t.Errorf("unnamed minion's cluster.env:\n%s", unnamed)
	}
	minted := "abcdef.0123456789abcdef"
	if env := string(ClusterEnv(b, RoleMinion, Options{Hostname: "late", JoinToken: minted})); !strings.Contains(env, EnvBootstrapToken+"="+minted+"\n") {
		t.Errorf("minted token not used:\n%s", env)
	}
	for _, tc := range []struct {
		role string
		opts Options
		want string
	}{
		{RoleMinion, Options{JoinNodes: []string{"x"}}, "join nodes are for the master"},
		{RoleMaster, Options{JoinNodes: []string{"Bad_Name"}}, `join node "Bad_Name" is not a valid Kubernetes node name`},
		{RoleMaster, Options{JoinToken: minted}, "a join token is for a joining node"},
		{RoleMinion, Options{JoinToken: "nope"}, "join token: bootstrapToken is not a kubeadm token"},
	} {
		if _, err := NodeFiles(b, tc.role, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: %v, want %q", tc.role, tc.opts, err, tc.want)
		}
	}
	// The redactor knows the node tokens it is told of.
	if r := b.Redactor("demo-minion-1"); r.String("t="+t1) == "t="+t1 || strings.Contains(r.String(strings.SplitN(t1, ".", 2)[1]), strings.SplitN(t1, ".", 2)[1]) {
		t.Errorf("node token not redacted")
	}
}

func TestJoinTokenTTL(t *testing.T) {
	copied := *testBundle(t)
	b := &copied
	if d, err := b.TokenTTL(); err != nil || d != DefaultJoinTokenTTL {
		t.Errorf("default TTL %v %v", d, err)
	}
	for _, bad := range []string{"0s", "30s", "forever", "-1h"} {
		b.JoinTokenTTL = bad
		if err := b.Validate(); err == nil || !strings.Contains(err.Error(), "joinTokenTTL") {
			t.Errorf("joinTokenTTL %q: %v", bad, err)
		}
	}
	if _, err := NewBundle("x", BundleOptions{KeyType: KeyECDSAP256, JoinTokenTTL: time.Second}); err == nil {
		t.Errorf("a one-second TTL was taken")
	}
	nb, err := NewBundle("x", BundleOptions{KeyType: KeyECDSAP256, JoinTokenTTL: 2 * time.Hour})
	if err != nil || nb.JoinTokenTTL != "2h0m0s" {
		t.Fatalf("%v %+v", err, nb)
	}
	if env := string(ClusterEnv(nb, RoleMaster, Options{})); !strings.Contains(env, EnvJoinTokenTTL+"=7200\n") {
		t.Errorf("master cluster.env:\n%s", env)
	}
	s, err := JoinTokenSecret("abcdef.0123456789abcdef", "n1", time.Hour, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil || !strings.Contains(string(s), `expiration: "2026-01-01T01:00:00Z"`) || !strings.Contains(string(s), `kubebake.dev/node-name: "n1"`) {
		t.Errorf("%v\n%s", err, s)
	}
	shared, err := JoinTokenSecret("abcdef.0123456789abcdef", "", time.Hour, time.Now())
	if err != nil || strings.Contains(string(shared), "labels") || !strings.Contains(string(shared), "shared join token") {
		t.Errorf("shared token secret: %v\n%s", err, shared)
	}
	for _, bad := range [][2]string{{"nope", "n1"}, {"abcdef.0123456789abcdef", "Bad Name"}} {
		if _, err := JoinTokenSecret(bad[0], bad[1], time.Hour, time.Now()); err == nil {
			t.Errorf("JoinTokenSecret(%q, %q) was taken", bad[0], bad[1])
		}
	}
}
