package roles

import (
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// TestSandboxAndRelaxations: the default layer gives each control-plane unit its sandbox
// drop-in (etcd its own user, declared for sysusers), enforces baseline Pod Security, turns
// profiling off and sets rp_filter; a recipe that relaxes each gets the other side, and
// nothing else changes.
func TestSandboxAndRelaxations(t *testing.T) {
	r, err := recipes.Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	strict := mustRender(t, r, nil)
	for _, u := range SandboxedUnits() {
		f, ok := strict.File(SandboxDropInPath(u))
		if !ok {
			t.Fatalf("no sandbox drop-in for %s", u)
		}
		for _, s := range Sandbox(u) {
			if !strings.Contains(string(f.Content), "\n"+s.Key+"="+s.Value+"\n") {
				t.Errorf("%s lacks %s=%s", f.Path, s.Key, s.Value)
			}
		}
	}
	if f, _ := strict.File(SandboxDropInPath("etcd.service")); !strings.Contains(string(f.Content), "\nUser=etcd\n") {
		t.Errorf("etcd runs as root:\n%s", f.Content)
	}
	if _, ok := strict.File(EtcdSysusersPath); !ok {
		t.Error("no sysusers.d entry for etcd")
	}
	expect := func(l *Layer, path, want string, has bool) {
		t.Helper()
		f, _ := l.File(path)
		if strings.Contains(string(f.Content), want) != has {
			t.Errorf("%s: contains %q = %v, want %v", path, want, !has, has)
		}
	}
	expect(strict, AdmissionConfigPath, "enforce: baseline", true)
	expect(strict, SysctlPath, "net.ipv4.conf.all.rp_filter = 2\n", true)
	for _, u := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		expect(strict, UnitDir+"/"+u+".service", "--profiling=false", true)
	}

	r.Security = &recipes.Security{Relax: []string{recipes.RelaxPodSecurity, recipes.RelaxSandbox, recipes.RelaxRPFilter, recipes.RelaxProfiling}}
	relaxed := mustRender(t, r, nil)
	for _, u := range SandboxedUnits() {
		if _, ok := relaxed.File(SandboxDropInPath(u)); ok {
			t.Errorf("%s keeps its sandbox", u)
		}
	}
	if _, ok := relaxed.File(EtcdSysusersPath); ok {
		t.Error("the etcd user is declared without the sandbox")
	}
	expect(relaxed, AdmissionConfigPath, "enforce: privileged", true)
	expect(relaxed, SysctlPath, "rp_filter", false)
	for _, u := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		expect(relaxed, UnitDir+"/"+u+".service", "--profiling=true", true)
	}
	// The sandbox drop-ins, the sysusers entry and its folder.
	if d := len(strict.Files) - len(relaxed.Files); d != len(SandboxedUnits())+2 {
		t.Errorf("relaxing removed %d files, want the %d sandbox drop-ins, the sysusers entry and its folder", d, len(SandboxedUnits()))
	}
}
