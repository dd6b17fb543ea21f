package recipes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestBrokenCorpus: every file in testdata/broken gets exactly one one-line error naming
// file:line:col and the field, compared with a golden line.
func TestBrokenCorpus(t *testing.T) {
	golden := []struct{ file, want string }{
		{"bad-apiversion.yaml", `testdata/broken/bad-apiversion.yaml:1:13: apiVersion: version "kubebake.dev/v2" is newer than this kubebake or unknown; this kubebake reads kubebake.dev/v1alpha1`},
		{"bad-kind.yaml", `testdata/broken/bad-kind.yaml:2:7: kind: want Recipe, got the string "Pod"; write kind: Recipe`},
		{"comments-only.yaml", `testdata/broken/comments-only.yaml:1:1: empty document; a recipe starts with "apiVersion: kubebake.dev/v1alpha1" and "kind: Recipe"`},
		{"duplicate-key.yaml", `testdata/broken/duplicate-key.yaml:7:3: base.release: duplicate key, first written at line 6; keep only one`},
		{"duplicate-section.yaml", `testdata/broken/duplicate-section.yaml:26:1: etcd: duplicate key, first written at line 18; keep only one`},
		{"empty.yaml", `testdata/broken/empty.yaml:1:1: empty document; a recipe starts with "apiVersion: kubebake.dev/v1alpha1" and "kind: Recipe"`},
		{"foreign-apiversion.yaml", `testdata/broken/foreign-apiversion.yaml:1:13: apiVersion: unknown version "v1"; this kubebake reads kubebake.dev/v1alpha1`},
		{"invalid-yaml-colon.yaml", `testdata/broken/invalid-yaml-colon.yaml:3:13: name: invalid YAML: mapping values are not allowed in this context; quote a value that contains ": ", or fix the indentation`},
		{"invalid-yaml-indent.yaml", `testdata/broken/invalid-yaml-indent.yaml:6:1: base.release: invalid YAML: mapping values are not allowed in this context; quote a value that contains ": ", or fix the indentation`},
		{"invalid-yaml-unclosed.yaml", `testdata/broken/invalid-yaml-unclosed.yaml:22:12: cni.plugins: invalid YAML: did not find expected ',' or ']'; close the [ list ] on the same line`},
		{"list-item-scalar.yaml", `testdata/broken/list-item-scalar.yaml:11:7: kubernetes.components[0]: want a mapping (key: value lines), got the string "kubelet"; put the fields on indented lines under the key`},
		{"lock-kind.yaml", `testdata/broken/lock-kind.yaml:2:7: kind: this is a lock file, not a recipe; write kind: Recipe`},
		{"merge-key.yaml", `testdata/broken/merge-key.yaml:19:3: etcd.<<: merge keys (<<) are not supported in recipes; write the fields out`},
		{"missing-apiversion.yaml", `testdata/broken/missing-apiversion.yaml:1:1: apiVersion: missing required field; add "apiVersion: kubebake.dev/v1alpha1" as the first line`},
		{"missing-kind.yaml", `testdata/broken/missing-kind.yaml:1:1: kind: missing required field; add "kind: Recipe"`},
		{"missing-required-item.yaml", `testdata/broken/missing-required-item.yaml:12:7: kubernetes.components[1].name: missing required field; add name: kubelet under kubernetes.components[1]`},
		{"missing-required.yaml", `testdata/broken/missing-required.yaml:4:1: base.release: missing required field; add release: bookworm under base`},
		{"missing-section.yaml", `testdata/broken/missing-section.yaml:1:1: etcd: missing required field; add etcd: {version: "3.6"}`},
		{"misspelt-apiversion.yaml", `testdata/broken/misspelt-apiversion.yaml:1:1: apiversion: unknown field; did you mean "apiVersion"?`},
		{"null-document.yaml", `testdata/broken/null-document.yaml:1:1: empty document; a recipe starts with "apiVersion: kubebake.dev/v1alpha1" and "kind: Recipe"`},
		{"tab-indented.yaml", `testdata/broken/tab-indented.yaml:6:1: base.release: invalid YAML: a tab in the indentation; indent with spaces, not tabs`},
		{"top-level-list.yaml", `testdata/broken/top-level-list.yaml:1:1: want a mapping of recipe fields, got a list; a recipe starts with "apiVersion: kubebake.dev/v1alpha1" and "kind: Recipe"`},
		{"top-level-scalar.yaml", `testdata/broken/top-level-scalar.yaml:1:1: want a mapping of recipe fields, got the string "debian-12"; a recipe starts with "apiVersion: kubebake.dev/v1alpha1" and "kind: Recipe"`},
		{"two-documents.yaml", `testdata/broken/two-documents.yaml:26:1: more than one YAML document; keep one recipe per file and remove the extra "---"`},
		{"unknown-field-far.yaml", `testdata/broken/unknown-field-far.yaml:26:3: network.dnsDomain: unknown field; known fields here: ipv6, nodeCIDRMaskSize, podCIDR, serviceCIDR`},
		{"unknown-field.yaml", `testdata/broken/unknown-field.yaml:7:3: base.pakages: unknown field; did you mean "packages"?`},
		{"unknown-top-field.yaml", `testdata/broken/unknown-top-field.yaml:26:1: sysctl: unknown field; did you mean "sysctls"?`},
		{"wrong-type-bool.yaml", `testdata/broken/wrong-type-bool.yaml:25:9: network.ipv6: want true or false, got the string "yes"; write true or false`},
		{"wrong-type-list-mapping.yaml", `testdata/broken/wrong-type-list-mapping.yaml:11:5: kubernetes.components: want a list, got a mapping; write one "- item" per line, or [a, b]`},
		{"wrong-type-list.yaml", `testdata/broken/wrong-type-list.yaml:22:12: cni.plugins: want a list, got the string "loopback"; write [loopback] or one "- item" per line`},
		{"wrong-type-mapping.yaml", `testdata/broken/wrong-type-mapping.yaml:26:10: sysctls: want a mapping (key: value lines), got a list; write one "key: value" per indented line`},
		{"wrong-type-nested.yaml", `testdata/broken/wrong-type-nested.yaml:11:13: kubernetes.components[0].name: want a string, got a mapping; write a single value on the same line as the key`},
		{"wrong-type-section.yaml", `testdata/broken/wrong-type-section.yaml:4:7: base: want a mapping (key: value lines), got the string "debian"; put the fields on indented lines under the key`},
		{"wrong-type-string.yaml", `testdata/broken/wrong-type-string.yaml:6:12: base.release: want a string, got a list; write a single value on the same line as the key`},
	}
	files, err := filepath.Glob("testdata/broken/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(golden) {
		t.Errorf("testdata/broken has %d files, the golden table %d: keep them in step", len(files), len(golden))
	}
	for _, g := range golden {
		t.Run(g.file, func(t *testing.T) {
			path := "testdata/broken/" + g.file
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Parse(path, data)
			if err == nil {
				t.Fatalf("parsed without error: %+v", r)
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			if len(list) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(list), err)
			}
			if got := err.Error(); got != g.want {
				t.Errorf("got  %s\nwant %s", got, g.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line")
			}
		})
	}
}

