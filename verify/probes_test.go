package verify

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
)

func testSpec() Spec {
	return Spec{
		Role:     RoleMaster,
		UserData: UserDataCloudInit,
		Roles: map[string][]string{
			RoleMaster: {"kubebake-master.service", "kubelet.service", "containerd.service"},
			RoleMinion: {"kubebake-join.service", "kubelet.service", "containerd.service"},
		},
		Binaries: []Binary{{Name: "kubelet", Path: "/usr/bin/kubelet", SHA256: "aa11", Version: "v1.35.4", VersionArgs: "--version"}},
		Sysctls:  map[string]string{"net.ipv4.ip_forward": "1"},
		Modules:  []string{"br_netfilter"},
		Runtime:  "containerd",
		Secrets:  []string{"abcdef.0123456789abcdef"},
	}
}

func probeByName(t *testing.T, ps []Probe, name string) Probe {
	t.Helper()
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	t.Fatalf("no probe %q in %v", name, names)
	return Probe{}
}

// TestProbeEvaluation feeds canned guest outputs to each check and asserts the verdict.
func TestProbeEvaluation(t *testing.T) {
	ps := Probes(testSpec())
	cases := []struct {
		probe string
		out   Output
		pass  bool
		got   string // substring of Got
	}{
		{"role/marker", Output{Text: "master=present\nminion=absent"}, true, "kubernetes-master"},
		{"role/marker", Output{Text: "master=present\nminion=present"}, false, "kubernetes-minion"},
		{"role/marker", Output{Text: "master=absent\nminion=absent"}, false, "no role marker"},
		{"userdata/cloud-init", Output{Text: `{"v1": {"datasource": "DataSourceNoCloud [seed=/dev/vdb]", "errors": []}}`}, true, "DataSourceNoCloud"},
		{"userdata/cloud-init", Output{Text: `{"v1": {"datasource": "DataSourceNoCloud", "errors": ["('locale', ProcessExecutionError('update-locale'))"]}}`}, false, "locale"},
		{"userdata/cloud-init", Output{Text: `{"missing": true}`}, false, "not finished"},
		{"binary/kubelet/sha256", Output{Text: "aa11  /usr/bin/kubelet"}, true, "aa11"},
		{"binary/kubelet/sha256", Output{Text: "bb22  /usr/bin/kubelet"}, false, "bb22"},
		{"binary/kubelet/sha256", Output{Text: "sha256sum: /usr/bin/kubelet: No such file or directory", Exit: 1}, false, "missing"},
		{"binary/kubelet/version", Output{Text: "Kubernetes v1.35.4"}, true, "v1.35.4"},
		{"binary/kubelet/version", Output{Text: "Kubernetes v1.35.40"}, false, "v1.35.40"},
		{"binary/kubelet/version", Output{Text: "Kubernetes v0.0.0-master+$Format:%H$"}, false, "v0.0.0"},
		{"sysctl/net.ipv4.ip_forward", Output{Text: "runtime=1\ndef=/usr/lib/sysctl.d/90-kubebake.conf:net.ipv4.ip_forward = 1"}, true, "90-kubebake.conf"},
		{"sysctl/net.ipv4.ip_forward", Output{Text: "runtime=1\n"}, false, "not set to 1 in /usr/lib/sysctl.d"},
		{"sysctl/net.ipv4.ip_forward", Output{Text: "runtime=0\ndef=/usr/lib/sysctl.d/90-kubebake.conf:net.ipv4.ip_forward=1"}, false, "0 (from"},
		{"sysctl/net.ipv4.ip_forward", Output{Text: "runtime=1\ndef=/etc/sysctl.d/99.conf:net.ipv4.ip_forward=1"}, false, "not set"},
		{"module/br_netfilter/loaded", Output{Text: "loaded=yes\nconf=/usr/lib/modules-load.d/kubebake.conf"}, true, "listed"},
		{"module/br_netfilter/loaded", Output{Text: "loaded=yes\nconf=/etc/modules-load.d/k8s.conf"}, false, "not in /usr/lib"},
		{"module/br_netfilter/loaded", Output{Text: "loaded=no"}, false, "not loaded"},
		{"module/br_netfilter/before-sysctl", Output{Text: "modload=2100000\nmodresult=success\nsysctl=2200000\njournal=Inserted module 'br_netfilter'"}, true, "2.100s"},
		{"module/br_netfilter/before-sysctl", Output{Text: "modload=2300000\nmodresult=success\nsysctl=2200000\njournal=Inserted module 'br_netfilter'"}, false, "2.300s"},
		{"module/br_netfilter/before-sysctl", Output{Text: "modload=2100000\nmodresult=success\nsysctl=2200000"}, false, "no journal entry"},
		{"module/br_netfilter/before-sysctl", Output{Text: "modload=0\nsysctl=1\nbuiltin=yes"}, true, "built into"},
		{"runtime/storage", Output{Text: "plugin_overlayfs=ok\nplugin_native=ok\ncfg_snapshotter=overlayfs"}, true, "overlayfs"},
		{"runtime/storage", Output{Text: "plugin_overlayfs=ok\ncfg_snapshotter=devmapper"}, false, "devmapper"},
		{"runtime/storage", Output{Text: "plugin_overlayfs=skip\ncfg_snapshotter=overlayfs"}, false, "skip"},
		{"cni/bridge", Output{Text: "present"}, true, "present"},
		{"cni/portmap", Output{Text: "missing"}, false, "missing"},
		{"tool/conntrack", Output{Text: "/usr/sbin/conntrack"}, true, "/usr/sbin/conntrack"},
		{"tool/socat", Output{Exit: 1}, false, "missing"},
		{"unit/kubebake-master.service/active", Output{Text: "LoadState=loaded\nActiveState=active\nSubState=exited\nResult=success\nType=oneshot\nConditionResult=yes"}, true, "active/exited"},
		{"unit/kubebake-master.service/active", Output{Text: "LoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\nType=oneshot\nConditionResult=yes\nExecMainStatus=0\nExecMainExitTimestampMonotonic=123"}, true, "inactive/dead"},
		{"unit/kubebake-master.service/active", Output{Text: "LoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\nType=oneshot\nConditionResult=no\nExecMainExitTimestampMonotonic=0"}, false, "condition failed"},
		{"unit/kubebake-master.service/active", Output{Text: "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nType=oneshot\nConditionResult=yes"}, false, "failed/failed"},
		{"unit/kubebake-master.service/active", Output{Text: "LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nResult=exit-code\nConditionResult=yes"}, false, "still starting"},
		{"unit/kubebake-master.service/active", Output{Text: "LoadState=not-found\nActiveState=inactive"}, false, "not-found"},
		{"unit/kubebake-join.service/skipped", Output{Text: "LoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\nConditionResult=no"}, true, "condition=no"},
		{"unit/kubebake-join.service/skipped", Output{Text: "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nConditionResult=yes"}, false, "failed"},
		{"unit/kubebake-join.service/skipped", Output{Text: "LoadState=loaded\nActiveState=active\nSubState=running\nResult=success\nConditionResult=yes"}, false, "active/running"},
		{"systemd/failed-units", Output{}, true, "none"},
		{"systemd/failed-units", Output{Text: "containerd.service\nkubelet.service"}, false, "containerd.service kubelet.service"},
		{"master/apiserver-readyz", Output{Text: "ok"}, true, "ok"},
		{"master/apiserver-readyz", Output{Text: "The connection to the server 10.0.2.15:6443 was refused", Exit: 1}, false, "refused"},
		{"hygiene/machine-id", Output{Text: "id=0123456789abcdef0123456789abcdef\nfirstboot=yes"}, true, "first boot"},
		{"hygiene/machine-id", Output{Text: "id=0123456789abcdef0123456789abcdef\nfirstboot=no"}, false, "baked"},
		{"hygiene/machine-id", Output{Text: "id=\nfirstboot=yes"}, false, "(none)"},
		{"hygiene/ssh-host-keys", Output{Text: "btime=1700000000\nkey=1700000030 /etc/ssh/ssh_host_ed25519_key"}, true, "1 keys"},
		{"hygiene/ssh-host-keys", Output{Text: "btime=1700000000\nkey=1600000000 /etc/ssh/ssh_host_rsa_key\nkey=1700000030 /etc/ssh/ssh_host_ed25519_key"}, false, "ssh_host_rsa_key"},
		{"hygiene/ssh-host-keys", Output{Text: "btime=1700000000"}, false, "no host keys"},
		{"hygiene/no-secrets", Output{Text: "btime=1700000000\nfile=1700000100 key\t/etc/ssh/ssh_host_ed25519_key\nfile=1700000100 secret0\t/etc/kubebake/cluster.env\nfile=1700000100 key\t/etc/kubernetes/pki/ca.key\njournal=0"}, false, "cluster.env"},
		{"hygiene/no-secrets", Output{Text: "btime=1700000000\nfile=1700000100 key\t/etc/ssh/ssh_host_ed25519_key\nfile=1700000100 key\t/etc/kubernetes/pki/apiserver.key\njournal=0"}, true, "none found"},
		{"hygiene/no-secrets", Output{Text: "btime=1700000000\nfile=1600000000 key\t/etc/ssl/private/ssl-cert-snakeoil.key\njournal=0"}, false, "baked into the image: /etc/ssl/private/ssl-cert-snakeoil.key"},
		{"hygiene/no-secrets", Output{Text: "btime=1700000000\nfile=1700000100 secret0\t/var/log/cloud-init.log\njournal=2"}, false, "2 journal lines"},
		{"info/first-boot-time", Output{Text: "Startup finished in 3.1s (kernel) + 40s (userspace) = 43.1s"}, true, "43.1s"},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%02d-%s", i, c.probe), func(t *testing.T) {
			p := probeByName(t, ps, c.probe)
			got, pass := p.Eval(c.out)
			if pass != c.pass || !strings.Contains(got, c.got) {
				t.Errorf("Eval(%q) = %q, %v; want pass=%v and got containing %q", c.out.Text, got, pass, c.pass, c.got)
			}
		})
	}
}

