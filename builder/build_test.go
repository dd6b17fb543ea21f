package builder

// Heavy tests: they build the default recipe for real (mmdebstrap from this machine's Debian
// mirror, the lock's artifacts from the cache, mke2fs, qemu-img) and boot it under QEMU.
// Skipped under -short. The artifact cache is the user's ($KUBEBAKE_CACHE or the default), so
// a warm cache (make demo, or an earlier run) keeps them to minutes.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
	"github.com/kubebake/kubebake/verify"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// buildInputs is everything Build needs for the default recipe, prepared once per test run.
type buildInputs struct {
	recipe *recipes.Recipe
	lock   *recipes.Lock
	layer  *roles.Layer
	open   roles.OpenFunc
	cache  *artifacts.Cache
	mirror string
	debs   map[string]string // the lock's package set in the cache, by sha256
	// security is the security archive of this machine (the recipe's -security suite).
	security string
}

var (
	inputsOnce sync.Once
	inputs     *buildInputs
	inputsErr  error
	shared     struct {
		once sync.Once
		dir  string
		res  *Result
		err  error
	}
)

func heavy(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a real image: not under -short")
	}
	for _, tool := range []string{"mmdebstrap", "mke2fs", "qemu-img", "sgdisk", "fsck.fat", "e2fsck", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run make deps", tool)
		}
	}
}

// defaultInputs loads debian-12 and its lock, fetches the artifacts into the cache and
// renders the layer, as `kubebake build` does.
func defaultInputs(t testing.TB) *buildInputs {
	t.Helper()
	inputsOnce.Do(func() {
		ctx := context.Background()
		in := &buildInputs{}
		var err error
		defer func() { inputs, inputsErr = in, err }()
		if in.recipe, err = recipes.Load("debian-12"); err != nil {
			return
		}
		if in.lock, err = recipes.ReadRecipeLock(in.recipe); err != nil {
			return
		}
		if err = recipes.CheckLock(in.recipe, in.lock); err != nil {
			return
		}
		if in.cache, err = artifacts.OpenCache(""); err != nil {
			return
		}
		srcs, e := artifacts.RecipeSources(in.cache, in.recipe)
		if err = e; err != nil {
			return
		}
		paths, e := artifacts.Fetch(ctx, in.lock, srcs)
		if err = e; err != nil {
			return
		}
		if in.debs, err = artifacts.FetchPackages(ctx, in.lock, srcs, "recipes/debian-12.lock"); err != nil {
			return
		}
		if in.layer, err = roles.Render(in.recipe, in.lock); err != nil {
			return
		}
		in.open = func(name string) (io.ReadCloser, error) {
			p, ok := paths[name]
			if !ok {
				return nil, fmt.Errorf("no artifact %s", name)
			}
			return os.Open(p)
		}
		if in.mirror, err = artifacts.SystemDebianMirror(); err != nil {
			return
		}
		if in.security, err = artifacts.SystemSecurityMirror(); err != nil {
			return
		}
	})
	if inputsErr != nil {
		t.Fatalf("preparing the default recipe: %v", inputsErr)
	}
	return inputs
}

func (in *buildInputs) options(out string) Options {
	return Options{Recipe: in.recipe, Lock: in.lock, Layer: in.layer, Open: in.open, Debs: in.debs, Store: in.cache, Mirror: in.mirror, SecurityMirror: in.security, OutDir: out, Formats: []string{"raw", "qcow2"}}
}

// sharedBuild is one build of the default recipe that several tests inspect.
func sharedBuild(t *testing.T) (string, *Result) {
	t.Helper()
	in := defaultInputs(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "kubebake-build-test-")
		if shared.err != nil {
			return
		}
		// The one pipeline, as `kubebake build debian-12` runs it: load, lint, lock, fetch,
		// render, bake, publish.
		shared.res, shared.err = Run(context.Background(), Request{Recipe: "debian-12", OutDir: filepath.Join(shared.dir, "out"),
			Formats: []string{"raw", "qcow2"}, Cache: in.cache})
	})
	if shared.err != nil {
		t.Fatalf("build: %v", shared.err)
	}
	return filepath.Join(shared.dir, "out"), shared.res
}

