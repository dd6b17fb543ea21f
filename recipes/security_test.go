package recipes

import (
	"strings"
	"testing"
)

// TestLintSecurityRelax: each relaxation is a warning saying what the image gives up; an
// unknown or repeated name is an error at its position; a node sysctl set otherwise is an
// error that names the relaxation freeing it, and allowed once relaxed.
func TestLintSecurityRelax(t *testing.T) {
	lint := func(src string) []Finding {
		t.Helper()
		r, err := Parse("s.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return Lint(r)
	}
	withSecurity := func(block string, sysctl string) string {
		return mutate(t, e("\nimage:", "\nsecurity:\n"+block+"\nimage:"), e("  net.ipv4.ip_forward: \"1\"\n", "  net.ipv4.ip_forward: \"1\"\n"+sysctl))
	}

	fs := lint(withSecurity("  relax: [pod-security-baseline, reverse-path-filter]", "  net.ipv4.conf.all.rp_filter: \"0\"\n"))
	if err := LintError(fs); err != nil {
		t.Fatalf("relaxed recipe fails lint: %v", err)
	}
	if len(fs) != 2 {
		t.Fatalf("findings %v, want one warning per relaxation", fs)
	}
	for i, name := range []string{RelaxPodSecurity, RelaxRPFilter} {
		if fs[i].Severity != SeverityWarning || !strings.Contains(fs[i].Message, name+" is relaxed") || !strings.Contains(fs[i].Why, Relaxations[name].GivesUp) {
			t.Errorf("finding %d: %v", i, fs[i])
		}
	}

	fs = lint(withSecurity("  relax: [no-such-thing, profiling, profiling]", ""))
	var msgs []string
	for _, f := range fs {
		msgs = append(msgs, f.String())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{`security.relax[0]: unknown relaxation "no-such-thing"; known: control-plane-sandbox, pod-security-baseline, profiling, reverse-path-filter`, `security.relax[2]: "profiling" is listed twice`} {
		if !strings.Contains(all, want) {
			t.Errorf("lint lacks %q:\n%s", want, all)
		}
	}

	// Not relaxed: the node's value stands, and lint says how to relax it.
	fs = lint(mutate(t, e("  net.ipv4.ip_forward: \"1\"\n", "  net.ipv4.ip_forward: \"1\"\n  net.ipv4.conf.all.rp_filter: \"0\"\n")))
	if err := LintError(fs); err == nil || !strings.Contains(err.Error(), "security.relax: [reverse-path-filter]") {
		t.Errorf("rp_filter 0 without relaxing: %v", err)
	}
}

func TestNodeSysctlRules(t *testing.T) {
	var r *Recipe
	if len(r.NodeSysctlRules()) != len(NodeKernelSysctls) || r.Relaxed(RelaxRPFilter) {
		t.Error("a recipe without security relaxes something")
	}
	r = &Recipe{Security: &Security{Relax: []string{RelaxRPFilter}}}
	if _, ok := r.NodeSysctlRules()["net.ipv4.conf.all.rp_filter"]; ok || !r.Relaxed(RelaxRPFilter) {
		t.Error("relaxing reverse-path-filter keeps rp_filter")
	}
	if _, ok := NodeKernelSysctls["net.ipv4.conf.all.rp_filter"]; !ok {
		t.Error("NodeSysctlRules changed the catalog")
	}
}