// TestSecretsAllowsUserDataPaths: the user-data's own files may carry its secrets.
func TestSecretsAllowsUserDataPaths(t *testing.T) {
	s := testSpec()
	s.UserDataPaths = []string{"/etc/kubebake/cluster.env"}
	p := secretsProbe(s)
	got, pass := p.Eval(Output{Text: "btime=1700000000\nfile=1700000100 secret0\t/etc/kubebake/cluster.env\njournal=0"})
	if !pass {
		t.Errorf("got %q, want pass", got)
	}
}

// TestLoneMinionMayWait: a minion with no master may keep retrying its join, never fail it.
func TestLoneMinionMayWait(t *testing.T) {
	s := testSpec()
	s.Role, s.LoneMinion = RoleMinion, true
	p := probeByName(t, Probes(s), "unit/kubebake-join.service/active")
	if _, pass := p.Eval(Output{Text: "LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nResult=exit-code\nConditionResult=yes\nNRestarts=3"}); !pass {
		t.Error("auto-restart on a lone minion should pass")
	}
	kubelet := probeByName(t, Probes(s), "unit/kubelet.service/active")
	if got, pass := kubelet.Eval(Output{Text: "LoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\nConditionResult=no\nJob=start/waiting"}); !pass || !strings.Contains(got, "job=start/waiting") {
		t.Errorf("kubelet waiting for the join: %q %v", got, pass)
	}
	if _, pass := p.Eval(Output{Text: "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=start-limit-hit\nConditionResult=yes"}); pass {
		t.Error("a failed join unit must fail")
	}
	// The master's units are skipped on the minion; kubelet is shared and checked active only.
	ps := Probes(s)
	probeByName(t, ps, "unit/kubebake-master.service/skipped")
	for _, p := range ps {
		if p.Name == "unit/kubelet.service/skipped" || p.Name == "master/apiserver-readyz" {
			t.Errorf("unexpected probe %s on a minion", p.Name)
		}
	}
}