func outputSum(r *Result, format string) string {
	for _, o := range r.Outputs {
		if o.Format == format {
			return o.SHA256
		}
	}
	return ""
}

// TestBuildReproducible builds the lock a second time into a fresh folder (the rootfs comes
// from the cache), this time from prepared options rather than the pipeline's front, and
// wants the same bytes. A third build goes into the first one's folder: the new set replaces
// the old in one switch (new inodes) and the folder's other files are carried over.
func TestBuildReproducible(t *testing.T) {
	heavy(t)
	out1, res1 := sharedBuild(t)
	in := defaultInputs(t)
	out2 := filepath.Join(t.TempDir(), "out")
	res2, err := Build(context.Background(), in.options(out2))
	if err != nil {
		t.Fatal(err)
	}
	if !res2.RootfsCached {
		t.Error("the second build did not take the rootfs from the cache")
	}
	for _, f := range []string{"raw", "qcow2"} {
		a, b := outputSum(res1, f), outputSum(res2, f)
		if a == "" || a != b {
			t.Errorf("%s differs between two builds of one lock: %s vs %s", f, a, b)
		}
	}
	// The files themselves, not just what the results say.
	a, _ := fileSHA256(filepath.Join(out1, "debian-12.raw"))
	b, _ := fileSHA256(filepath.Join(out2, "debian-12.raw"))
	if a != b || a != outputSum(res1, "raw") {
		t.Errorf("raw images differ: %s vs %s", a, b)
	}
	for _, name := range []string{SBOMName} {
		x, _ := os.ReadFile(filepath.Join(out1, name))
		y, _ := os.ReadFile(filepath.Join(out2, name))
		if string(x) != string(y) {
			t.Errorf("%s differs between builds", name)
		}
	}
	t.Logf("raw sha256 %s; second build %.1fs: %v", a, res2.Seconds, res2.Stages)

	notes := filepath.Join(out1, "notes.txt")
	if err := os.WriteFile(notes, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(filepath.Join(out1, "debian-12.raw"))
	res3, err := Run(context.Background(), Request{Recipe: "debian-12", OutDir: out1, Formats: []string{"raw", "qcow2"}, Cache: in.cache})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(filepath.Join(out1, "debian-12.raw"))
	if outputSum(res3, "raw") != a || os.SameFile(before, after) {
		t.Errorf("rebuild into the same folder: raw %s (want %s), same inode %v", outputSum(res3, "raw"), a, os.SameFile(before, after))
	}
	if b, err := os.ReadFile(notes); err != nil || string(b) != "mine" {
		t.Errorf("a file of the output folder was lost by the rebuild: %q, %v", b, err)
	}
	left, _ := filepath.Glob(workPrefix(out1) + "*")
	if len(left) > 0 {
		t.Errorf("work folders left: %v", left)
	}
}

// debugfs runs a debugfs request against the root filesystem of a raw image.
func debugfs(t *testing.T, raw string, l Layout, request string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", request, fmt.Sprintf("%s?offset=%d", raw, l.RootStart)).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", request, err, out)
	}
	// Drop debugfs's version banner.
	lines := strings.SplitAfterN(string(out), "\n", 2)
	if strings.HasPrefix(lines[0], "debugfs ") && len(lines) == 2 {
		return lines[1]
	}
	return string(out)
}