// TestParseReportsAllProblems: several problems in one file come out together, one per line,
// sorted by position.
func TestParseReportsAllProblems(t *testing.T) {
	src := `apiVersion: kubebake.dev/v1alpha1
kind: Recipe
name: many
base:
  distro: debian
  pakages: [conntrack]
  release: [bookworm]
kubernetes:
  version: latest
  version: 1.35
  components:
    name: kubelet
network:
  ipv6: yes
etcd: {}
`
	_, err := Parse("many.yaml", []byte(src))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want ErrorList, got %v", err)
	}
	want := []string{
		`many.yaml:1:1: cni: missing required field; add cni: {version: "1.9", plugins: [loopback, bridge, host-local, portmap]}`,
		`many.yaml:6:3: base.pakages: unknown field; did you mean "packages"?`,
		`many.yaml:7:12: base.release: want a string, got a list; write a single value on the same line as the key`,
		`many.yaml:10:3: kubernetes.version: duplicate key, first written at line 9; keep only one`,
		`many.yaml:12:5: kubernetes.components: want a list, got a mapping; write one "- item" per line, or [a, b]`,
		`many.yaml:14:9: network.ipv6: want true or false, got the string "yes"; write true or false`,
		`many.yaml:15:1: etcd.version: missing required field; add version: "3.6" under etcd`,
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestEmbeddedRecipesLintClean(t *testing.T) {
	names := EmbeddedNames()
	if !reflect.DeepEqual(names, []string{"debian-12", "debian-12-docker", "debian-13"}) {
		t.Fatalf("embedded recipes: %v", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			r, err := Load(name)
			if err != nil {
				t.Fatal(err)
			}
			if fs := Lint(r); len(fs) != 0 {
				for _, f := range fs {
					t.Error(f)
				}
			}
			if r.File != "recipes/"+name+".yaml" || !r.Embedded {
				t.Errorf("File %q Embedded %v", r.File, r.Embedded)
			}
		})
	}
	list, err := List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Release != "bookworm" || list[1].Release != "bookworm" || list[2].Release != "trixie" || list[0].Kubernetes != "1.35" {
		t.Errorf("List: %+v", list)
	}
}