// TestScriptRoundTrip runs the generated script with a real shell and parses it back: every
// probe's output and exit status arrive under its own name.
func TestScriptRoundTrip(t *testing.T) {
	ps := []Probe{
		{Name: "a", Script: "echo one; echo two; cat \"$KB/shared\"", Prelude: "echo fact > \"$KB/shared\""},
		{Name: "b", Script: "printf 'no newline'; exit 3"},
		{Name: "c", Script: "echo to-stderr >&2"},
		{Name: "d", Script: "true"},
	}
	out, err := exec.Command("sh", "-c", BuildScript(ps)).CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	got := ParseScriptOutput(ps, string(out))
	want := map[string]Output{
		"a": {Text: "one\ntwo\nfact", Exit: 0},
		"b": {Text: "no newline", Exit: 3},
		"c": {Text: "to-stderr", Exit: 0},
		"d": {Text: "", Exit: 0},
	}
	for k, w := range want {
		g := got[k]
		g.Millis = 0
		if g != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}
	// A probe the script never reached fails as such.
	checks := Evaluate([]Probe{{Name: "z", Eval: func(Output) (string, bool) { return "", true }}}, got)
	if checks[0].Pass || !strings.Contains(checks[0].Got, "not run") {
		t.Errorf("missing output: %+v", checks[0])
	}
}