// TestBuildWellFormed checks the image with independent tools: sgdisk, fsck.fat, e2fsck,
// debugfs.
func TestBuildWellFormed(t *testing.T) {
	heavy(t)
	out, res := sharedBuild(t)
	raw := filepath.Join(out, "debian-12.raw")
	var m Manifest
	data, err := os.ReadFile(filepath.Join(out, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	// Its readers take it too: package manifest (apiVersion and kind checked) and verify's
	// loader, each with the recipe, lock hash and outputs this build reported.
	if mm, err := manifest.Read(filepath.Join(out, ManifestName)); err != nil {
		t.Errorf("manifest.Read: %v", err)
	} else if mm.Recipe.Name != res.Recipe || mm.LockHash != res.LockHash || !slices.Equal(mm.Outputs, res.Outputs) || len(mm.Outputs) == 0 {
		t.Errorf("manifest.Read: recipe %s, lock hash %s, outputs %v; the build said %s, %s, %v", mm.Recipe.Name, mm.LockHash, mm.Outputs, res.Recipe, res.LockHash, res.Outputs)
	}
	if vm, err := verify.LoadManifest(filepath.Join(out, ManifestName)); err != nil {
		t.Errorf("verify.LoadManifest: %v", err)
	} else if vm.Recipe.Name != res.Recipe || vm.LockHash != res.LockHash || !slices.Equal(vm.Outputs, res.Outputs) || len(vm.Spec(verify.RoleMinion).Binaries) == 0 {
		t.Errorf("verify.LoadManifest: recipe %s, lock hash %s, outputs %v; the build said %s, %s, %v", vm.Recipe.Name, vm.LockHash, vm.Outputs, res.Recipe, res.LockHash, res.Outputs)
	}
	l, err := NewLayout(m.Image.Size)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := exec.Command("sgdisk", "-v", raw).CombinedOutput(); err != nil || !strings.Contains(string(o), "No problems found") {
		t.Errorf("sgdisk -v: %v\n%s", err, o)
	}
	if o, _ := exec.Command("sgdisk", "-i", "2", raw).CombinedOutput(); !strings.Contains(string(o), "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709") || !strings.Contains(strings.ToLower(string(o)), m.Image.RootPartUUID) {
		t.Errorf("root partition type/GUID:\n%s", o)
	}
	esp := filepath.Join(t.TempDir(), "esp.img")
	extract(t, raw, esp, l.ESPStart, l.ESPSize)
	if o, err := exec.Command("fsck.fat", "-n", esp).CombinedOutput(); err != nil || strings.Contains(string(o), "Fixing") {
		t.Errorf("fsck.fat -n: %v\n%s", err, o)
	}
	if o, err := exec.Command("mtype", "-i", esp, "::/loader/entries/kubebake.conf").CombinedOutput(); err != nil || !strings.Contains(string(o), "root=PARTUUID="+m.Image.RootPartUUID) {
		t.Errorf("boot entry: %v\n%s", err, o)
	}
	if o, err := exec.Command("e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", raw, l.RootStart)).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, o)
	}

	if got := debugfs(t, raw, l, "cat /etc/machine-id"); strings.TrimSpace(got) != "" {
		t.Errorf("/etc/machine-id is not empty: %q", got)
	}
	if got := debugfs(t, raw, l, "ls -l /etc/ssh"); strings.Contains(got, "ssh_host_") {
		t.Errorf("SSH host keys baked in:\n%s", got)
	}
	for _, line := range strings.Split(debugfs(t, raw, l, "cat /etc/shadow"), "\n") {
		if f := strings.Split(line, ":"); len(f) > 1 && !strings.HasPrefix(f[1], "*") && !strings.HasPrefix(f[1], "!") {
			t.Errorf("the password of %s is not locked", f[0])
		}
	}
	for _, dir := range []string{"/var/lib/cloud", "/var/lib/apt/lists"} {
		got := debugfs(t, raw, l, "ls -p "+dir)
		for _, line := range strings.Split(got, "\n") {
			// ls -p: /inode/mode/uid/gid/name/size/
			f := strings.Split(line, "/")
			if len(f) > 5 && f[5] != "." && f[5] != ".." && f[5] != "partial" {
				t.Errorf("%s holds %s", dir, f[5])
			}
		}
	}
	if got := debugfs(t, raw, l, "ls -p /var/log"); strings.Contains(got, ".log/") {
		t.Errorf("/var/log holds logs:\n%s", got)
	}
	// The layer's contract files, each as the manifest says.
	want := []string{roles.SysctlPath, roles.ModulesPath, ImageManifestPath, ImageSBOMPath, roles.ReleasePath}
	for _, u := range m.Units {
		if len(u.Roles) > 0 {
			want = append(want, roles.DropInPath(u.Name))
		}
	}
	for _, p := range want {
		if got := debugfs(t, raw, l, "stat "+p); !strings.Contains(got, "Type: regular") {
			t.Errorf("%s is not in the image:\n%s", p, got)
		}
	}
	if got := debugfs(t, raw, l, "cat "+roles.SysctlPath); !strings.Contains(got, "net.bridge.bridge-nf-call-iptables") {
		t.Errorf("sysctl.d: %q", got)
	}
	if got := debugfs(t, raw, l, "cat "+roles.ModulesPath); !strings.Contains(got, "br_netfilter") {
		t.Errorf("modules-load.d: %q", got)
	}
	inImage := debugfs(t, raw, l, "cat "+ImageManifestPath)
	var mi Manifest
	if err := json.Unmarshal([]byte(inImage), &mi); err != nil {
		t.Fatalf("the image's manifest: %v", err)
	}
	if mi.Outputs != nil || mi.Build != nil || mi.LockHash != res.LockHash || len(mi.Packages) != len(m.Packages) {
		t.Error("the image's manifest is not the build's without outputs and build info")
	}
	if len(m.Packages) < 100 {
		t.Errorf("only %d packages in the manifest", len(m.Packages))
	}
	if got := debugfs(t, raw, l, "cat /etc/fstab"); !strings.Contains(got, "PARTUUID="+m.Image.RootPartUUID) {
		t.Errorf("fstab: %q", got)
	}
}

