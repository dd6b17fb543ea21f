package recipes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/kubebake/kubebake"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/artifacts/gomain"
)

func loadT(t *testing.T, name string) *Recipe {
	t.Helper()
	r, err := Load(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInputs(t *testing.T) {
	r := loadT(t, "debian-12")
	ins := r.Inputs()
	byName := map[string]Input{}
	var names []string
	for _, in := range ins {
		byName[in.Name] = in
		names = append(names, in.Name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("inputs not sorted: %v", names)
	}
	// 7 Kubernetes components, etcd and etcdctl, 4 CNI plugins, flanneld and coredns,
	// busybox (the baked images' binary), the Ignition applier, and Debian packages: the boot
	// baseline, the kernel, the runtime's and base.packages (with no duplicates).
	if want := 7 + 2 + 4 + 2 + 1 + 1 + len(BootPackages()) + 1 + 2 + 9; len(ins) != want {
		t.Errorf("%d inputs, want %d: %v", len(ins), want, names)
	}
	for name, want := range map[string]Input{
		"kubelet": {Name: "kubelet", Kind: "binary", Source: Source{Type: "gomod", Module: "k8s.io/kubernetes"}, Version: "1.35", Package: "k8s.io/kubernetes/cmd/kubelet", Arch: "amd64"},
		"etcd":    {Name: "etcd", Kind: "binary", Source: Source{Type: "gomod", Module: "go.etcd.io/etcd/server/v3"}, Version: "3.6", Package: "go.etcd.io/etcd/server/v3", Arch: "amd64"},
		"etcdctl": {Name: "etcdctl", Kind: "binary", Source: Source{Type: "gomod", Module: "go.etcd.io/etcd/etcdctl/v3"}, Version: "3.6", Package: "go.etcd.io/etcd/etcdctl/v3", Arch: "amd64"},
		"cni/host-local": {Name: "cni/host-local", Kind: "binary", Source: Source{Type: "gomod", Module: "github.com/containernetworking/plugins"}, Version: "1.9",
			Package: "github.com/containernetworking/plugins/plugins/ipam/host-local", Arch: "amd64"},
		// kubebake's own mains, pinned by their sha256.
		"flanneld": {Name: "flanneld", Kind: "binary", Source: Source{Type: "gomod", Module: "github.com/flannel-io/flannel"}, Version: "0.28",
			Main: "flanneld", MainSHA256: gomain.SHA256("flanneld"), Arch: "amd64"},
		"coredns": {Name: "coredns", Kind: "binary", Source: Source{Type: "gomod", Module: "github.com/coredns/coredns"}, Version: "1.15",
			Main: "coredns", MainSHA256: gomain.SHA256("coredns"), Arch: "amd64"},
		// The applier, from kubebake's own source.
		"kubebake-ignition": {Name: "kubebake-ignition", Kind: "binary", Source: Source{Type: "self"}, Package: "cmd/kubebake-ignition",
			MainSHA256: kubebake.ApplierSourceSHA256(), Arch: "amd64"},
		"deb/containerd":              {Name: "deb/containerd", Kind: "deb", Source: Source{Type: "deb"}, Package: "containerd", Suites: []string{"bookworm", "bookworm-updates", "bookworm-security"}, Arch: "amd64"},
		"deb/linux-image-cloud-amd64": {Name: "deb/linux-image-cloud-amd64", Kind: "deb", Source: Source{Type: "deb"}, Package: "linux-image-cloud-amd64", Suites: []string{"bookworm", "bookworm-updates", "bookworm-security"}, Arch: "amd64"},
		"deb/cloud-init":              {Name: "deb/cloud-init", Kind: "deb", Source: Source{Type: "deb"}, Package: "cloud-init", Suites: []string{"bookworm", "bookworm-updates", "bookworm-security"}, Arch: "amd64"},
	} {
		if got := byName[name]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
		}
	}
	for _, p := range []string{"loopback", "bridge", "portmap"} {
		if _, ok := byName["cni/"+p]; !ok {
			t.Errorf("no cni/%s", p)
		}
	}

	// url sources: Package is the file name; exact versions are normalised.
	r.Kubernetes.Source = Source{Type: SourceURL, URL: "https://dl.k8s.io/release/{version}/bin/linux/{arch}/{name}"}
	r.Kubernetes.Version = "1.35.4"
	r.CNI.Source = Source{Type: SourceDeb, Package: "containernetworking-plugins"}
	byName = map[string]Input{}
	for _, in := range r.Inputs() {
		byName[in.Name] = in
	}
	if in := byName["kube-proxy"]; in.Package != "kube-proxy" || in.Version != "v1.35.4" {
		t.Errorf("url input: %+v", in)
	}
	if in := byName["cni/bridge"]; in.Package != "containernetworking-plugins" || len(in.Suites) != 3 {
		t.Errorf("deb-sourced binary: %+v", in)
	}
	// A Debian pin travels in Version; a pinned entry wins over an unpinned one.
	r.Base.Packages = append(r.Base.Packages, "socat=1.7.4.4-2", "kmod")
	for _, in := range r.Inputs() {
		if in.Name == "deb/socat" && (in.Package != "socat" || in.Version != "1.7.4.4-2") {
			t.Errorf("pinned deb: %+v", in)
		}
	}
	if got := ExpandURL(r.Kubernetes.Source.URL, "v1.35.4", "kubelet", "amd64"); got != "https://dl.k8s.io/release/v1.35.4/bin/linux/amd64/kubelet" {
		t.Errorf("ExpandURL: %s", got)
	}
}

// A docker recipe with runtime.criDockerd has a cri-dockerd url input, its version the bare
// number (upstream's file names have no v); without criDockerd, or with containerd, none.
func TestInputsCRIDockerd(t *testing.T) {
	const tmpl = "https://github.com/Mirantis/cri-dockerd/releases/download/v{version}/cri-dockerd-{version}.{arch}.tgz"
	find := func(r *Recipe) (Input, bool) {
		for _, in := range r.Inputs() {
			if in.Name == "cri-dockerd" {
				return in, true
			}
		}
		return Input{}, false
	}
	r := loadT(t, "debian-12")
	r.Runtime.Name = RuntimeDocker
	if in, ok := find(r); ok {
		t.Errorf("docker without criDockerd has a cri-dockerd input: %+v", in)
	}
	src := Source{Type: SourceURL, URL: tmpl, Member: "cri-dockerd/{name}"}
	for _, v := range []string{"0.3.16", "v0.3.16"} {
		r.Runtime.CRIDockerd = &CRIDockerd{Version: v, Source: src}
		in, ok := find(r)
		want := Input{Name: "cri-dockerd", Kind: InputBinary, Source: src, Version: "0.3.16", Package: "cri-dockerd", Arch: "amd64"}
		if !ok || !reflect.DeepEqual(in, want) {
			t.Errorf("version %s:\n got %+v\nwant %+v", v, in, want)
		}
		if got := ExpandURL(in.Source.URL, in.Version, in.Package, in.Arch); got != "https://github.com/Mirantis/cri-dockerd/releases/download/v0.3.16/cri-dockerd-0.3.16.amd64.tgz" {
			t.Errorf("url %s", got)
		}
	}
	// The lock's member is the expanded template: another one is drift, named as such.
	in, _ := find(r)
	a := LockedArtifact{Name: "cri-dockerd", Kind: InputBinary, Source: SourceURL, Version: "0.3.16",
		URL: ExpandURL(tmpl, "0.3.16", "cri-dockerd", "amd64"), Member: "cri-dockerd/cri-dockerd", SHA256: strings.Repeat("a", 64), Size: 1}
	if d := artifactDrift(in, a); d != "" {
		t.Errorf("drift of a matching lock entry: %s", d)
	}
	a.Member = "cri-dockerd"
	if d := artifactDrift(in, a); !strings.Contains(d, `member changed from "cri-dockerd" to "cri-dockerd/cri-dockerd"`) {
		t.Errorf("member drift: %q", d)
	}
	d := r.InputsDigest()
	r.Runtime.CRIDockerd.Source.Member = "cri-dockerd/cri-dockerd-other"
	if r.InputsDigest() == d {
		t.Error("changing source.member left the inputs digest as it was")
	}
	r.Runtime.Name = RuntimeContainerd
	if in, ok := find(r); ok {
		t.Errorf("containerd has a cri-dockerd input: %+v", in)
	}
}

// Inputs and their digest depend on what the recipe asks for, not on the order it is written in.
func TestInputsDeterministic(t *testing.T) {
	a := loadT(t, "debian-12")
	b := loadT(t, "debian-12")
	slices.Reverse(b.Kubernetes.Components)
	slices.Reverse(b.CNI.Plugins)
	slices.Reverse(b.Base.Packages)
	slices.Reverse(b.Runtime.Packages)
	b.Base.Packages = append(b.Base.Packages, "socat") // a repeat adds nothing
	if !reflect.DeepEqual(a.Inputs(), b.Inputs()) {
		t.Error("Inputs depend on the order of the recipe's lists")
	}
	d := a.InputsDigest()
	if d != b.InputsDigest() || d != a.InputsDigest() {
		t.Error("InputsDigest is not stable")
	}
	shuffled := a.Inputs()
	slices.Reverse(shuffled)
	if inputsDigest(shuffled, a.Sysctls, a.Modules, nil) != d {
		t.Error("InputsDigest depends on input order")
	}
	if !strings.HasPrefix(d, "sha256:") || len(d) != 71 {
		t.Errorf("digest %q", d)
	}
	if d == loadT(t, "debian-13").InputsDigest() {
		t.Error("debian-12 and debian-13 have one digest")
	}
	// Node settings no artifact shows are covered too: an edited sysctl or module is drift.
	c := loadT(t, "debian-12")
	c.Sysctls["net.ipv4.ip_forward"] = "0"
	if c.InputsDigest() == d {
		t.Error("a sysctl edit leaves the digest unchanged")
	}
	c = loadT(t, "debian-12")
	c.Modules = c.Modules[1:]
	if c.InputsDigest() == d {
		t.Error("a module edit leaves the digest unchanged")
	}
	// A relaxed secure default is a different image: drift, whatever the order of the list.
	c = loadT(t, "debian-12")
	c.Security = &Security{Relax: []string{RelaxProfiling, RelaxRPFilter}}
	relaxed := c.InputsDigest()
	c.Security.Relax = []string{RelaxRPFilter, RelaxProfiling}
	if relaxed == d || c.InputsDigest() != relaxed {
		t.Error("security.relax is not in the digest, or its order is")
	}
	c.Security.Relax = nil
	if c.InputsDigest() != d {
		t.Error("an empty security section changes the digest")
	}
	// The canonical encoding is pinned: this digest changes only if Input's JSON does.
	fixed := []Input{
		{Name: "kubelet", Kind: InputBinary, Source: Source{Type: SourceGoMod, Module: KubernetesModule}, Version: "1.35", Package: "k8s.io/kubernetes/cmd/kubelet", Arch: "amd64"},
		{Name: "deb/socat", Kind: InputDeb, Source: Source{Type: SourceDeb}, Package: "socat", Suites: []string{"bookworm"}, Arch: "amd64"},
	}
	const golden = "sha256:d744d1aafaeab5a3ee78f2c924f3d0b58ad53316bb276b937c0248efac361ad2"
	if got := inputsDigest(fixed, map[string]string{"net.ipv4.ip_forward": "1"}, []string{"overlay"}, nil); got != golden {
		t.Logf("inputsDigest(fixed) = %s", got)
		t.Errorf("the canonical input encoding changed; if on purpose, update the golden digest")
	}
}

// fakeLock resolves inputs the way the artifacts resolver would, without a network.
func fakeLock(r *Recipe) *Lock {
	exact := map[string]string{"1.35": "v1.35.4", "3.6": "v3.6.16", "1.9": "v1.9.1", "0.28": "v0.28.10", "1.15": "v1.15.0"}
	l := &Lock{Recipe: r.Name, InputsDigest: r.InputsDigest(), SourceDateEpoch: 1767225600}
	ins := r.Inputs()
	for i := len(ins) - 1; i >= 0; i-- { // unsorted on purpose: WriteLock sorts
		in := ins[i]
		a := LockedArtifact{Name: in.Name, Kind: in.Kind, Source: in.Source.Type, Package: in.Package, Main: in.Main, MainSHA256: in.MainSHA256, Size: 1234}
		sum := sha256.Sum256([]byte(in.Name))
		a.SHA256 = hex.EncodeToString(sum[:])
		switch in.Kind {
		case InputBinary:
			a.Version = exact[in.Version]
			a.Module = in.Source.Module + "@" + a.Version
			a.Toolchain = "go1.26.8"
		case InputDeb:
			a.Version = "1.0-1"
			a.Suite = in.Suites[0]
			a.URL = "pool/main/x/" + in.Package + "_1.0-1_amd64.deb"
		}
		l.Artifacts = append(l.Artifacts, a)
	}
	for _, img := range r.BakedImages() {
		sum := sha256.Sum256([]byte(img.Name))
		l.Artifacts = append(l.Artifacts, LockedArtifact{Name: img.Name, Kind: KindImage, Source: "oci", Version: "v1.0.0",
			Package: strings.Join(img.Inputs, ","), Ref: "kubebake.local/" + strings.TrimPrefix(img.Name, "image/") + ":1.0.0",
			Digest: "sha256:" + hex.EncodeToString(sum[:]), SHA256: hex.EncodeToString(sum[:]), Size: 1234})
	}
	return l
}

func TestLockFile(t *testing.T) {
	r := loadT(t, "debian-12")
	l := fakeLock(r)
	dir := t.TempDir()
	p := filepath.Join(dir, "x.lock")
	if err := WriteLock(p, l); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(p)
	if !strings.HasSuffix(string(first), "}\n") || !strings.HasPrefix(string(first), "{\n  \"apiVersion\": \"kubebake.dev/v1alpha1\",\n  \"kind\": \"Lock\",") {
		t.Errorf("lock file layout:\n%.200s", first)
	}
	back, err := ReadLock(p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(back.Artifacts, func(a, b LockedArtifact) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("artifacts not sorted")
	}
	// Writing what was read gives the same bytes; so does writing it again.
	if err := WriteLock(p, back); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(p)
	if string(first) != string(second) {
		t.Error("rewriting the lock changed it")
	}
	sum := sha256.Sum256(first)
	if LockHash(l) != hex.EncodeToString(sum[:]) || LockHash(back) != LockHash(l) {
		t.Error("LockHash is not the sha256 of the file bytes")
	}
	if err := CheckLock(r, back); err != nil {
		t.Errorf("fresh lock: %v", err)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("files in the lock folder: %v", ents)
	}

	// Strict reading.
	bad := filepath.Join(dir, "bad.lock")
	os.WriteFile(bad, []byte(strings.Replace(string(first), `"recipe":`, `"recipee": "x", "recipe":`, 1)), 0o644)
	if _, err := ReadLock(bad); err == nil || !strings.Contains(err.Error(), "recipee") {
		t.Errorf("unknown field in lock: %v", err)
	}
	os.WriteFile(bad, []byte(strings.Replace(string(first), `"kind": "Lock"`, `"kind": "Recipe"`, 1)), 0o644)
	if _, err := ReadLock(bad); err == nil || !strings.Contains(err.Error(), "restore "+bad+" from version control") || !strings.Contains(err.Error(), "kubebake lock --update") {
		t.Errorf("wrong kind: %v", err)
	}
	if _, err := ReadLock(filepath.Join(dir, "none.lock")); err == nil || !strings.Contains(err.Error(), "no lock file") {
		t.Errorf("missing lock: %v", err)
	}
	// A failed write leaves the old lock in place.
	if err := WriteLock(filepath.Join(dir, "nodir", "x.lock"), l); err == nil {
		t.Error("write into a missing folder succeeded")
	}
}

// A lock that cannot be used is an error naming the file and the fix; nothing guesses.
func TestReadBrokenLock(t *testing.T) {
	r := loadT(t, "debian-12")
	data, err := MarshalLock(fakeLock(r))
	if err != nil {
		t.Fatal(err)
	}
	good := string(data)
	// A conflict as git leaves it: two sides of the epoch line.
	epoch := good[strings.Index(good, "  \"sourceDateEpoch\""):]
	epoch = epoch[:strings.IndexByte(epoch, '\n')+1]
	conflicted := strings.Replace(good, epoch,
		"<<<<<<< HEAD\n"+epoch+"=======\n  \"sourceDateEpoch\": 1,\n>>>>>>> other-branch\n", 1)
	diff3 := strings.Replace(good, epoch,
		"<<<<<<< ours\n"+epoch+"||||||| base\n"+epoch+"=======\n"+epoch+">>>>>>> theirs\n", 1)
	crlf := strings.ReplaceAll(conflicted, "\n", "\r\n")
	resolveFix := "resolve the merge conflict in %s (or take one side) and run \"kubebake lock\" again"
	restoreFix := "restore %s from version control, or run \"kubebake lock --update\" to re-pin every input from scratch"
	dir := t.TempDir()
	for _, c := range []struct {
		name, data, fix, detail string
	}{
		{"conflict", conflicted, resolveFix, "line 6"},
		{"diff3", diff3, resolveFix, "line 6"},
		{"crlf", crlf, resolveFix, "line 6"},
		{"only-marker", ">>>>>>>\n", resolveFix, "line 1"},
		{"empty", "", restoreFix, "EOF"},
		{"truncated", good[:len(good)/2], restoreFix, "not a kubebake lock"},
		{"garbage", "not json at all\n", restoreFix, "not a kubebake lock"},
		{"two-objects", good + good, restoreFix, "after the lock object"},
		{"yaml", "apiVersion: kubebake.dev/v1alpha1\nkind: Lock\n", restoreFix, "not a kubebake lock"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".lock")
			if err := os.WriteFile(p, []byte(c.data), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadLock(p)
			if err == nil {
				t.Fatal("read a broken lock")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, p+": ") || !strings.Contains(msg, fmt.Sprintf(c.fix, p)) || !strings.Contains(msg, c.detail) {
				t.Errorf("message: %s", msg)
			}
			if c.fix == restoreFix && strings.Contains(msg, "merge conflict") {
				t.Errorf("not a conflict: %s", msg)
			}
		})
	}
	// An unreadable file (here a folder) names the file and the same fix.
	folder := filepath.Join(dir, "folder.lock")
	os.Mkdir(folder, 0o755)
	if _, err := ReadLock(folder); err == nil || !strings.Contains(err.Error(), folder) || !strings.Contains(err.Error(), fmt.Sprintf(restoreFix, folder)) {
		t.Errorf("unreadable lock: %v", err)
	}
	// Markers inside a JSON string, or not at the start of a line, are no conflict.
	if _, _, ok := conflictMarker([]byte("  \"x\": \"<<<<<<< a\",\n  =======\n")); ok {
		t.Error("a marker inside a line was taken for a conflict")
	}
	if _, _, ok := conflictMarker([]byte("========\n")); ok {
		t.Error("eight = were taken for a conflict marker")
	}
	if _, err := parseLock("ok.lock", data); err != nil {
		t.Errorf("a good lock: %v", err)
	}
}

func TestLockPath(t *testing.T) {
	for in, want := range map[string]string{
		"recipes/debian-12.yaml": "recipes/debian-12.lock",
		"/tmp/x.yml":             "/tmp/x.lock",
		"debian-12":              "recipes/debian-12.lock",
		"my-recipe":              "my-recipe.lock",
	} {
		if got := LockPath(in); got != want {
			t.Errorf("LockPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckLockDrift(t *testing.T) {
	cases := []struct {
		name   string
		change func(r *Recipe, l *Lock)
		drifts []Drift
	}{
		{"component added", func(r *Recipe, l *Lock) {
			r.Kubernetes.Components = append(r.Kubernetes.Components, Component{Name: "kube-dns"})
		}, []Drift{{Name: "kube-dns", What: DriftAdded, Detail: "added"}}},
		{"plugin removed", func(r *Recipe, l *Lock) {
			r.CNI.Plugins = slices.DeleteFunc(r.CNI.Plugins, func(p string) bool { return p == "portmap" })
		}, []Drift{{Name: "cni/portmap", What: DriftRemoved, Detail: "removed"}}},
		{"package added", func(r *Recipe, l *Lock) {
			r.Base.Packages = append(r.Base.Packages, "jq")
		}, []Drift{{Name: "deb/jq", What: DriftAdded, Detail: "added"}}},
		{"version track moved", func(r *Recipe, l *Lock) {
			r.Etcd.Version = "3.5"
		}, []Drift{
			{Name: "etcd", What: DriftChanged, Detail: "version v3.6.16 is outside 3.5"},
			{Name: "etcdctl", What: DriftChanged, Detail: "version v3.6.16 is outside 3.5"},
		}},
		{"exact pin differs", func(r *Recipe, l *Lock) {
			r.CNI.Version = "v1.9.0"
		}, nil}, // every plugin: checked by count below
		{"module changed", func(r *Recipe, l *Lock) {
			r.Kubernetes.Source.Module = "example.com/kubernetes"
			r.Kubernetes.Components = r.Kubernetes.Components[:1]
		}, nil},
		{"source type changed", func(r *Recipe, l *Lock) {
			r.CNI.Source = Source{Type: SourceDeb, Package: "containernetworking-plugins"}
			r.CNI.Plugins = []string{"bridge"}
		}, nil},
		{"suites changed", func(r *Recipe, l *Lock) {
			r.Base.Suites = []string{"bookworm-updates"}
		}, nil},
		{"arch changed: digest only", func(r *Recipe, l *Lock) {
			for i := range l.Artifacts { // pretend the lock had been resolved for arm64
				l.Artifacts[i].Name = strings.Replace(l.Artifacts[i].Name, "amd64", "arm64", 1)
			}
			r.Base.Arch, r.Base.Kernel = "arm64", "linux-image-cloud-arm64"
		}, []Drift{{What: DriftDigest, Detail: "inputs changed (suites, mirror, arch, a source setting, sysctls or modules) since the lock was written"}}},
		{"mirror changed: digest only", func(r *Recipe, l *Lock) {
			r.Base.Mirror = "http://127.0.0.1:8080/debian"
		}, []Drift{{What: DriftDigest, Detail: "inputs changed (suites, mirror, arch, a source setting, sysctls or modules) since the lock was written"}}},
		{"other recipe", func(r *Recipe, l *Lock) {
			l.Recipe = "debian-13"
		}, []Drift{{What: DriftRecipe, Detail: `the lock is for recipe "debian-13", not "debian-12"`}}},
		{"deb pin added", func(r *Recipe, l *Lock) {
			r.Runtime.Packages = []string{"containerd=1.6.20~ds1-1+deb12u3", "runc"}
		}, []Drift{{Name: "deb/containerd", What: DriftChanged, Detail: "version 1.0-1 is not the pinned 1.6.20~ds1-1+deb12u3"}}},
		{"pod network added", func(r *Recipe, l *Lock) {
			l.Artifacts = slices.DeleteFunc(l.Artifacts, func(a LockedArtifact) bool { return a.Name == "flanneld" })
		}, []Drift{{Name: "flanneld", What: DriftAdded, Detail: "added"}}},
		{"dns removed", func(r *Recipe, l *Lock) {
			r.DNS = nil
		}, []Drift{{Name: "coredns", What: DriftRemoved, Detail: "removed"}, {Name: "image/coredns", What: DriftRemoved, Detail: "removed"}}},
		{"kubebake's main changed", func(r *Recipe, l *Lock) {
			for i := range l.Artifacts {
				if l.Artifacts[i].Name == "flanneld" {
					l.Artifacts[i].MainSHA256 = strings.Repeat("ab", 32) // locked with an older main.go
				}
			}
		}, []Drift{{Name: "flanneld", What: DriftChanged, Detail: "is built from kubebake's artifacts/gomain/flanneld/main.go, which changed since the lock was written (sha256 " +
			gomain.SHA256("flanneld")[:12] + ", the lock has abababababab)"}}},
		{"main instead of package", func(r *Recipe, l *Lock) {
			for i := range l.Artifacts {
				if l.Artifacts[i].Name == "coredns" {
					l.Artifacts[i].Main, l.Artifacts[i].MainSHA256 = "", ""
					l.Artifacts[i].Package = "github.com/coredns/coredns"
				}
			}
		}, []Drift{{Name: "coredns", What: DriftChanged, Detail: "is now built from kubebake's artifacts/gomain/coredns/main.go, the lock has package github.com/coredns/coredns"}}},
		{"lock hand-edited", func(r *Recipe, l *Lock) {
			for i := range l.Artifacts {
				if l.Artifacts[i].Name == "kubelet" {
					l.Artifacts[i].Package = "k8s.io/kubernetes/cmd/kubectl"
				}
			}
		}, []Drift{{Name: "kubelet", What: DriftChanged, Detail: "package changed from k8s.io/kubernetes/cmd/kubectl to k8s.io/kubernetes/cmd/kubelet"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := loadT(t, "debian-12")
			l := fakeLock(r)
			c.change(r, l)
			err := CheckLock(r, l)
			var de *DriftError
			if !errors.As(err, &de) {
				t.Fatalf("CheckLock = %v, want a *DriftError", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasSuffix(msg, `; run "kubebake lock recipes/debian-12.yaml"`) ||
				!strings.HasPrefix(msg, "recipes/debian-12.lock does not match recipes/debian-12.yaml: ") {
				t.Errorf("message: %s", msg)
			}
			if c.drifts != nil && !reflect.DeepEqual(de.Drifts, c.drifts) {
				t.Errorf("drifts:\n got %+v\nwant %+v", de.Drifts, c.drifts)
			}
			for _, d := range de.Drifts {
				if d.What == "" || d.Detail == "" {
					t.Errorf("incomplete drift %+v", d)
				}
			}
			if len(de.Drifts) > maxDriftsShown && !strings.Contains(msg, "more") {
				t.Errorf("a long drift list is not shortened: %s", msg)
			}
		})
	}
}

// The committed locks pin what the embedded recipes ask for, including the sha256 of
// kubebake's own mains (artifacts/gomain): editing a main.go without relocking fails here.
func TestEmbeddedLocksMatch(t *testing.T) {
	for _, name := range EmbeddedNames() {
		r := loadT(t, name)
		l, err := ReadRecipeLock(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckLock(r, l); err != nil {
			t.Error(err)
		}
		if l.InputsDigest != r.InputsDigest() {
			t.Errorf("%s: inputs digest %s, the recipe's inputs hash to %s; run kubebake lock", name, l.InputsDigest, r.InputsDigest())
		}
	}
}