// TestUnitScriptPicksItsBlock runs a unit probe's script against saved `systemctl show` and
// `systemctl list-jobs` output: each probe must read its own unit's block and job.
func TestUnitScriptPicksItsBlock(t *testing.T) {
	kb := t.TempDir()
	units := "Id=a.service\nActiveState=active\nConditionResult=yes\n\nId=b.service\nActiveState=inactive\nConditionResult=no\n\nId=c.service\nActiveState=activating\n"
	jobs := "12 c.service start running\n13 d.service start waiting\n"
	os.WriteFile(filepath.Join(kb, "units"), []byte(units), 0o644)
	os.WriteFile(filepath.Join(kb, "jobs"), []byte(jobs), 0o644)
	for i, want := range []map[string]string{
		{"Id": "a.service", "ActiveState": "active", "Job": ""},
		{"Id": "b.service", "ActiveState": "inactive", "Job": ""},
		{"Id": "c.service", "ActiveState": "activating", "Job": "start/running"},
	} {
		cmd := exec.Command("sh", "-c", unitScript(want["Id"], i+1))
		cmd.Env = append(os.Environ(), "KB="+kb)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		kv := Output{Text: string(out)}.KV()
		for k, v := range want {
			if kv[k] != v {
				t.Errorf("unit %d: %s = %q, want %q (output %q)", i+1, k, kv[k], v, out)
			}
		}
	}
}

// TestStorageWhereRuntimeDoesNotRun: a master without containerd is judged by its
// configuration alone (asking a stopped daemon would only time out).
func TestStorageWhereRuntimeDoesNotRun(t *testing.T) {
	s := testSpec()
	s.Roles = map[string][]string{RoleMaster: {"etcd.service"}, RoleMinion: {"containerd.service"}}
	p := probeByName(t, Probes(s), "runtime/storage")
	if strings.Contains(p.Script, "ctr plugins") {
		t.Error("asks containerd on a role that does not run it")
	}
	if got, pass := p.Eval(Output{Text: "cfg_snapshotter=overlayfs"}); !pass {
		t.Errorf("config-only judgement: %q", got)
	}
	if got, pass := p.Eval(Output{Text: "cfg_snapshotter=devmapper"}); pass {
		t.Errorf("devmapper passed: %q", got)
	}
	s.Role = RoleMinion
	if p := probeByName(t, Probes(s), "runtime/storage"); !strings.Contains(p.Script, "ctr plugins") {
		t.Error("a minion's running containerd is not asked")
	}
}

// bareSpec is a spec whose manifest said nothing about sysctls, modules, CNI plugins, host
// tools or storage: every pitfall check must still be there, from kubebake's own rulebook.
func bareSpec() Spec {
	return Spec{
		Role:     RoleMinion,
		UserData: UserDataCloudInit,
		Roles:    map[string][]string{RoleMinion: {"containerd.service", "kubelet.service"}},
		Runtime:  "containerd",
	}
}

// probeCase is canned guest output for one probe and the verdict it must get.
type probeCase struct {
	probe string
	out   Output
	pass  bool
}