// TestBuildBoots starts the raw image under QEMU (UEFI, OVMF, TCG) on a throwaway overlay and
// waits for a login prompt on the serial console.
func TestBuildBoots(t *testing.T) {
	heavy(t)
	out, _ := sharedBuild(t)
	raw := filepath.Join(out, "debian-12.raw")
	before, _ := fileSHA256(raw)
	log, err := bootToLogin(t, raw, 8*time.Minute)
	if err != nil {
		t.Fatalf("%v\nserial console tail:\n%s", err, tail(log, 3000))
	}
	if after, _ := fileSHA256(raw); after != before {
		t.Error("booting changed the image")
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func ovmf() (code, vars string, err error) {
	for _, pair := range [][2]string{
		{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
		{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	} {
		if _, err := os.Stat(pair[0]); err == nil {
			return pair[0], pair[1], nil
		}
	}
	return "", "", errors.New("OVMF not installed: run make deps")
}

// bootToLogin boots raw and returns the serial log once it shows a login prompt.
func bootToLogin(t *testing.T, raw string, timeout time.Duration) (string, error) {
	t.Helper()
	code, vars, err := ovmf()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	overlay := filepath.Join(dir, "overlay.qcow2")
	if err := run.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", raw, overlay, "8G").Run(ctx); err != nil {
		t.Fatal(err)
	}
	varsCopy := filepath.Join(dir, "vars.fd")
	data, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(varsCopy, data, 0o644)
	serial := filepath.Join(dir, "serial.log")
	qemu := run.Command("qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg", "-m", "2048", "-smp", "2",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,unit=1,file="+varsCopy,
		"-drive", "if=virtio,format=qcow2,file="+overlay,
		"-nic", "user,restrict=on,model=virtio-net-pci",
		"-display", "none", "-serial", "file:"+serial, "-no-reboot")
	qctx, qcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- qemu.Run(qctx) }()
	defer func() {
		qcancel() // kills QEMU with its process group
		<-done
	}()
	start := time.Now()
	for {
		b, _ := os.ReadFile(serial)
		s := string(b)
		if strings.Contains(s, "login:") {
			t.Logf("login prompt after %s", time.Since(start).Round(time.Second))
			return s, nil
		}
		if strings.Contains(s, "Kernel panic") {
			return s, errors.New("kernel panic")
		}
		select {
		case err := <-done:
			done <- err
			return s, fmt.Errorf("QEMU exited before a login prompt: %v", err)
		case <-ctx.Done():
			return s, fmt.Errorf("no login prompt within %s", timeout)
		case <-time.After(time.Second):
		}
	}
}

// assertEmpty fails when dir holds anything (a failed build must leave nothing behind).
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
	work, _ := filepath.Glob(workPrefix(dir) + "*")
	for _, w := range work {
		t.Errorf("work folder left behind: %s", w)
	}
}

func assertNoRootfsLeftovers(t *testing.T, cache *artifacts.Cache) {
	t.Helper()
	dir, _ := cache.Scratch("rootfs")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".build-") {
			t.Errorf("left behind in the rootfs cache: %s", e.Name())
		}
	}
}

