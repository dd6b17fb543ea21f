package roles

import (
	"slices"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// TestLintAndRenderAgree: one rulebook. Each edit of an embedded recipe is refused by lint
// (recipes.Lint) and by the layer (Render) alike, and the edge cases they accept, both accept:
// a recipe lint passes never fails to render for a name or value lint could have checked.
func TestLintAndRenderAgree(t *testing.T) {
	long := func(n int) string { return strings.Repeat("r", n) }
	cases := []struct {
		name   string
		change func(r *recipes.Recipe)
		ok     bool   // both accept
		field  string // the field both name when they refuse
	}{
		{"sysctl value with a newline", func(r *recipes.Recipe) {
			r.Sysctls["vm.max_map_count"] = "262144\nkernel.core_pattern = |/tmp/x"
		}, false, `sysctls["vm.max_map_count"]`},
		{"sysctl value with a carriage return", func(r *recipes.Recipe) { r.Sysctls["vm.max_map_count"] = "262144\r" }, false, `sysctls["vm.max_map_count"]`},
		{"empty sysctl value", func(r *recipes.Recipe) { r.Sysctls["vm.swappiness"] = " " }, false, `sysctls["vm.swappiness"]`},
		{"sysctl glob", func(r *recipes.Recipe) { r.Sysctls["net.ipv4.conf.*.rp_filter"] = "1" }, false, `sysctls["net.ipv4.conf.*.rp_filter"]`},
		{"sysctl with one component", func(r *recipes.Recipe) { r.Sysctls["swappiness"] = "1" }, false, `sysctls["swappiness"]`},
		{"ordinary sysctl", func(r *recipes.Recipe) { r.Sysctls["vm.max_map_count"] = "262144" }, true, ""},
		{"slash sysctl", func(r *recipes.Recipe) { r.Sysctls["net/ipv4/conf/eth0.100/rp_filter"] = "2" }, true, ""},
		{"kernel.panic the kubelet refuses", func(r *recipes.Recipe) { r.Sysctls["kernel.panic"] = "0" }, false, `sysctls["kernel.panic"]`},
		{"kernel.panic as every node has it", func(r *recipes.Recipe) { r.Sysctls["kernel.panic"] = "10" }, true, ""},
		{"module with a space", func(r *recipes.Recipe) { r.Modules = append(r.Modules, "nf conntrack") }, false, "modules[2]"},
		{"module with a newline", func(r *recipes.Recipe) { r.Modules = append(r.Modules, "nf_conntrack\nevil") }, false, "modules[2]"},
		{"ordinary module", func(r *recipes.Recipe) { r.Modules = append(r.Modules, "nf_conntrack") }, true, ""},
		{"role name of 33", func(r *recipes.Recipe) { r.Roles[1].Name = long(recipes.MaxRoleNameLen + 1) }, false, "roles[1].name"},
		{"role name of 63", func(r *recipes.Recipe) { r.Roles[1].Name = long(63) }, false, "roles[1].name"},
		{"role name of 32", func(r *recipes.Recipe) { r.Roles[1].Name = long(recipes.MaxRoleNameLen) }, true, ""},
		{"role name with upper case", func(r *recipes.Recipe) { r.Roles[1].Name = "Minion" }, false, "roles[1].name"},
		{"unit name with a newline", func(r *recipes.Recipe) { r.Roles[1].Units[0] = "kubelet.service\nx" }, false, "roles[1].units[0]"},
		{"flanneld without a podNetwork", func(r *recipes.Recipe) { r.PodNetwork = nil }, false, "roles[0].units[8]"},
		{"control plane without kubeadm", func(r *recipes.Recipe) {
			r.Kubernetes.Components = dropComponent(r.Kubernetes.Components, "kubeadm")
			r.Roles[0].Units = dropString(r.Roles[0].Units, "kubebake-master-bootstrap.service")
		}, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := recipes.Load("debian-12")
			if err != nil {
				t.Fatal(err)
			}
			c.change(r)
			lintErr := recipes.LintError(recipes.Lint(r))
			_, renderErr := Render(r, fakeLock(r))
			switch {
			case c.ok && (lintErr != nil || renderErr != nil):
				t.Fatalf("want both to accept: lint: %v; render: %v", lintErr, renderErr)
			case !c.ok && (lintErr == nil || renderErr == nil):
				t.Fatalf("want both to refuse: lint: %v; render: %v", lintErr, renderErr)
			}
			if c.field != "" {
				if !strings.Contains(lintErr.Error(), c.field+": ") || !strings.Contains(renderErr.Error(), c.field+": ") {
					t.Errorf("want both to name %s:\nlint:   %v\nrender: %v", c.field, lintErr, renderErr)
				}
			}
		})
	}
}

func dropComponent(cs []recipes.Component, name string) []recipes.Component {
	var out []recipes.Component
	for _, c := range cs {
		if c.Name != name {
			out = append(out, c)
		}
	}
	return out
}

func dropString(ss []string, s string) []string {
	var out []string
	for _, x := range ss {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// TestRequiredCNIPluginsFromRecipes: the layer refuses a recipe without any of
// recipes.RequiredCNIPlugins (the one list lint and verify use too).
func TestRequiredCNIPluginsFromRecipes(t *testing.T) {
	for _, p := range recipes.RequiredCNIPlugins {
		r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
		r.CNI.Plugins = dropString(r.CNI.Plugins, p)
		if _, err := Render(r, fakeLock(r)); err == nil || !strings.Contains(err.Error(), "cni.plugins: lacks "+p) {
			t.Errorf("without %s: %v", p, err)
		}
	}
}

// TestRequiredCNIPluginsIsTheOneList: the layer reads recipes.RequiredCNIPlugins itself (no
// copy of its own): a plugin added there is required here at once.
func TestRequiredCNIPluginsIsTheOneList(t *testing.T) {
	saved := recipes.RequiredCNIPlugins
	t.Cleanup(func() { recipes.RequiredCNIPlugins = saved })
	recipes.RequiredCNIPlugins = append(slices.Clone(saved), "tuning")
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	if _, err := Render(r, fakeLock(r)); err == nil || !strings.Contains(err.Error(), "cni.plugins: lacks tuning") {
		t.Errorf("tuning required by recipes.RequiredCNIPlugins, render: %v", err)
	}
}

// TestUnitsFromRecipesCatalog: the layer's units are the catalog's (recipes.Units): every
// unit a layer holds is in it, with the catalog's Foreign flag.
func TestUnitsFromRecipesCatalog(t *testing.T) {
	for _, rt := range recipes.Setups {
		r := goRecipe("go-"+rt, "bookworm", rt)
		units, err := Units(r)
		if err != nil {
			t.Fatal(err)
		}
		defs := map[string]recipes.UnitDef{}
		for _, d := range recipes.Units(rt, r.PodNetwork != nil) {
			defs[d.Name] = d
		}
		for _, u := range units {
			d, ok := defs[u.Name]
			if !ok {
				t.Errorf("%s: unit %s is not in recipes.Units", rt, u.Name)
			}
			if d.Foreign != u.Foreign {
				t.Errorf("%s: %s foreign %v, the catalog says %v", rt, u.Name, u.Foreign, d.Foreign)
			}
		}
	}
}