// TestInvariantProbesFailOnBrokenGuests: the pitfall checks exist whatever the spec says, and
// each fails on the output of a guest that has the pitfall (and passes on a sound one).
func TestInvariantProbesFailOnBrokenGuests(t *testing.T) {
	ps := Probes(bareSpec())
	sysctlOut := func(key, runtime, file, val string) Output {
		return Output{Text: fmt.Sprintf("runtime=%s\ndef=%s:%s = %s", runtime, file, key, val)}
	}
	const usr = "/usr/lib/sysctl.d/90-kubebake.conf"
	var cases []probeCase
	for _, k := range []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.ipv4.ip_forward"} {
		cases = append(cases,
			probeCase{"sysctl/" + k, sysctlOut(k, "1", usr, "1"), true},
			probeCase{"sysctl/" + k, sysctlOut(k, "0", usr, "0"), false}, // set to 0 in the image
			probeCase{"sysctl/" + k, sysctlOut(k, "0", usr, "1"), false}, // set, but not applied (br_netfilter late)
			probeCase{"sysctl/" + k, Output{Text: "runtime=sysctl: cannot stat /proc/sys/" + strings.ReplaceAll(k, ".", "/") + ": No such file or directory"}, false},
			probeCase{"sysctl/" + k, sysctlOut(k, "1", "/etc/sysctl.d/99-local.conf", "1"), false}, // not from the image
		)
	}
	for _, m := range []string{"overlay", "br_netfilter"} {
		cases = append(cases,
			probeCase{"module/" + m + "/loaded", Output{Text: "loaded=yes\nconf=/usr/lib/modules-load.d/kubebake.conf"}, true},
			probeCase{"module/" + m + "/loaded", Output{Text: "loaded=no\nconf=/usr/lib/modules-load.d/kubebake.conf"}, false},
			probeCase{"module/" + m + "/loaded", Output{Text: "loaded=no"}, false},
		)
	}
	for _, tool := range []string{"conntrack", "socat", "ip", "iptables"} {
		cases = append(cases,
			probeCase{"tool/" + tool, Output{Text: "/usr/sbin/" + tool}, true},
			probeCase{"tool/" + tool, Output{Exit: 1}, false},
		)
	}
	for _, p := range recipes.RequiredCNIPlugins {
		cases = append(cases,
			probeCase{"cni/" + p, Output{Text: "missing"}, false},
		)
	}
	cases = append(cases,
		probeCase{"runtime/storage", Output{Text: "plugin_overlayfs=ok\ncfg_snapshotter=overlayfs"}, true},
		probeCase{"runtime/storage", Output{Text: "plugin_devmapper=ok\ncfg_snapshotter=devmapper"}, false},
	)
	for i, c := range cases {
		t.Run(fmt.Sprintf("%02d-%s", i, c.probe), func(t *testing.T) {
			got, pass := probeByName(t, ps, c.probe).Eval(c.out)
			if pass != c.pass {
				t.Errorf("Eval(%q) = %q, %v; want pass=%v", c.out.Text, got, pass, c.pass)
			}
		})
	}
}