// The embedded recipes are written out in full: defaults must not change them, so what people
// copy is what kubebake uses.
func TestEmbeddedRecipesAreExplicit(t *testing.T) {
	for _, name := range EmbeddedNames() {
		data, err := EmbeddedFile(name + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		raw, errs := parse(name, data)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		withDefaults := *raw
		SetDefaults(&withDefaults)
		raw.Positions, withDefaults.Positions = nil, nil
		if !reflect.DeepEqual(raw, &withDefaults) {
			t.Errorf("%s: defaults change the recipe: it is not written out in full\nraw:      %+v\ndefaulted: %+v", name, raw, &withDefaults)
		}
	}
}

func TestLoad(t *testing.T) {
	for _, spelling := range []string{"debian-12", "debian-12.yaml", "recipes/debian-12.yaml"} {
		r, err := Load(spelling)
		if err != nil || r.Name != "debian-12" {
			t.Errorf("Load(%q): %v", spelling, err)
		}
	}
	// A file on disk wins over an embedded name and keeps its path.
	dir := t.TempDir()
	p := filepath.Join(dir, "debian-12.yaml")
	data, _ := EmbeddedFile("debian-12.yaml")
	os.WriteFile(p, []byte(strings.Replace(string(data), "name: debian-12", "name: mine", 1)), 0o644)
	r, err := Load(p)
	if err != nil || r.Name != "mine" || r.File != p || r.Embedded {
		t.Errorf("Load(%q) = %+v, %v", p, r, err)
	}
	if _, err := Load("debian-99"); err == nil || !strings.Contains(err.Error(), "embedded: debian-12, debian-12-docker, debian-13") {
		t.Errorf("Load(debian-99): %v", err)
	}
	if _, err := Load(filepath.Join(dir, "nope.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Load(missing file): %v", err)
	}
}

const minimal = `apiVersion: kubebake.dev/v1alpha1
kind: Recipe
name: mini
base:
  distro: debian
  release: trixie
  packages: [conntrack, socat, ebtables, iptables, ethtool]
kubernetes:
  version: 1.35
  components: [{name: kubelet}, {name: kubeadm}, {name: kubectl}, {name: kube-proxy},
    {name: kube-apiserver}, {name: kube-controller-manager}, {name: kube-scheduler}]
etcd: {version: "3.6"}
cni: {version: "1.9", plugins: [loopback, bridge, host-local, portmap]}
podNetwork: {name: flannel, version: "0.28"}
dns: {name: coredns, version: "1.15"}
`

func TestDefaults(t *testing.T) {
	r, err := Parse("mini.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if fs := Lint(r); len(fs) != 0 {
		t.Errorf("a minimal recipe with defaults should lint clean: %v", fs)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"base.arch", r.Base.Arch, "amd64"},
		{"base.components", r.Base.Components, []string{"main"}},
		{"base.suites", r.Base.Suites, []string{"trixie", "trixie-updates"}},
		{"base.kernel", r.Base.Kernel, "linux-image-cloud-amd64"},
		{"kubernetes.version (unquoted 1.35 keeps its text)", r.Kubernetes.Version, "1.35"},
		{"kubernetes.source", r.Kubernetes.Source, Source{Type: "gomod", Module: "k8s.io/kubernetes"}},
		{"etcd.source", r.Etcd.Source, Source{Type: "gomod", Module: "go.etcd.io/etcd/server/v3"}},
		{"cni.source", r.CNI.Source, Source{Type: "gomod", Module: "github.com/containernetworking/plugins"}},
		{"runtime", r.Runtime, Runtime{Name: "containerd", Packages: []string{"containerd", "runc"}, CgroupDriver: "systemd"}},
		{"storage.driver", r.Storage.Driver, "overlayfs"},
		{"network", r.Network, Network{PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/12", NodeCIDRMaskSize: 24}},
		{"podNetwork", r.PodNetwork, &PodNetwork{Name: "flannel", Backend: "host-gw", Version: "0.28", Source: Source{Type: "gomod", Module: "github.com/flannel-io/flannel"}}},
		{"dns", r.DNS, &DNS{Name: "coredns", Version: "1.15", Source: Source{Type: "gomod", Module: "github.com/coredns/coredns"}}},
		{"sysctls", r.Sysctls, map[string]string{"net.bridge.bridge-nf-call-iptables": "1", "net.bridge.bridge-nf-call-ip6tables": "1", "net.ipv4.ip_forward": "1"}},
		{"modules", r.Modules, []string{"overlay", "br_netfilter"}},
		{"roles", r.Roles, []Role{
			{Name: "master", Units: []string{"etcd.service", "kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service", "kubebake-master-bootstrap.service",
				"containerd.service", "kubelet.service", "kube-proxy.service", "flanneld.service"}},
			{Name: "minion", Units: []string{"containerd.service", "kubelet.service", "kube-proxy.service", "flanneld.service", "kubebake-minion-join.service"}},
		}},
		{"image", r.Image, Image{Size: "4GiB", Formats: []string{"raw", "qcow2"}, Bootloader: "systemd-boot"}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}

	// docker: overlay2 and docker's units in the minion role.
	docker := strings.Replace(minimal, "etcd:", "runtime: {name: docker, packages: [docker.io, runc], sandboxImage: \"registry.k8s.io/pause:3.10\"}\netcd:", 1)
	r, err = Parse("docker.yaml", []byte(docker))
	if err != nil {
		t.Fatal(err)
	}
	if r.Storage.Driver != "overlay2" || r.Runtime.CgroupDriver != "systemd" {
		t.Errorf("docker: storage %q cgroup %q", r.Storage.Driver, r.Runtime.CgroupDriver)
	}
	// Without criDockerd the kubelet is on containerd's CRI, docker beside it: lint is clean.
	if got := r.Roles[1].Units; !reflect.DeepEqual(got, []string{"containerd.service", "docker.service", "kubelet.service", "kube-proxy.service", "flanneld.service", "kubebake-minion-join.service"}) {
		t.Errorf("docker minion units: %v", got)
	}
	if fs := Lint(r); len(fs) != 0 {
		t.Errorf("docker recipe: %v", fs)
	}
	if got := ExplainRuntime(r.Runtime); !strings.Contains(got, "containerd's CRI") || !strings.Contains(got, "runtime.criDockerd") {
		t.Errorf("docker recipe's runtime: %s", got)
	}
	// With criDockerd, cri-dockerd serves the kubelet.
	r, err = Parse("docker.yaml", []byte(strings.Replace(docker, "sandboxImage:", "criDockerd: {version: 0.3.16, source: {type: url, url: \"https://example.org/cri-dockerd-{version}.tgz\", member: \"cri-dockerd/{name}\"}}, sandboxImage:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Roles[1].Units; !reflect.DeepEqual(got, []string{"docker.service", "cri-docker.service", "kubelet.service", "kube-proxy.service", "flanneld.service", "kubebake-minion-join.service"}) {
		t.Errorf("docker+cri-dockerd minion units: %v", got)
	}

	// IPv6 on and no sysctls section: the default sysctls include IPv6 forwarding.
	r, err = Parse("v6.yaml", []byte(minimal+"network: {ipv6: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Sysctls[IPv6ForwardingSysctl] != "1" {
		t.Errorf("ipv6 default sysctls: %v", r.Sysctls)
	}
	// An IPv6 pod range gets /64 node ranges.
	r, err = Parse("v6pods.yaml", []byte(minimal+"network: {ipv6: true, podCIDR: \"fd00:10:244::/56\", serviceCIDR: \"fd00:10:96::/112\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Network.NodeCIDRMaskSize != 64 {
		t.Errorf("IPv6 node CIDR mask size: %d, want 64", r.Network.NodeCIDRMaskSize)
	}

	// A section written explicitly is not completed: lint sees what it lacks.
	r, err = Parse("explicit.yaml", []byte(minimal+"sysctls:\n  net.ipv4.ip_forward: 1\nmodules: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Sysctls) != 1 || r.Sysctls["net.ipv4.ip_forward"] != "1" || len(r.Modules) != 0 {
		t.Errorf("explicit sections were completed: sysctls %v modules %v", r.Sysctls, r.Modules)
	}
	// SetDefaults is idempotent.
	again := *r
	SetDefaults(&again)
	if !reflect.DeepEqual(r, &again) {
		t.Error("SetDefaults is not idempotent")
	}
}

func TestPositions(t *testing.T) {
	data, _ := EmbeddedFile("debian-12.yaml")
	r, err := Parse("d.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	at := func(p Pos) string { return strings.TrimSpace(lines[p.Line-1][p.Col-1:]) }
	for _, c := range []struct {
		path string
		key  bool
		want string
	}{
		{"kubernetes.version", false, `"1.35"`},
		{"kubernetes.version", true, `version: "1.35"`},
		{"kubernetes.components[2].name", false, "kubectl"},
		{`sysctls["net.ipv4.ip_forward"]`, false, `"1"`},
		{"roles[1].units[0]", false, "containerd.service"},
		{"cni.plugins[3]", false, "portmap]"},
		{"modules", true, "modules:"},
		{"network.nodeCIDRMaskSize", false, "24"},
		{"podNetwork.backend", false, "host-gw"},
		{"dns.source.module", false, "github.com/coredns/coredns"},
		// Not written: the nearest written parent's key.
		{"kubernetes.components[2].version", false, "name: kubectl"},
		{"base.mirror", false, "base:"},
	} {
		var p Pos
		if c.key {
			p = r.Positions.KeyOf(c.path)
		} else {
			p = r.Positions.Of(c.path)
		}
		if p.IsZero() {
			t.Errorf("%s: no position", c.path)
			continue
		}
		if got := at(p); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s at %s: %q, want it to start with %q", c.path, p, got, c.want)
		}
	}
}

func TestParentPath(t *testing.T) {
	for in, want := range map[string]string{
		"a.b[2]": "a.b", `a["x.y"]`: "a", "a.b": "a", "a": "", `s["a]b"]`: "s", "r[0].u[1]": "r[0].u", "": "",
	} {
		if got := ParentPath(in); got != want {
			t.Errorf("ParentPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGuessPath(t *testing.T) {
	src := strings.Split(`base:
  packages:
    - a
    - b
roles:
  - name: master
    units:
      - x
  - name: minion
    units:
      - y
image:
  size: 4GiB`, "\n")
	for line, want := range map[int]string{1: "base", 2: "base.packages", 4: "base.packages[1]", 6: "roles[0].name", 8: "roles[0].units[0]", 11: "roles[1].units[0]", 13: "image.size"} {
		if got := guessPath(src, line); got != want {
			t.Errorf("line %d: %q, want %q", line, got, want)
		}
	}
}

func TestAliasesAreBounded(t *testing.T) {
	// A small document whose aliases expand to a huge one must fail fast ("billion laughs").
	units := strings.Repeat("u.service, ", 400)
	roles := "roles: [&r {name: a, units: [" + units + "]}" + strings.Repeat(", *r", 400) + "]\n"
	_, err := Parse("laughs.yaml", []byte(minimal+roles))
	if err == nil || !strings.Contains(err.Error(), "too many aliases") {
		t.Fatalf("alias bomb: %.300v", err)
	}
	// And a self-referencing alias in a typed position is a plain type error.
	_, err = Parse("self.yaml", []byte(minimal+"modules: &m [*m]\n"))
	if err == nil || !strings.Contains(err.Error(), "modules[0]: want a string, got a list") {
		t.Errorf("self alias: %v", err)
	}
}

// podNetwork and dns are optional, but a section that is written is read strictly: an empty
// one reports its required fields at its key, and every problem has the user's line:col.
func TestParseOptionalSections(t *testing.T) {
	base := strings.Replace(minimal, "podNetwork: {name: flannel, version: \"0.28\"}\ndns: {name: coredns, version: \"1.15\"}\n", "", 1)
	r, err := Parse("none.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if r.PodNetwork != nil || r.DNS != nil {
		t.Errorf("absent sections are set: %+v %+v", r.PodNetwork, r.DNS)
	}
	for _, in := range r.Inputs() {
		if in.Name == "flanneld" || in.Name == "coredns" {
			t.Errorf("input %s without its section", in.Name)
		}
	}
	line := strings.Count(base, "\n") + 1 // the first line after base
	for _, c := range []struct {
		name, add string
		want      []string
	}{
		{"empty sections", "podNetwork:\ndns:\n", []string{
			fmt.Sprintf("e.yaml:%d:1: podNetwork.name: missing required field; add name: flannel under podNetwork", line),
			fmt.Sprintf(`e.yaml:%d:1: podNetwork.version: missing required field; add version: "0.28" under podNetwork`, line),
			fmt.Sprintf("e.yaml:%d:1: dns.name: missing required field; add name: coredns under dns", line+1),
			fmt.Sprintf(`e.yaml:%d:1: dns.version: missing required field; add version: "1.15" under dns`, line+1),
		}},
		{"scalar section", "podNetwork: flannel\n", []string{
			fmt.Sprintf("e.yaml:%d:13: podNetwork: want a mapping (key: value lines), got the string \"flannel\"; put the fields on indented lines under the key", line),
		}},
		{"misspelt field", "podNetwork:\n  name: flannel\n  version: \"0.28\"\n  backnd: vxlan\n", []string{
			fmt.Sprintf(`e.yaml:%d:3: podNetwork.backnd: unknown field; did you mean "backend"?`, line+3),
		}},
		{"mask size not a number", "network:\n  nodeCIDRMaskSize: /24\n", []string{
			fmt.Sprintf(`e.yaml:%d:21: network.nodeCIDRMaskSize: want a whole number, got the string "/24"; write a number such as 4`, line+1),
		}},
		{"dns source without type", "dns:\n  name: coredns\n  version: \"1.15\"\n  source: {module: github.com/coredns/coredns}\n", []string{
			fmt.Sprintf("e.yaml:%d:3: dns.source.type: missing required field; add type: gomod under dns.source", line+3),
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("e.yaml", []byte(base+c.add))
			if err == nil {
				t.Fatal("parsed")
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}

	// vxlan and an exact version are accepted as written.
	r, err = Parse("x.yaml", []byte(base+"podNetwork: {name: flannel, backend: vxlan, version: v0.28.10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.PodNetwork.Backend != "vxlan" || r.PodNetwork.Source.Module != FlannelModule {
		t.Errorf("podNetwork: %+v", r.PodNetwork)
	}
	if fs := Lint(r); len(fs) != 0 {
		t.Errorf("findings: %v", fs)
	}
	for _, in := range r.Inputs() {
		if in.Name == "flanneld" && (in.Version != "v0.28.10" || in.Main != "flanneld" || in.Package != "") {
			t.Errorf("flanneld input: %+v", in)
		}
	}
}
