package artifacts

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// These tests build real binaries from the Go module proxy; they are skipped under -short.
// They use the default Go build cache (that is the point of keeping it warm) unless a test
// says otherwise.

func needGoBuild(t *testing.T, need time.Duration) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds from the Go module proxy; skipped under -short")
	}
	testenv.NeedTool(t, "go")
	testenv.NeedTime(t, need)
}

func cniInput(plugin, version string) recipes.Input {
	return recipes.Input{
		Name: "cni/" + plugin, Kind: recipes.InputBinary, Version: version,
		Source:  recipes.Source{Type: recipes.SourceGoMod, Module: "github.com/containernetworking/plugins"},
		Package: "github.com/containernetworking/plugins/plugins/main/" + plugin,
	}
}

func openTestCache(t *testing.T) *Cache {
	t.Helper()
	c, err := OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGoModCNIReproducible builds the CNI loopback plugin twice, in two fresh caches, the
// second time with an empty, private Go build cache so that nothing is shared but the module
// download cache, and compares the sha256.
func TestGoModCNIReproducible(t *testing.T) {
	needGoBuild(t, 8*time.Minute)
	ctx := context.Background()

	s1 := newGoModSource(openTestCache(t))
	start := time.Now()
	locked, err := s1.Resolve(ctx, []recipes.Input{cniInput("loopback", "1.9")}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first build (shared Go build cache): %v", time.Since(start).Round(time.Millisecond))
	a := locked[0]
	toolchain, _ := exec.Command("go", "env", "GOVERSION").Output()
	want := recipes.LockedArtifact{
		Name: "cni/loopback", Kind: "binary", Source: "gomod", Version: "v1.9.1",
		Module: "github.com/containernetworking/plugins@v1.9.1", ModuleSum: a.ModuleSum,
		Package:   "github.com/containernetworking/plugins/plugins/main/loopback",
		Toolchain: strings.TrimSpace(string(toolchain)), SHA256: a.SHA256, Size: a.Size,
	}
	if a != want || !strings.HasPrefix(a.ModuleSum, "h1:") || !ValidSHA256(a.SHA256) || a.Size < 1<<20 {
		t.Fatalf("locked entry:\n got %+v\nwant %+v", a, want)
	}
	t.Logf("loopback %s: sha256 %s, %d bytes, module sum %s", a.Version, a.SHA256, a.Size, a.ModuleSum)

	// The binary reports its version.
	p1, ok, err := s1.cache.Lookup(a.SHA256)
	if err != nil || !ok {
		t.Fatalf("built binary not in the cache: %v", err)
	}
	cmd := exec.Command(executable(t, p1, "loopback"))
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no CNI_COMMAND: it prints its about string
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stderr.String(), "CNI loopback plugin v1.9.1") {
		t.Errorf("loopback prints %q (%v), want it to name v1.9.1", stderr.String(), err)
	} else {
		t.Logf("loopback: %s", strings.TrimSpace(stderr.String()))
	}

	// lock --update with nothing new finds the binary in the build index: no rebuild.
	s1.beforeBuild = func() { t.Error("lock --update rebuilt an unchanged module") }
	start = time.Now()
	updated, err := s1.Resolve(ctx, []recipes.Input{cniInput("loopback", "1.9")}, locked, true)
	if err != nil || updated[0] != a {
		t.Errorf("update: %v %+v", err, updated)
	}
	t.Logf("resolve --update from the build index: %v", time.Since(start).Round(time.Millisecond))

	// Resolving again with the lock and no update keeps it without running go.
	s1.goCmd = filepath.Join(t.TempDir(), "no-such-go")
	again, err := s1.Resolve(ctx, []recipes.Input{cniInput("loopback", "1.9")}, locked, false)
	if err != nil || again[0] != a {
		t.Errorf("re-resolve: %v %+v", err, again)
	}

	// Second build: another cache, another Go build cache. Fetch refuses a different sha256.
	s2 := newGoModSource(openTestCache(t))
	s2.env = []string{"GOCACHE=" + t.TempDir()}
	start = time.Now()
	paths, err := s2.Fetch(ctx, locked)
	if err != nil {
		t.Fatalf("second build differs: %v", err)
	}
	t.Logf("second build (empty private Go build cache): %v", time.Since(start).Round(time.Millisecond))
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(paths["cni/loopback"])
	if !bytes.Equal(b1, b2) {
		t.Error("the two builds are not byte-identical")
	}

	// A warm Fetch runs no go command.
	s2.goCmd = filepath.Join(t.TempDir(), "no-such-go")
	if _, err := s2.Fetch(ctx, locked); err != nil {
		t.Errorf("warm fetch: %v", err)
	}

	// A lock from another toolchain gets an error that says so.
	bad := a
	bad.SHA256 = strings.Repeat("0", 64)
	bad.Toolchain = "go1.20.1"
	s3 := newGoModSource(s2.cache)
	_, err = s3.Fetch(ctx, []recipes.LockedArtifact{bad})
	if err == nil || !strings.Contains(err.Error(), "cni/loopback built from github.com/containernetworking/plugins@v1.9.1 with go") ||
		!strings.Contains(err.Error(), "locked with go1.20.1") {
		t.Errorf("mismatch error: %v", err)
	}
}

// TestGoModCancel cancels a build while go build runs: the command and its children die,
// and neither the cache nor the work folder holds a binary.
func TestGoModCancel(t *testing.T) {
	needGoBuild(t, 5*time.Minute)
	c := openTestCache(t)
	s := newGoModSource(c)
	gocache := t.TempDir() // empty, so the build takes long enough to be cancelled
	s.env = []string{"GOCACHE=" + gocache}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	s.beforeBuild = func() {
		close(started)
		go func() {
			time.Sleep(3 * time.Second)
			cancel()
		}()
	}
	art := recipes.LockedArtifact{
		Name: "cni/bridge", Kind: "binary", Source: "gomod", Version: "v1.9.1",
		Module:  "github.com/containernetworking/plugins@v1.9.1",
		Package: "github.com/containernetworking/plugins/plugins/main/bridge",
		SHA256:  strings.Repeat("0", 64),
	}
	start := time.Now()
	_, err := s.Fetch(ctx, []recipes.LockedArtifact{art})
	select {
	case <-started:
	default:
		t.Fatalf("go build never started: %v", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	t.Logf("cancelled after %v: %v", time.Since(start).Round(time.Millisecond), err)

	// No process of the build survives (they all carry our private GOCACHE).
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := processesWithEnv("GOCACHE=" + gocache)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build processes still running after cancel: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	blobs, err := c.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 0 {
		t.Errorf("cache holds %d blobs after a cancelled build", len(blobs))
	}
	ents, _ := os.ReadDir(filepath.Join(c.Dir(), blobsDir))
	for _, e := range ents {
		t.Errorf("cache blob folder holds %s after a cancelled build", e.Name())
	}
	work, _ := c.Scratch("gomod/github.com/containernetworking/plugins@v1.9.1")
	if _, err := os.Stat(filepath.Join(work, "bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work folder still has bin/: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work folder still has go's tmp/: %v", err)
	}
	if idx := readGoModIndex(work); len(idx.Entries) != 0 {
		t.Errorf("index has entries after a cancelled build: %v", idx.Entries)
	}
}

// executable copies a cache blob (mode 0444) to an executable file named name.
func executable(t *testing.T, blob, name string) string {
	t.Helper()
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// processesWithEnv lists the pids whose environment holds kv.
func processesWithEnv(kv string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, v := range bytes.Split(env, []byte{0}) {
			if string(v) == kv {
				cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				pids = append(pids, e.Name()+":"+strings.ReplaceAll(string(cmdline), "\x00", " "))
				break
			}
		}
	}
	return pids
}

var kubeComponents = []string{"kubelet", "kube-proxy", "kubeadm", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// TestGoModKubernetes resolves every gomod input of the embedded debian-12 recipe (the seven
// Kubernetes components in one go build, etcd, etcdctl, the CNI plugins) from their minor
// tracks in a fresh artifact cache (the Go build cache is shared, as it is meant to be),
// checks their version output, and compares each sha256 with the committed lock.
func TestGoModKubernetes(t *testing.T) {
	needGoBuild(t, 40*time.Minute)
	ctx := context.Background()
	r, err := recipes.Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	var inputs []recipes.Input
	for _, in := range r.Inputs() {
		if in.Source.Type == recipes.SourceGoMod {
			inputs = append(inputs, in)
		}
	}
	if len(inputs) < len(kubeComponents)+2 {
		t.Fatalf("debian-12 has only %d gomod inputs", len(inputs))
	}

	s1 := newGoModSource(openTestCache(t))
	start := time.Now()
	locked, err := s1.Resolve(ctx, inputs, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	var total int64
	for _, a := range locked {
		t.Logf("%-24s %-8s %10d bytes  sha256 %s", a.Name, a.Version, a.Size, a.SHA256)
		total += a.Size
		want := "k8s.io/kubernetes@v1.35.4"
		switch {
		case a.Name == "etcd":
			want = "go.etcd.io/etcd/server/v3@v3.6.16"
		case a.Name == "etcdctl":
			want = "go.etcd.io/etcd/etcdctl/v3@v3.6.16"
		case strings.HasPrefix(a.Name, "cni/"):
			want = "github.com/containernetworking/plugins@v1.9.1"
		case a.Name == "coredns":
			want = "github.com/coredns/coredns@" + a.Version
		case a.Name == "flanneld":
			want = "github.com/flannel-io/flannel@" + a.Version
		}
		if (a.Name == "coredns" || a.Name == "flanneld") && a.MainSHA256 == "" {
			t.Errorf("%s: built from kubebake's own main, but the lock records no main sha256: %+v", a.Name, a)
		}
		if a.Module != want || !strings.HasSuffix(want, "@"+a.Version) {
			t.Errorf("%s: %+v, want module %s", a.Name, a, want)
		}
	}
	t.Logf("first build: %v, %d bytes in all", first.Round(time.Second), total)

	paths, err := s1.Fetch(ctx, locked)
	if err != nil {
		t.Fatal(err)
	}
	for bin, want := range map[string][]string{
		"kubelet": {"--version"},
		"kubectl": {"version", "--client"},
		"kubeadm": {"version", "-o", "short"},
		"etcd":    {"--version"},
		"etcdctl": {"version"},
	} {
		out, err := exec.Command(executable(t, paths[bin], bin), want...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %v: %v\n%s", bin, want, err, out)
			continue
		}
		t.Logf("%s %s: %s", bin, strings.Join(want, " "), strings.TrimSpace(string(out)))
		expect := "v1.35.4"
		switch bin {
		case "etcd":
			expect = "etcd Version: 3.6.16"
		case "etcdctl":
			expect = "etcdctl version: 3.6.16"
		}
		if bin == "kubelet" {
			expect = "Kubernetes v1.35.4"
		}
		if !strings.Contains(string(out), expect) {
			t.Errorf("%s %v prints %q, want %q", bin, want, out, expect)
		}
	}
	out, _ := exec.Command(executable(t, paths["kubectl"], "kubectl"), "version", "--client", "-o", "json").Output()
	if !strings.Contains(string(out), `"buildDate": "2026-04-15T18:01:22Z"`) || !strings.Contains(string(out), `"gitTreeState": "clean"`) {
		t.Errorf("kubectl version -o json lacks the stamped build date or tree state:\n%s", out)
	}

	// Reproducible: this build, in a fresh cache, gives the bytes the committed lock pins
	// (made in another run, possibly on another machine, with the same toolchain).
	committed, err := recipes.ReadRecipeLock(r)
	if err != nil {
		t.Fatal(err)
	}
	pinned := map[string]recipes.LockedArtifact{}
	for _, a := range committed.Artifacts {
		pinned[a.Name] = a
	}
	for _, a := range locked {
		p, ok := pinned[a.Name]
		switch {
		case !ok:
			t.Errorf("%s is not in the committed lock", a.Name)
		case p.Toolchain != a.Toolchain:
			t.Logf("%s: locked with %s, built with %s: sha256 not compared", a.Name, p.Toolchain, a.Toolchain)
		case p.SHA256 != a.SHA256 || p.Size != a.Size:
			t.Errorf("%s built to sha256 %s (%d bytes), the committed lock pins %s (%d bytes)", a.Name, a.SHA256, a.Size, p.SHA256, p.Size)
		}
	}

	// Warm: no go command at all.
	s1.goCmd = filepath.Join(t.TempDir(), "no-such-go")
	start = time.Now()
	if _, err := s1.Fetch(ctx, locked); err != nil {
		t.Fatal(err)
	}
	t.Logf("warm fetch of %d artifacts: %v", len(locked), time.Since(start))
}