// TestBuildHermetic simulates mirror churn. The lock's rootfs is made again (its cached
// tarball removed) with the mirror and the security archive gone (a server on 127.0.0.1 that
// answers 404 to every request): the package set comes from the cache, and the raw image is byte-identical to
// the shared build's. With an empty cache instead, nothing can be built, and the error names
// every missing .deb and the lock.
func TestBuildHermetic(t *testing.T) {
	heavy(t)
	_, res1 := sharedBuild(t)
	in := defaultInputs(t)
	if len(in.lock.Packages) < 100 {
		t.Fatalf("the default lock pins %d packages: not the rootfs's whole set", len(in.lock.Packages))
	}
	ctx := context.Background()
	var asked atomic.Int64
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.NotFound(w, r)
	}))
	defer gone.Close()
	moved := *in.recipe
	moved.Base.Mirror, moved.Base.SecurityMirror = gone.URL+"/debian", gone.URL+"/debian-security"
	srcs, err := artifacts.RecipeSources(in.cache, &moved)
	if err != nil {
		t.Fatal(err)
	}
	debs, err := artifacts.FetchPackages(ctx, in.lock, srcs, "recipes/debian-12.lock")
	if err != nil {
		t.Fatalf("the cache holds the package set, yet: %v", err)
	}

	spec, err := NewRootfsSpec(ctx, in.recipe, in.lock, in.mirror, "", in.debs)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := in.cache.Scratch("rootfs")
	if err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".tar", ".json"} {
		os.Remove(filepath.Join(dir, spec.Key()+ext))
	}
	v := *in
	v.mirror, v.debs = gone.URL+"/debian", debs
	out := filepath.Join(t.TempDir(), "out")
	opts := v.options(out)
	opts.Formats = []string{"raw"}
	res2, err := Build(ctx, opts)
	if err != nil {
		t.Fatalf("build with the mirror gone: %v", err)
	}
	if res2.RootfsCached {
		t.Fatal("the rootfs came from the cache: mmdebstrap did not run again")
	}
	if a, b := outputSum(res1, "raw"), outputSum(res2, "raw"); a == "" || a != b {
		t.Errorf("the raw image differs once the mirror is gone: %s vs %s", a, b)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the gone mirror was asked %d times", n)
	}
	t.Logf("rebuilt with the mirror gone: raw %s, %.1fs %v", outputSum(res2, "raw"), res2.Seconds, res2.Stages)

	empty, err := artifacts.OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srcs, err = artifacts.RecipeSources(empty, &moved)
	if err != nil {
		t.Fatal(err)
	}
	_, err = artifacts.FetchPackages(ctx, in.lock, srcs, "recipes/debian-12.lock")
	var md *artifacts.MissingDebsError
	if !errors.As(err, &md) || len(md.Packages) != len(in.lock.Packages) || !strings.Contains(err.Error(), "recipes/debian-12.lock pins") ||
		!strings.Contains(err.Error(), "libc6 ") {
		t.Fatalf("empty cache, mirror gone: err = %v", err)
	}
	t.Logf("empty cache: %.300s...", err)
}

// variant returns the default inputs with a lock that no cached rootfs matches.
func variant(in *buildInputs, mutate func(r *recipes.Recipe, l *recipes.Lock)) *buildInputs {
	v := *in
	r := *in.recipe
	r.Base.Packages = append([]string(nil), in.recipe.Base.Packages...)
	l := *in.lock
	l.Artifacts = append([]recipes.LockedArtifact(nil), in.lock.Artifacts...)
	l.SourceDateEpoch = in.lock.SourceDateEpoch + 1 // a new rootfs key
	mutate(&r, &l)
	v.recipe, v.lock = &r, &l
	return &v
}

