package recipes

import (
	"strings"
	"testing"
)

// TestGrammar: one grammar per kind of name, the one lint, roles and cloudinit call.
func TestGrammar(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		kind  string
		check func(string) error
		ok    []string
		bad   []string
	}{
		{"role", CheckRoleName,
			[]string{"master", "minion", "gpu-1", "a", "0", long(MaxRoleNameLen)},
			[]string{"", "Master", "gpu_1", "-gpu", "gpu-", "gpu.1", "a b", "gpu\n", "../x", long(MaxRoleNameLen + 1), long(63)}},
		{"module", CheckModuleName,
			[]string{"overlay", "br_netfilter", "nf_conntrack", "ip6-tables", long(MaxModuleNameLen)},
			[]string{"", "br netfilter", "overlay\nbr_netfilter", "a/b", "a.ko", long(MaxModuleNameLen + 1)}},
		{"sysctl key", CheckSysctlKey,
			[]string{"net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net/ipv4/conf/eth0.100/rp_filter", "vm.max_map_count", "net.ipv6.conf.all.forwarding"},
			[]string{"", "ip_forward", "net.ipv4.*.rp_filter", "-net.ipv4.ip_forward", "Net.ipv4.ip_forward", "net.ipv4.ip_forward ", "net.ipv4.ip_forward=1", "net..x", "net.ipv4.ip_forward\nkernel.x", "net." + long(MaxSysctlKeyLen)}},
		{"sysctl value", CheckSysctlValue,
			[]string{"1", "0", "262144", "4096 87380 6291456", "1\t2", "|/usr/lib/systemd/systemd-coredump %P"},
			[]string{"", " ", "262144\nkernel.core_pattern = |/tmp/x", "1\r", "1\n", "1\x00", "a\x1b[0m", long(MaxSysctlValueLen + 1)}},
		{"unit", CheckUnitName,
			[]string{"kubelet.service", "kubebake-roles.target", "getty@tty1.service", "systemd-networkd.socket", "a:b.mount"},
			[]string{"", "kubelet", "kubelet.serviec", "kube let.service", "kubelet.service\n", "../x.service", long(MaxUnitNameLen)}},
	}
	for _, c := range cases {
		for _, s := range c.ok {
			if err := c.check(s); err != nil {
				t.Errorf("%s %q refused: %v", c.kind, s, err)
			}
		}
		for _, s := range c.bad {
			err := c.check(s)
			if err == nil {
				t.Errorf("%s %q accepted", c.kind, s)
				continue
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("%s %q: the message is not one line: %q", c.kind, s, err)
			}
		}
	}
}

// The built-in roles' units are listable units of the catalog, and every Need of the catalog
// names a unit of the same catalog.
func TestUnitCatalog(t *testing.T) {
	for _, rt := range []string{RuntimeContainerd, RuntimeDocker} {
		for _, pn := range []bool{false, true} {
			defs := map[string]UnitDef{}
			for _, d := range Units(rt, pn) {
				if err := CheckUnitName(d.Name); err != nil {
					t.Errorf("catalog: %v", err)
				}
				if _, dup := defs[d.Name]; dup {
					t.Errorf("%s twice in the catalog", d.Name)
				}
				defs[d.Name] = d
			}
			for _, d := range defs {
				for _, n := range d.Needs {
					if _, ok := defs[n]; !ok {
						t.Errorf("%s/%v: %s needs %s, which is not in the catalog", rt, pn, d.Name, n)
					}
				}
			}
			for _, role := range BuiltinRoles(rt, pn) {
				if err := CheckRoleName(role.Name); err != nil {
					t.Error(err)
				}
				for _, u := range role.Units {
					if !defs[u].Listable {
						t.Errorf("%s/%v: built-in role %s lists %s, which is not a listable unit", rt, pn, role.Name, u)
					}
				}
			}
		}
	}
	if got := UnitNeedsClosure(Units(RuntimeContainerd, false), "kube-proxy.service"); !strings.Contains(strings.Join(got, " "), "kubelet.service kubebake-minion-join.service") {
		t.Errorf("kube-proxy.service needs %v", got)
	}
}