// TestInvariantsOverrideTheRecipe: a recipe that wrongly says ip_forward "0" (or a bridge
// sysctl "0", or devicemapper storage) still gets the check for "1" (and overlay), once.
func TestInvariantsOverrideTheRecipe(t *testing.T) {
	s := bareSpec()
	s.Sysctls = map[string]string{
		"net.ipv4.ip_forward":                "0",
		"net.bridge.bridge-nf-call-iptables": "0",
		"vm.max_map_count":                   "262144",
	}
	s.Modules = []string{"br_netfilter", "nf_conntrack"}
	s.StorageDriver = "devicemapper"
	s.HostTools = []string{"conntrack", "ethtool"}
	s.CNIPlugins = []string{"bridge", "tuning"}
	ps := Probes(s)

	fwd := probeByName(t, ps, "sysctl/net.ipv4.ip_forward")
	if !strings.HasPrefix(fwd.Expected, "1 ") {
		t.Errorf("ip_forward expected %q, want 1", fwd.Expected)
	}
	// The guest did what the recipe said: forwarding off. That is a failure.
	if got, pass := fwd.Eval(Output{Text: "runtime=0\ndef=/usr/lib/sysctl.d/90-kubebake.conf:net.ipv4.ip_forward = 0"}); pass {
		t.Errorf("ip_forward 0 passed: %q", got)
	}
	if got, pass := fwd.Eval(Output{Text: "runtime=1\ndef=/usr/lib/sysctl.d/90-kubebake.conf:net.ipv4.ip_forward = 1"}); !pass {
		t.Errorf("ip_forward 1 failed: %q", got)
	}
	if got, pass := probeByName(t, ps, "sysctl/net.bridge.bridge-nf-call-iptables").Eval(Output{Text: "runtime=0\ndef=/usr/lib/sysctl.d/90-kubebake.conf:net.bridge.bridge-nf-call-iptables = 0"}); pass {
		t.Errorf("bridge-nf-call-iptables 0 passed: %q", got)
	}
	// The recipe's other settings are still checked as it says.
	if p := probeByName(t, ps, "sysctl/vm.max_map_count"); !strings.HasPrefix(p.Expected, "262144") {
		t.Errorf("vm.max_map_count expected %q", p.Expected)
	}
	probeByName(t, ps, "module/nf_conntrack/loaded")
	probeByName(t, ps, "tool/ethtool")
	probeByName(t, ps, "cni/tuning")
	// Storage: overlay, not what the recipe asked for.
	st := probeByName(t, ps, "runtime/storage")
	if !strings.Contains(st.Expected, "overlayfs") {
		t.Errorf("storage expected %q, want overlayfs", st.Expected)
	}
	if got, pass := st.Eval(Output{Text: "plugin_devicemapper=ok\ncfg_snapshotter=devicemapper"}); pass {
		t.Errorf("devicemapper storage passed: %q", got)
	}

	// One probe per name: where the recipe repeats an invariant, the invariant's probe is the
	// only one.
	count := map[string]int{}
	for _, p := range ps {
		count[p.Name]++
	}
	for name, n := range count {
		if n > 1 {
			t.Errorf("%d probes named %s", n, name)
		}
	}
	for _, name := range []string{"sysctl/net.ipv4.ip_forward", "module/br_netfilter/loaded", "module/overlay/loaded", "tool/conntrack", "cni/bridge"} {
		if count[name] != 1 {
			t.Errorf("%s: %d probes, want 1", name, count[name])
		}
	}
}

// TestRequiredCNIPluginsIsTheOneList: verify reads recipes.RequiredCNIPlugins itself (no copy
// of its own): a plugin added there is checked on every node at once.
func TestRequiredCNIPluginsIsTheOneList(t *testing.T) {
	saved := recipes.RequiredCNIPlugins
	t.Cleanup(func() { recipes.RequiredCNIPlugins = saved })
	recipes.RequiredCNIPlugins = append(slices.Clone(saved), "tuning")
	p := probeByName(t, Probes(bareSpec()), "cni/tuning")
	if _, pass := p.Eval(Output{Text: "missing"}); pass {
		t.Error("a missing required plugin passed")
	}
}

// TestStorageProbeOnRealContainerdDumps runs the storage probe's script over what
// `containerd config dump` really prints for the image's config (containerd 1.6 of Debian 12
// and 1.7 of Debian 13, saved in testdata): 1.7 also dumps each runtime's own snapshotter,
// empty when it inherits the CRI default, which once read as "configured: ,overlayfs". A
// devmapper default, or a runtime of its own on devmapper, must still fail.
func TestStorageProbeOnRealContainerdDumps(t *testing.T) {
	p := storageProbe("containerd", "overlayfs", false)
	criDefault := regexp.MustCompile(`(\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\]\n(?:[ \t]*\w+ = [^\n]*\n)*?\s*snapshotter = )"overlayfs"`)
	runcOwn := regexp.MustCompile(`(\.runtimes\.runc\]\n(?:[ \t]*\w+ = [^\n]*\n)*?\s*snapshotter = )""`)
	for _, version := range []string{"1.6", "1.7"} {
		dump, err := os.ReadFile(filepath.Join("testdata", "containerd-"+version+"-config-dump.toml"))
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name string
			dump string
			pass bool
		}{
			{"as baked", string(dump), true},
			{"CRI default devmapper", criDefault.ReplaceAllString(string(dump), `${1}"devmapper"`), false},
		}
		if version == "1.7" {
			cases = append(cases, struct {
				name string
				dump string
				pass bool
			}{"runc on devmapper", runcOwn.ReplaceAllString(string(dump), `${1}"devmapper"`), false})
		}
		for _, c := range cases {
			t.Run(version+"/"+c.name, func(t *testing.T) {
				if c.dump == string(dump) && !c.pass {
					t.Fatal("the defect was not planted: the dump is unchanged")
				}
				out := runWithFakeContainerd(t, p.Script, c.dump)
				got, pass := p.Eval(Output{Text: out})
				if pass != c.pass {
					t.Errorf("pass = %v, want %v: %s\nprobe output:\n%s", pass, c.pass, got, out)
				}
				if c.pass && got != "configured: overlayfs" {
					t.Errorf("got %q", got)
				}
			})
		}
	}
}