func TestBuildBadInput(t *testing.T) {
	heavy(t)
	in := defaultInputs(t)
	// The recipe and lock name a package the mirror does not have; pinnedSet says whether the
	// lock keeps its package set.
	unknownPackage := func(pinnedSet bool) func(r *recipes.Recipe, l *recipes.Lock) {
		return func(r *recipes.Recipe, l *recipes.Lock) {
			r.Base.Packages = append(r.Base.Packages, "kubebake-no-such-package")
			l.Artifacts = append(l.Artifacts, recipes.LockedArtifact{Name: "deb/kubebake-no-such-package", Kind: recipes.InputDeb, Source: recipes.SourceDeb, Version: "1.0-1"})
			if !pinnedSet {
				l.Packages = nil
			}
		}
	}
	t.Run("package outside the package set", func(t *testing.T) {
		v := variant(in, unknownPackage(true))
		out := filepath.Join(t.TempDir(), "out")
		_, err := Build(context.Background(), v.options(out))
		if err == nil || !strings.Contains(err.Error(), "the lock's package set lacks kubebake-no-such-package 1.0-1") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
		assertEmpty(t, out)
	})
	// A lock without a package set (written before kubebake pinned it) builds from the mirror:
	// apt's refusals are explained.
	t.Run("package does not exist", func(t *testing.T) {
		v := variant(in, unknownPackage(false))
		out := filepath.Join(t.TempDir(), "out")
		_, err := Build(context.Background(), v.options(out))
		if err == nil || !strings.Contains(err.Error(), "package kubebake-no-such-package does not exist") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
		assertEmpty(t, out)
		assertNoRootfsLeftovers(t, in.cache)
	})
	t.Run("mirror refuses", func(t *testing.T) {
		for _, status := range []int{http.StatusForbidden, http.StatusNotFound} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
			v := variant(in, func(r *recipes.Recipe, l *recipes.Lock) { l.Packages = nil })
			v.mirror = srv.URL + "/debian"
			out := filepath.Join(t.TempDir(), "out")
			_, err := Build(context.Background(), v.options(out))
			srv.Close()
			if err == nil || !strings.Contains(err.Error(), "the Debian mirror refused a download") {
				t.Fatalf("HTTP %d: err = %v", status, err)
			}
			if strings.Contains(err.Error(), srv.URL) {
				t.Errorf("the error names the mirror: %v", err)
			}
			t.Logf("HTTP %d: %v", status, err)
			assertEmpty(t, out)
			assertNoRootfsLeftovers(t, in.cache)
		}
	})
	t.Run("output folder not writable", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "file")
		os.WriteFile(file, nil, 0o644)
		_, err := Build(context.Background(), in.options(filepath.Join(file, "out")))
		if err == nil || !strings.Contains(err.Error(), "output folder") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
		// A folder nobody may write in: root ignores modes, so make it immutable.
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o555)
		if err := exec.Command("chattr", "+i", ro).Run(); err != nil && os.Geteuid() == 0 {
			// The file-as-parent case above is checked; the unwritable folder is not.
			testenv.Missing(t, "chattr +i ("+err.Error()+")", "install e2fsprogs (make deps) and keep TMPDIR on a filesystem with immutable files (ext4, tmpfs)")
		}
		defer exec.Command("chattr", "-i", ro).Run()
		_, err = Build(context.Background(), in.options(ro))
		if err == nil || !strings.Contains(err.Error(), "is not writable") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
		assertEmpty(t, ro)
	})
	t.Run("disk full", func(t *testing.T) {
		sharedBuild(t) // the rootfs is cached
		// Mounting a small tmpfs needs root.
		testenv.NeedRoot(t)
		dir := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=300m", "kubebake-test", dir).CombinedOutput(); err != nil {
			testenv.Missing(t, "mount -t tmpfs", fmt.Sprintf("run as root where mounts are allowed (%v %s)", err, strings.TrimSpace(string(out))))
		}
		defer exec.Command("umount", dir).Run()
		// The output folder inside the small filesystem: its work folder is beside it there.
		_, err := Build(context.Background(), in.options(filepath.Join(dir, "out")))
		if err == nil || !strings.HasPrefix(strings.TrimPrefix(err.Error(), "build rootfs: "), "no space left on "+dir+": need about ") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
		assertEmpty(t, filepath.Join(dir, "out"))
		// Past the estimate: the disk fills up while the root tarball is written.
		skipSpaceCheck = true
		defer func() { skipSpaceCheck = false }()
		_, err = Build(context.Background(), in.options(filepath.Join(dir, "out")))
		if err == nil || !strings.Contains(err.Error(), "no space left on "+dir+": need about ") {
			t.Fatalf("err = %v", err)
		}
		t.Log(err)
		assertEmpty(t, filepath.Join(dir, "out"))
		// The small filesystem itself is refused as an output folder: it is a mount point.
		_, err = Build(context.Background(), in.options(dir))
		if err == nil || !strings.Contains(err.Error(), "is a mount point") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestBuildCancel cancels a build in the middle of mke2fs: nothing may be left in the output
// folder and no mke2fs may survive.
func TestBuildCancel(t *testing.T) {
	heavy(t)
	sharedBuild(t) // the rootfs is cached
	in := defaultInputs(t)
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := in.options(out)
	opts.Progress = func(e Event) {
		if e.Stage == "root-ext4" && e.Kind == EventProgress && e.Message == "mke2fs" {
			go func() { time.Sleep(time.Second); cancel() }()
		}
	}
	_, err := Build(ctx, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	assertEmpty(t, out)
	if o, _ := exec.Command("pgrep", "-f", "mke2fs.*"+out).Output(); len(o) > 0 {
		t.Errorf("mke2fs still running: %s", o)
	}
}

// BenchmarkBuildWarm is the build of the default recipe with the rootfs and artifacts cached
// (raw and qcow2). Stage times are reported as metrics. It runs only with
// KUBEBAKE_BENCH_BUILD=1: scripts/bench.sh times the same build through the CLI, and a
// "go test -bench . ./..." should not spend minutes on it twice.
func BenchmarkBuildWarm(b *testing.B) {
	if os.Getenv("KUBEBAKE_BENCH_BUILD") == "" {
		b.Skip("set KUBEBAKE_BENCH_BUILD=1 (scripts/bench.sh times the warm build through the CLI)")
	}
	heavy(b)
	in := defaultInputs(b)
	// Warm the rootfs cache outside the timing.
	if _, err := Build(context.Background(), in.options(b.TempDir())); err != nil {
		b.Fatal(err)
	}
	stages := map[string]float64{}
	b.ResetTimer()
	for range b.N {
		res, err := Build(context.Background(), in.options(b.TempDir()))
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range res.Stages {
			stages[s.Name] += s.Seconds
		}
	}
	for name, sec := range stages {
		b.ReportMetric(sec/float64(b.N), name+"-s")
	}
}

// TestBuildCancelRootfs cancels a build while mmdebstrap runs: its process group is killed
// and neither the output folder nor the rootfs cache keeps anything of it.
func TestBuildCancelRootfs(t *testing.T) {
	heavy(t)
	in := defaultInputs(t)
	v := variant(in, func(r *recipes.Recipe, l *recipes.Lock) {})
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := v.options(out)
	var once sync.Once
	opts.Progress = func(e Event) {
		if e.Stage == "rootfs" && e.Kind == EventLog && strings.Contains(e.Message, "downloading packages") {
			once.Do(func() { go func() { time.Sleep(3 * time.Second); cancel() }() })
		}
	}
	_, err := Build(ctx, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	assertEmpty(t, out)
	assertNoRootfsLeftovers(t, in.cache)
	time.Sleep(500 * time.Millisecond)
	dir, _ := in.cache.Scratch("rootfs")
	if o, _ := exec.Command("pgrep", "-f", "mmdebstrap.*"+dir).Output(); len(o) > 0 {
		t.Errorf("mmdebstrap still running: %s", o)
	}
}
