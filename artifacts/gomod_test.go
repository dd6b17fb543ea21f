package artifacts

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// Version lists as the module proxy returned them (2026-11).
var (
	etcdVersions = strings.Fields("v3.5.0-alpha.0 v3.5.0 v3.5.5 v3.5.35 v3.6.0 v3.6.4 v3.6.5 v3.6.8 v3.6.12 v3.6.16 v3.6.13 v3.7.0-beta.0 v3.7.0-rc.0 v3.7.0 v3.7.3 v3.8.0-alpha.0")
	kubeVersions = strings.Fields("v1.13.0 v1.29.6 v1.33.6 v1.33.13 v1.34.0 v1.34.4 v1.35.4 v1.36.1 v1.36.3")
	cniVersions  = strings.Fields("v0.8.6 v0.9.1 v1.0.1 v1.7.1 v1.9.0 v1.9.1")
)

func TestGoModVersionSelection(t *testing.T) {
	for _, tc := range []struct {
		module, constraint string
		versions           []string
		want               string // "" = no match
	}{
		{"k8s.io/kubernetes", "1.35", kubeVersions, "v1.35.4"},
		{"k8s.io/kubernetes", "v1.33", kubeVersions, "v1.33.13"},
		{"k8s.io/kubernetes", "1.37", kubeVersions, ""},
		{"k8s.io/kubernetes", "v1.35.4", kubeVersions, "v1.35.4"},
		{"k8s.io/kubernetes", "1.35.4", kubeVersions, "v1.35.4"},
		{"k8s.io/kubernetes", "v1.35.3", kubeVersions, ""},
		{"go.etcd.io/etcd/server/v3", "3.6", etcdVersions, "v3.6.16"}, // numeric, not string, order
		{"go.etcd.io/etcd/server/v3", "3.7", etcdVersions, "v3.7.3"},  // prereleases excluded
		{"go.etcd.io/etcd/server/v3", "3.8", etcdVersions, ""},        // only a prerelease
		{"go.etcd.io/etcd/server/v3", "v3.7.0-rc.0", etcdVersions, "v3.7.0-rc.0"},
		{"github.com/containernetworking/plugins", "1.9", cniVersions, "v1.9.1"},
		{"github.com/containernetworking/plugins", "0.9", cniVersions, "v0.9.1"},
		{"example.com/old", "2.1", []string{"v1.0.0", "v2.0.0+incompatible", "v2.1.0+incompatible", "v2.1.1-pre+incompatible"}, "v2.1.0+incompatible"},
	} {
		c, err := recipes.ParseConstraint(tc.constraint)
		if err != nil {
			t.Errorf("%s %q: %v", tc.module, tc.constraint, err)
			continue
		}
		if err := checkMajor(tc.module, c); err != nil {
			t.Errorf("%s %q: %v", tc.module, tc.constraint, err)
			continue
		}
		got, ok := newestMatching(c.String(), tc.versions)
		if tc.want == "" {
			if ok {
				t.Errorf("%s %q: got %s, want no match", tc.module, tc.constraint, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%s %q: got %q, want %s", tc.module, tc.constraint, got, tc.want)
		}
	}
}

func TestGoModMajorSuffix(t *testing.T) {
	for _, tc := range []struct {
		module, constraint string
		ok                 bool
	}{
		{"go.etcd.io/etcd/server/v3", "3.6", true},
		{"go.etcd.io/etcd/server/v3", "2.6", false},
		{"go.etcd.io/etcd/server/v3", "v4.0.1", false},
		{"gopkg.in/yaml.v3", "3.0", true},
		{"gopkg.in/yaml.v3", "1.4", false},
		{"k8s.io/kubernetes", "1.35", true},
		{"example.com/v1", "1.2", true},  // /v1 is not a major suffix
		{"example.com/old", "2.1", true}, // +incompatible: the version list decides
	} {
		c, err := recipes.ParseConstraint(tc.constraint)
		if err != nil {
			t.Fatal(err)
		}
		err = checkMajor(tc.module, c)
		if (err == nil) != tc.ok {
			t.Errorf("%s %s: %v", tc.module, tc.constraint, err)
		}
		if err != nil && !strings.Contains(err.Error(), "major version suffix") {
			t.Errorf("%s %s: error gives no hint: %v", tc.module, tc.constraint, err)
		}
	}
}

func TestGoModSortVersions(t *testing.T) {
	vs := []string{"v3.6.16", "v3.6.4", "v3.7.0", "v3.7.0-rc.0", "junk", "v3.6.13", "v2.0.0+incompatible"}
	sortVersions(vs)
	want := []string{"junk", "v2.0.0+incompatible", "v3.6.4", "v3.6.13", "v3.6.16", "v3.7.0-rc.0", "v3.7.0"}
	if !reflect.DeepEqual(vs, want) {
		t.Errorf("got %v, want %v", vs, want)
	}
}

func TestGoModGenerateGoMod(t *testing.T) {
	for _, tc := range []struct{ name, version string }{
		{"staging", "v1.35.4"},
		{"sibling", "v3.6.16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join("testdata", "gomod", tc.name+".go.mod")
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parseGoMod(src, data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := buildGoMod(f, tc.version)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("testdata", "gomod", tc.name+".want.go.mod"))
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("generated go.mod:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestGoModParseGoMod(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "gomod", "staging.go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := parseGoMod("staging.go.mod", data)
	if err != nil {
		t.Fatal(err)
	}
	if f.Module != "example.com/kube" || f.Go != "1.25.0" || !reflect.DeepEqual(f.Godebug, []string{"default=go1.25"}) {
		t.Errorf("module/go/godebug: %q %q %q", f.Module, f.Go, f.Godebug)
	}
	if f.Require["example.com/quoted"] != "v0.0.0" || f.Require["github.com/davecgh/go-spew"] != "v1.1.1" {
		t.Errorf("require: %v", f.Require)
	}
	if len(f.Replace) != 5 {
		t.Errorf("replace: %v", f.Replace)
	}

	for _, bad := range []string{
		"module x\nrequire (\n a v1.0.0\n",
		"require a v1.0.0\n",
		"module x\nrequire a\n",
		"module x\nreplace a => \n",
		"module \"x\n",
	} {
		if _, err := parseGoMod("bad.mod", []byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestGoModToolsGo(t *testing.T) {
	got := buildToolsGo([]string{"k8s.io/kubernetes/cmd/kubelet", "k8s.io/kubernetes/cmd/kubectl"})
	if !strings.HasPrefix(got, "//go:build tools\n") || !strings.Contains(got, "\t_ \"k8s.io/kubernetes/cmd/kubectl\"\n") {
		t.Errorf("tools.go:\n%s", got)
	}
}

func TestGoModLDFlags(t *testing.T) {
	date := time.Date(2026, 4, 15, 18, 1, 22, 0, time.UTC)
	for _, tc := range []struct {
		module string
		st     moduleStamp
		want   string
	}{
		{"k8s.io/kubernetes", moduleStamp{Version: "v1.35.4", Time: date.In(time.FixedZone("x", 3600))},
			"-s -w -buildid=" +
				" -X k8s.io/component-base/version.gitVersion=v1.35.4" +
				" -X k8s.io/component-base/version.gitMajor=1" +
				" -X k8s.io/component-base/version.gitMinor=35" +
				" -X k8s.io/component-base/version.gitCommit=" +
				" -X k8s.io/component-base/version.gitTreeState=clean" +
				" -X k8s.io/component-base/version.buildDate=2026-04-15T18:01:22Z"},
		{"k8s.io/kubernetes", moduleStamp{Version: "v1.35.4", Commit: "abc123", Time: date},
			"-s -w -buildid=" +
				" -X k8s.io/component-base/version.gitVersion=v1.35.4" +
				" -X k8s.io/component-base/version.gitMajor=1" +
				" -X k8s.io/component-base/version.gitMinor=35" +
				" -X k8s.io/component-base/version.gitCommit=abc123" +
				" -X k8s.io/component-base/version.gitTreeState=clean" +
				" -X k8s.io/component-base/version.buildDate=2026-04-15T18:01:22Z"},
		{"github.com/containernetworking/plugins", moduleStamp{Version: "v1.9.1", Time: date},
			"-s -w -buildid= -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v1.9.1"},
		{"go.etcd.io/etcd/server/v3", moduleStamp{Version: "v3.6.16", Time: date},
			"-s -w -buildid="},
		{"go.etcd.io/etcd/server/v3", moduleStamp{Version: "v3.6.16", Commit: "deadbeef", Time: date},
			"-s -w -buildid= -X go.etcd.io/etcd/api/v3/version.GitSHA=deadbeef"},
		{"example.com/unknown", moduleStamp{Version: "v0.1.0", Time: date}, "-s -w -buildid="},
	} {
		if got := goModLDFlags(tc.module, tc.st); got != tc.want {
			t.Errorf("%s %+v:\n got %s\nwant %s", tc.module, tc.st, got, tc.want)
		}
	}
}

func TestGoModExecName(t *testing.T) {
	for pkg, want := range map[string]string{
		"k8s.io/kubernetes/cmd/kubelet":                                "kubelet",
		"go.etcd.io/etcd/server/v3":                                    "server",
		"go.etcd.io/etcd/etcdctl/v3":                                   "etcdctl",
		"github.com/containernetworking/plugins/plugins/main/loopback": "loopback",
		"example.com/tool/v1":                                          "v1",
		"example.com/v2":                                               "example.com",
		"v2":                                                           "v2",
	} {
		if got := execName(pkg); got != want {
			t.Errorf("execName(%q) = %q, want %q", pkg, got, want)
		}
	}
	got := nameBatches([]string{"a/x/tool", "a/y/tool", "a/z/other", "a/w/tool"})
	want := [][]string{{"a/x/tool", "a/z/other"}, {"a/y/tool"}, {"a/w/tool"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("nameBatches: %v, want %v", got, want)
	}
}

// noGoSource is a gomod source whose go command does not exist: anything that tries to run
// go fails, which proves that a path runs none.
func noGoSource(t testing.TB) (*GoModSource, *Cache) {
	t.Helper()
	c, err := OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := newGoModSource(c)
	s.goCmd = filepath.Join(t.TempDir(), "no-such-go")
	return s, c
}

func kubeInput(name, version string) recipes.Input {
	return recipes.Input{
		Name: name, Kind: recipes.InputBinary, Version: version,
		Source:  recipes.Source{Type: recipes.SourceGoMod, Module: "k8s.io/kubernetes"},
		Package: "k8s.io/kubernetes/cmd/" + name,
	}
}

func kubeLocked(name, version, sha string) recipes.LockedArtifact {
	return recipes.LockedArtifact{
		Name: name, Kind: recipes.InputBinary, Source: recipes.SourceGoMod, Version: version,
		Module: "k8s.io/kubernetes@" + version, ModuleSum: "h1:x=", Package: "k8s.io/kubernetes/cmd/" + name,
		Toolchain: "go1.26.8", SHA256: sha, Size: 10,
	}
}

func TestGoModResolveKeepsLockedWithoutGo(t *testing.T) {
	s, _ := noGoSource(t)
	ctx := context.Background()
	sha := strings.Repeat("a", 64)
	inputs := []recipes.Input{kubeInput("kubelet", "1.35"), kubeInput("kubectl", "v1.35.4")}
	prev := []recipes.LockedArtifact{kubeLocked("kubectl", "v1.35.4", sha), kubeLocked("kubelet", "v1.35.4", sha)}
	got, err := s.Resolve(ctx, inputs, prev, false)
	if err != nil {
		t.Fatalf("resolve with an unchanged lock ran go: %v", err)
	}
	if !reflect.DeepEqual(got, []recipes.LockedArtifact{prev[1], prev[0]}) {
		t.Errorf("kept entries changed:\n%+v", got)
	}

	// A changed input, an update, or a stale entry are resolved again (and here fail because
	// there is no go command).
	for name, tc := range map[string]struct {
		in     recipes.Input
		prev   recipes.LockedArtifact
		update bool
	}{
		"track moved":     {kubeInput("kubelet", "1.36"), kubeLocked("kubelet", "v1.35.4", sha), false},
		"update":          {kubeInput("kubelet", "1.35"), kubeLocked("kubelet", "v1.35.4", sha), true},
		"package changed": {kubeInput("kubelet", "1.35"), func() recipes.LockedArtifact { a := kubeLocked("kubelet", "v1.35.4", sha); a.Package += "x"; return a }(), false},
		"no sha":          {kubeInput("kubelet", "1.35"), kubeLocked("kubelet", "v1.35.4", ""), false},
	} {
		_, err := s.Resolve(ctx, []recipes.Input{tc.in}, []recipes.LockedArtifact{tc.prev}, tc.update)
		if err == nil || !strings.Contains(err.Error(), "go command") {
			t.Errorf("%s: want a go-not-found error, got %v", name, err)
		}
	}
}

func TestGoModResolveBadInputs(t *testing.T) {
	s, _ := noGoSource(t)
	bad := map[string]recipes.Input{
		"outside module": {Name: "x", Kind: "binary", Version: "1.35", Package: "k8s.io/other/cmd/x", Source: recipes.Source{Type: "gomod", Module: "k8s.io/kubernetes"}},
		"no module":      {Name: "x", Kind: "binary", Version: "1.35", Package: "k8s.io/other/cmd/x", Source: recipes.Source{Type: "gomod"}},
		"floating":       {Name: "x", Kind: "binary", Version: "latest", Package: "k8s.io/kubernetes/cmd/x", Source: recipes.Source{Type: "gomod", Module: "k8s.io/kubernetes"}},
		"arm64":          {Name: "x", Kind: "binary", Version: "1.35", Arch: "arm64", Package: "k8s.io/kubernetes/cmd/x", Source: recipes.Source{Type: "gomod", Module: "k8s.io/kubernetes"}},
		"wrong major":    {Name: "etcd", Kind: "binary", Version: "2.3", Package: "go.etcd.io/etcd/server/v3", Source: recipes.Source{Type: "gomod", Module: "go.etcd.io/etcd/server/v3"}},
		"deb kind":       {Name: "x", Kind: "deb", Version: "1.35", Package: "k8s.io/kubernetes/cmd/x", Source: recipes.Source{Type: "gomod", Module: "k8s.io/kubernetes"}},
		"url type":       {Name: "x", Kind: "binary", Version: "1.35", Package: "k8s.io/kubernetes/cmd/x", Source: recipes.Source{Type: "url", Module: "k8s.io/kubernetes"}},
	}
	for name, in := range bad {
		_, err := s.Resolve(context.Background(), []recipes.Input{in}, nil, false)
		if err == nil || strings.Contains(err.Error(), "go command") || !strings.Contains(err.Error(), `"`+in.Name+`"`) {
			t.Errorf("%s: want an input error naming %q, got %v", name, in.Name, err)
		}
	}
}

func TestGoModFetchWarmRunsNoGo(t *testing.T) {
	s, c := noGoSource(t)
	arts := warmArtifacts(t, c)
	got, err := s.Fetch(context.Background(), arts)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range arts {
		if got[a.Name] != c.BlobPath(a.SHA256) {
			t.Errorf("%s: path %q", a.Name, got[a.Name])
		}
	}
	// A missing blob needs a build: without go that is a clear error, not a wrong path.
	missing := kubeLocked("kube-proxy", "v1.35.4", strings.Repeat("b", 64))
	if _, err := s.Fetch(context.Background(), append(arts, missing)); err == nil || !strings.Contains(err.Error(), "go command") {
		t.Errorf("fetch of a missing blob: %v", err)
	}
}

// warmArtifacts files nine small blobs (the default recipe's gomod artifacts) in c.
func warmArtifacts(t testing.TB, c *Cache) []recipes.LockedArtifact {
	t.Helper()
	var arts []recipes.LockedArtifact
	for _, n := range []string{"kubelet", "kube-proxy", "kubeadm", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "loopback"} {
		f := filepath.Join(t.TempDir(), n)
		if err := os.WriteFile(f, []byte("binary "+n), 0o755); err != nil {
			t.Fatal(err)
		}
		sum, _, err := c.PutFile(f)
		if err != nil {
			t.Fatal(err)
		}
		arts = append(arts, kubeLocked(n, "v1.35.4", sum))
	}
	return arts
}

func BenchmarkGoModFetchWarm(b *testing.B) {
	s, c := noGoSource(b)
	arts := warmArtifacts(b, c)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Fetch(ctx, arts); err != nil {
			b.Fatal(err)
		}
	}
}

func TestGoModMismatchMessage(t *testing.T) {
	a := kubeLocked("kubelet", "v1.35.4", strings.Repeat("a", 64))
	a.Toolchain = "go1.26.7"
	msg := mismatchError(a, "k8s.io/kubernetes@v1.35.4", "go1.26.8", strings.Repeat("b", 64)).Error()
	for _, want := range []string{"kubelet built from k8s.io/kubernetes@v1.35.4 with go1.26.8 has sha256 bbbb", "the lock says aaaa", "locked with go1.26.7", "kubebake lock --update"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestGoModIndex(t *testing.T) {
	s, c := noGoSource(t)
	work := t.TempDir()
	f := filepath.Join(t.TempDir(), "kubelet")
	os.WriteFile(f, []byte("kubelet"), 0o755)
	sum, _, err := c.PutFile(f)
	if err != nil {
		t.Fatal(err)
	}
	plan := &buildPlan{info: moduleInfo{Path: "k8s.io/kubernetes", Version: "v1.35.4", Sum: "h1:x="}, toolchain: "go1.26.8", flagsHash: "f"}
	pkg := "k8s.io/kubernetes/cmd/kubelet"
	res := &buildResult{bins: map[string]builtBinary{}}
	if s.fromIndex(work, plan, []string{pkg}, res) {
		t.Fatal("hit in an empty index")
	}
	idx := readGoModIndex(work)
	idx.Entries[plan.indexKey(pkg)] = builtBinary{Package: pkg, SHA256: sum, Size: 7}
	if err := writeGoModIndex(work, idx); err != nil {
		t.Fatal(err)
	}
	if !s.fromIndex(work, plan, []string{pkg}, res) || res.bins[pkg].SHA256 != sum {
		t.Fatalf("miss after writing the index: %+v", res)
	}
	// Another toolchain or other flags are other keys.
	other := *plan
	other.toolchain = "go1.26.9"
	if s.fromIndex(work, &other, []string{pkg}, &buildResult{bins: map[string]builtBinary{}}) {
		t.Error("index hit across toolchains")
	}
	// An index entry whose blob left the cache is a miss.
	os.Remove(c.BlobPath(sum))
	if s.fromIndex(work, plan, []string{pkg}, &buildResult{bins: map[string]builtBinary{}}) {
		t.Error("index hit without the blob")
	}
}