// runWithFakeContainerd runs a probe script with a `containerd` on PATH that prints dump.
func runWithFakeContainerd(t *testing.T, script, dump string) string {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "dump.toml"), []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	fake := "#!/bin/sh\ncat " + shell.Quote(filepath.Join(bin, "dump.toml")) + "\n"
	if err := os.WriteFile(filepath.Join(bin, "containerd"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return string(out)
}

// TestCustomRoles: "verify --role all" boots every role the image declares (master and
// minion first, custom roles after, by name), and a lone node of a custom joining role may
// wait for its master as a lone minion does, while its own units are judged, not skipped.
func TestCustomRoles(t *testing.T) {
	m := &Manifest{}
	m.Units = []manifest.Unit{
		{Name: "etcd.service", Roles: []string{RoleMaster}},
		{Name: "kubelet.service", Roles: []string{RoleMaster, RoleMinion, "gpu", "edge"}},
		{Name: "kubebake-join.service", Roles: []string{RoleMinion, "gpu", "edge"}},
	}
	if got := DeclaredRoles(m); !slices.Equal(got, []string{RoleMaster, RoleMinion, "edge", "gpu"}) {
		t.Errorf("DeclaredRoles = %q", got)
	}
	if got := DeclaredRoles(nil); !slices.Equal(got, []string{RoleMaster, RoleMinion}) {
		t.Errorf("DeclaredRoles without a manifest = %q", got)
	}

	n := &node{role: "edge", manifest: m}
	if !n.loneJoiner() {
		t.Error("a lone edge node is not judged as a node waiting for its master")
	}
	if (&node{role: RoleMaster, manifest: m}).loneJoiner() || (&node{role: "edge", manifest: m, inCluster: true}).loneJoiner() {
		t.Error("a master, or a node in a cluster, may not wait")
	}
	s := m.Spec("edge")
	s.LoneMinion = n.loneJoiner()
	ps := Probes(s)
	join := probeByName(t, ps, "unit/kubebake-join.service/active")
	if _, pass := join.Eval(Output{Text: "LoadState=loaded\nActiveState=activating\nSubState=auto-restart\nResult=exit-code\nConditionResult=yes\nNRestarts=3"}); !pass {
		t.Error("a lone edge node's join retrying should pass")
	}
	probeByName(t, ps, "unit/etcd.service/skipped")
	marker := probeByName(t, ps, "role/marker")
	if !strings.Contains(marker.Expected, "kubernetes-edge") {
		t.Errorf("role/marker expects %q", marker.Expected)
	}
}

// TestInterfaceSysctlProbe: send_redirects must be 0 on every interface (an interface sends
// redirects when its own value or "all" says so), set by the layer's glob line; the script
// really lists the interfaces of the machine it runs on.
func TestInterfaceSysctlProbe(t *testing.T) {
	p := interfaceSysctlProbe("send_redirects", "0")
	if p.Name != "sysctl/net.ipv4.conf.*.send_redirects" {
		t.Errorf("name %q", p.Name)
	}
	out, err := exec.Command("sh", "-c", p.Script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "if_lo=") || !strings.Contains(string(out), "if_all=") {
		t.Fatalf("the script on this machine: %v\n%s", err, out)
	}
	def := "def=/usr/lib/sysctl.d/90-kubebake.conf"
	for _, c := range []struct {
		out  string
		pass bool
	}{
		{"if_all=0\nif_default=0\nif_eth0=0\nif_cni0=0\n" + def, true},
		{"if_all=0\nif_default=0\nif_eth0=1\nif_cni0=0\n" + def, false}, // present before systemd-sysctl, never set
		{"if_all=0\nif_eth0=0\n", false},                                // right today, not from the layer
		{def, false},                                                    // nothing read
	} {
		if got, pass := p.Eval(Output{Text: c.out}); pass != c.pass {
			t.Errorf("%q: pass %v (%s), want %v", c.out, pass, got, c.pass)
		}
	}
}
