package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/builder"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// upstream serves, on 127.0.0.1, a Kubernetes-style release tree and a tiny Debian archive
// signed by a throw-away key, for a copy of debian-12 whose binaries come from url sources.
type upstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	gets  int
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	data, ok := u.files[r.URL.Path]
	u.gets++
	u.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(data)
}

func (u *upstream) requests() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gets
}

// signer makes a gpg key; it returns a clear-signer and the keyring for gpgv.
func signer(t *testing.T) (func([]byte) []byte, string) {
	testenv.NeedTools(t, "gpg", "gpgv")
	home, err := os.MkdirTemp("", "kb-gpg-")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gpg := func(stdin []byte, args ...string) []byte {
		c := run.Command("gpg", append([]string{"--batch", "--homedir", home, "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		if stdin != nil {
			c.Stdin = bytes.NewReader(stdin)
		}
		out, err := c.Output(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Cleanup(func() {
		run.Command("gpgconf", "--homedir", home, "--kill", "all").Run(ctx)
		os.RemoveAll(home)
	})
	gpg(nil, "--quick-gen-key", "kubebake cli test <cli@kubebake.invalid>", "ed25519", "sign", "never")
	keyring := filepath.Join(t.TempDir(), "keyring.gpg")
	os.WriteFile(keyring, gpg(nil, "--export"), 0o644)
	return func(b []byte) []byte { return gpg(b, "--clearsign", "--output", "-") }, keyring
}

// cliRecipe writes the recipe file and starts its upstream.
func cliRecipe(t *testing.T) (recipePath string, up *upstream) {
	t.Helper()
	return cliRecipeWith(t, nil)
}

// cliRecipeWith is cliRecipe with the recipe's text edited before it is written (edit nil:
// as it is). A cri-dockerd input (runtime.criDockerd) gets upstream's release tarball under
// /github/ (the recipe's mirror rule for https://github.com/), without a .sha256 beside it.
func cliRecipeWith(t *testing.T, edit func(string) string) (recipePath string, up *upstream) {
	t.Helper()
	// The synthetic archive holds the named packages and nothing they depend on: the package
	// set is those packages (mmdebstrap's own resolution is tested in builder).
	resolvePackageSet = namedPackagesOnly
	t.Cleanup(func() { resolvePackageSet = builder.ResolvePackageSet })
	sign, keyring := signer(t)
	t.Setenv("KUBEBAKE_DEB_KEYRING", keyring)
	up = &upstream{files: map[string][]byte{}}
	up.srv = httptest.NewServer(up)
	t.Cleanup(up.srv.Close)

	src, _ := os.ReadFile("../../recipes/debian-12.yaml")
	y := string(src)
	for _, mod := range []string{"k8s.io/kubernetes", "go.etcd.io/etcd/server/v3", "github.com/containernetworking/plugins", "github.com/flannel-io/flannel", "github.com/coredns/coredns"} {
		y = strings.Replace(y, "type: gomod\n    module: "+mod, "type: url\n    url: https://dl.k8s.io/release/{version}/bin/linux/{arch}/{name}", 1)
	}
	y = strings.Replace(y, "name: debian-12", "name: cli-test", 1)
	y = strings.Replace(y, "  # mirror: leave it out", "  mirror: "+up.srv.URL+"/debian\n  securityMirror: "+up.srv.URL+"/debian-security\n  # mirror: leave it out", 1)
	y += "\nmirrors:\n  - prefix: https://dl.k8s.io/\n    replacement: " + up.srv.URL + "/k8s/\n"
	y += "  - prefix: https://github.com/\n    replacement: " + up.srv.URL + "/github/\n"
	if edit != nil {
		y = edit(y)
	}
	recipePath = filepath.Join(t.TempDir(), "cli.yaml")
	if err := os.WriteFile(recipePath, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	parsed, err := recipes.Load(recipePath)
	if err != nil {
		t.Fatal(err)
	}

	newest := map[string]string{"1.35": "v1.35.4", "3.6": "v3.6.5", "1.9": "v1.9.1", "0.28": "v0.28.10", "1.15": "v1.15.0"}
	local := func(u string) string {
		u = strings.Replace(u, "https://dl.k8s.io/", up.srv.URL+"/k8s/", 1)
		p, _ := url.Parse(strings.Replace(u, "https://github.com/", up.srv.URL+"/github/", 1))
		return p.Path
	}
	var pkgs strings.Builder
	for _, in := range parsed.Inputs() {
		switch {
		case in.Name == recipes.CRIServerDockerd:
			up.files[local(artifacts.ExpandURL(in.Source.URL, in.Version, in.Package, in.Arch))] = criDockerdTarball(t)
		case in.Source.Type == recipes.SourceURL:
			v := newest[in.Version]
			su, _ := artifacts.StableURL(in.Source.URL, in.Version)
			up.files[local(su)] = []byte(v + "\n")
			bu := artifacts.ExpandURL(in.Source.URL, v, in.Package, in.Arch)
			data := []byte(in.Name + " " + v)
			if in.Name == recipes.CoreDNSBinary {
				data = staticBinary(t) // baked into the CoreDNS image: any static x86-64 ELF
			}
			up.files[local(bu)] = data
			up.files[local(bu)+".sha256"] = []byte(hexSum(data))
		case in.Source.Type == recipes.SourceDeb:
			data := []byte(in.Package + " deb")
			if in.Kind == recipes.InputBinary { // busybox, taken out of a real .deb
				data = debWith(t, in.Package, "bin/"+in.Name, staticBinary(t))
			}
			pool := fmt.Sprintf("pool/main/%c/%s/%s_1.0-1_amd64.deb", in.Package[0], in.Package, in.Package)
			up.files["/debian/"+pool] = data
			fmt.Fprintf(&pkgs, "Package: %s\nVersion: 1.0-1\nArchitecture: amd64\nFilename: %s\nSize: %d\nSHA256: %s\n\n", in.Package, pool, len(data), hexSum(data))
		}
	}
	// The security archive, an archive of its own, has a fix of socat.
	fix := []byte("socat deb, security fix")
	fixPool := "pool/updates/main/s/socat/socat_1.0-1+deb12u1_amd64.deb"
	up.files["/debian-security/"+fixPool] = fix
	security := fmt.Sprintf("Package: socat\nVersion: 1.0-1+deb12u1\nArchitecture: amd64\nFilename: %s\nSize: %d\nSHA256: %s\n\n", fixPool, len(fix), hexSum(fix))
	for _, suite := range parsed.Base.Suites {
		idx, archive := []byte(pkgs.String()), "/debian"
		switch {
		case strings.HasSuffix(suite, "-security"):
			idx, archive = []byte(security), "/debian-security"
		case suite != parsed.Base.Release:
			idx = nil // the updates suite is empty
		}
		up.files[archive+"/dists/"+suite+"/main/binary-amd64/Packages"] = idx
		rel := fmt.Sprintf("Suite: %s\nCodename: %s\nDate: %s\nSHA256:\n %s %d main/binary-amd64/Packages\n",
			suite, suite, time.Now().UTC().Format(time.RFC1123), hexSum(idx), len(idx))
		up.files[archive+"/dists/"+suite+"/InRelease"] = sign([]byte(rel))
	}
	return recipePath, up
}

func TestLockFetchCommands(t *testing.T) {
	recipePath, up := cliRecipe(t)
	cache := t.TempDir()
	lockPath := strings.TrimSuffix(recipePath, ".yaml") + ".lock"
	t.Setenv("SOURCE_DATE_EPOCH", "")

	out, logs, err := kb(t, "lock", recipePath, "--update=false", "-o", "text", "--cache-dir", cache)
	if err != nil {
		t.Fatalf("lock: %v\n%s", err, logs)
	}
	if !strings.Contains(out, "artifacts and 22 Debian packages pinned") {
		t.Errorf("lock output %q", out)
	}
	first, err := os.ReadFile(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	// The package set: the 22 named packages (namedPackagesOnly), each with its file; socat
	// is the security archive's fix.
	if l, err := recipes.ReadLock(lockPath); err != nil || len(l.Packages) != 22 || l.Packages[0].SHA256 == "" || l.Packages[0].URL == "" {
		t.Errorf("the lock's package set: %v, %d packages", err, len(l.Packages))
	} else if i := slices.IndexFunc(l.Packages, func(p recipes.LockedPackage) bool { return p.Name == "socat" }); i < 0 || l.Packages[i].Version != "1.0-1+deb12u1" || l.Packages[i].Suite != "bookworm-security" {
		t.Errorf("socat is not pinned from the security suite: %+v", l.Packages)
	}
	if bytes.Contains(first, []byte("127.0.0.1")) {
		t.Error("the lock names the local mirror")
	}

	// Again: byte-identical, and says so.
	out, _, err = kb(t, "lock", recipePath, "--update=false", "-o", "text", "--cache-dir", cache)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(lockPath)
	if !bytes.Equal(first, again) || !strings.Contains(out, "unchanged") {
		t.Errorf("re-lock changed the lock or did not say so: %q", out)
	}

	// A new patch upstream: --update moves the Kubernetes binaries and says how.
	for p, data := range up.files {
		if strings.Contains(p, "/v1.35.4/") {
			moved := strings.Replace(p, "/v1.35.4/", "/v1.35.5/", 1)
			if strings.HasSuffix(p, ".sha256") {
				continue
			}
			nd := append(bytes.Clone(data), '!')
			up.files[moved] = nd
			up.files[moved+".sha256"] = []byte(hexSum(nd))
		}
	}
	up.files["/k8s/release/stable-1.35.txt"] = []byte("v1.35.5\n")
	out, _, err = kb(t, "lock", recipePath, "--update=true", "-o", "json", "--cache-dir", cache)
	if err != nil {
		t.Fatal(err)
	}
	var res lockResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !res.Written || len(res.Changes) != 7 || res.Changes[len(res.Changes)-1].String() != "kubelet v1.35.4 -> v1.35.5" {
		t.Errorf("lock --update: %+v", res)
	}

	// Fetch: cold then warm, a table on stdout, timing on stderr, no request when warm.
	out, logs, err = kb(t, "fetch", recipePath, "-o", "text", "--cache-dir", cache)
	if err != nil {
		t.Fatalf("fetch: %v\n%s", err, logs)
	}
	// Partly warm: locking built the baked images, so they and what they are made of (busybox,
	// coredns) are in the cache already.
	if !strings.Contains(out, "kubelet") || !strings.Contains(out, "v1.35.5") || !strings.Contains(logs, "(partly warm)") {
		t.Errorf("cold fetch: %s\n%s", out, logs)
	}
	// The fix came from the security archive (the main mirror does not have it).
	if c, err := artifacts.OpenCache(cache); err != nil {
		t.Fatal(err)
	} else if _, ok, _ := c.Lookup(hexSum([]byte("socat deb, security fix"))); !ok {
		t.Error("fetch did not get socat's fix from the security archive")
	}
	before := up.requests()
	_, logs, err = kb(t, "fetch", recipePath, "-o", "json", "--cache-dir", cache)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs, "(warm)") || up.requests() != before {
		t.Errorf("warm fetch: %d requests; %s", up.requests()-before, logs)
	}

	// cache verify finds everything intact; prune with the recipe keeps what it pins.
	out, _, err = kb(t, "cache", "verify", "-o", "text", "--cache-dir", cache)
	if err != nil || !strings.Contains(out, "blobs intact") {
		t.Errorf("verify: %v %s", err, out)
	}
	out, _, err = kb(t, "cache", "prune", recipePath, "--all=false", "-o", "json", "--cache-dir", cache)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = kb(t, "fetch", recipePath, "-o", "text", "--cache-dir", cache)
	if err != nil || up.requests() != before {
		t.Errorf("prune removed pinned blobs: %v, %d requests", err, up.requests()-before)
	}

	// A recipe that no longer matches its lock is refused by fetch.
	y, _ := os.ReadFile(recipePath)
	os.WriteFile(recipePath, bytes.Replace(y, []byte("    - ethtool\n"), nil, 1), 0o644)
	_, _, err = kb(t, "fetch", recipePath, "-o", "text", "--cache-dir", cache)
	if err == nil || !strings.Contains(err.Error(), "deb/ethtool removed") || !strings.Contains(err.Error(), "kubebake lock") {
		t.Errorf("drifted recipe: %v", err)
	}
	// Locking it drops ethtool from the package set too (the set is resolved afresh), and
	// says so.
	out, _, err = kb(t, "lock", recipePath, "--update=false", "-o", "text", "--cache-dir", cache)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := recipes.ReadLock(lockPath); err != nil || slices.ContainsFunc(l.Packages, func(p recipes.LockedPackage) bool { return p.Name == "ethtool" }) {
		t.Errorf("ethtool is still in the package set of the relocked recipe (%v)", err)
	}
	if !strings.Contains(out, "package/ethtool 1.0-1 (removed)") {
		t.Errorf("lock does not say ethtool left the package set: %s", out)
	}
}

func TestLockWritesNothingOnError(t *testing.T) {
	recipePath, up := cliRecipe(t)
	cache := t.TempDir()
	lockPath := strings.TrimSuffix(recipePath, ".yaml") + ".lock"
	delete(up.files, "/k8s/release/stable-1.35.txt")
	_, _, err := kb(t, "lock", recipePath, "--update=false", "-o", "text", "--cache-dir", cache)
	if err == nil || !strings.Contains(err.Error(), "stable-1.35.txt") || !strings.Contains(err.Error(), "nothing written") {
		t.Errorf("err %v", err)
	}
	if _, err := os.Stat(lockPath); !os.IsNotExist(err) {
		t.Errorf("a lock was written: %v", err)
	}
	// A recipe that fails lint is refused before anything is resolved.
	y, _ := os.ReadFile(recipePath)
	os.WriteFile(recipePath, bytes.Replace(y, []byte("driver: overlayfs"), []byte("driver: devicemapper"), 1), 0o644)
	_, _, err = kb(t, "lock", recipePath, "--update=false", "-o", "text", "--cache-dir", cache)
	if err == nil || !strings.Contains(err.Error(), "lint") {
		t.Errorf("lint failure: %v", err)
	}
	if _, err := os.Stat(lockPath); !os.IsNotExist(err) {
		t.Errorf("a lock was written: %v", err)
	}
}

// A lock that cannot be read is refused, not guessed at: the error names the file and the fix
// and the file is left as it is; --update replaces it by pinning every input from scratch.
func TestLockRefusesBrokenLock(t *testing.T) {
	recipePath, _ := cliRecipe(t)
	cache := t.TempDir()
	lockPath := strings.TrimSuffix(recipePath, ".yaml") + ".lock"
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if _, logs, err := kb(t, "lock", recipePath, "--update=false", "-o", "text", "--cache-dir", cache); err != nil {
		t.Fatalf("lock: %v\n%s", err, logs)
	}
	good, err := recipes.ReadLock(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(lockPath)

	// Two branches locked different epochs and git left both.
	i := bytes.Index(first, []byte("  \"sourceDateEpoch\""))
	j := i + bytes.IndexByte(first[i:], '\n') + 1
	conflicted := slices.Concat(first[:i], []byte("<<<<<<< HEAD\n"), first[i:j], []byte("=======\n  \"sourceDateEpoch\": 1,\n>>>>>>> relock\n"), first[j:])
	garbage := first[:len(first)/2]
	for _, c := range []struct {
		name string
		data []byte
		want []string
	}{
		{"conflict", conflicted, []string{"merge conflict", "resolve the merge conflict in " + lockPath + " (or take one side)", "run \"kubebake lock\" again"}},
		{"unparsable", garbage, []string{"restore " + lockPath + " from version control", "run \"kubebake lock --update\" to re-pin every input from scratch"}},
	} {
		os.WriteFile(lockPath, c.data, 0o644)
		for _, args := range [][]string{
			{"lock", recipePath, "--update=false", "-o", "text", "--cache-dir", cache},
			{"lock", recipePath, "--update=false", "-o", "json", "--cache-dir", cache},
			{"fetch", recipePath, "-o", "text", "--cache-dir", cache}, // any reader of the lock says the same
		} {
			out, _, err := kb(t, args...)
			if err == nil {
				t.Errorf("%s: kubebake %s succeeded: %s", c.name, strings.Join(args, " "), out)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: kubebake %s: %v\nwant %q", c.name, args[0], err, w)
				}
			}
			if now, _ := os.ReadFile(lockPath); !bytes.Equal(now, c.data) {
				t.Errorf("%s: kubebake %s changed the broken lock", c.name, args[0])
			}
		}
	}

	// --update is the way out: every input pinned again, the same pins as before.
	out, logs, err := kb(t, "lock", recipePath, "--update=true", "-o", "json", "--cache-dir", cache)
	if err != nil {
		t.Fatalf("lock --update over a broken lock: %v\n%s", err, logs)
	}
	var res lockResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !res.Written || res.Artifacts != len(good.Artifacts) || !strings.Contains(logs, "replacing a lock that cannot be read") {
		t.Errorf("lock --update: %+v\n%s", res, logs)
	}
	back, err := recipes.ReadLock(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Artifacts, good.Artifacts) {
		t.Error("re-pinning from scratch against the same upstream changed the pins")
	}
}

func TestCachePathCommand(t *testing.T) {
	dir := t.TempDir()
	out, _, err := kb(t, "cache", "path", "-o", "text", "--cache-dir", dir)
	if err != nil || strings.TrimSpace(out) != dir {
		t.Errorf("cache path: %q %v", out, err)
	}
}

// staticBinary is a statically linked x86-64 executable: Debian busybox-static's, which the
// baked images are made of (scripts/install-deps.sh installs it).
func staticBinary(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("the baked images need a static binary: %v (apt-get install busybox-static)", err)
	}
	return data
}

// debWith builds a real .deb of pkg 1.0-1 holding one file, with dpkg-deb.
func debWith(t *testing.T, pkg, member string, content []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for p, data := range map[string][]byte{
		"DEBIAN/control": []byte("Package: " + pkg + "\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: test <t@example.org>\nDescription: test\n"),
		member:           content,
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(dir, pkg+".deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// namedPackagesOnly is a package-set resolver for archives without a bootable set: the
// recipe's named packages, nothing more.
func namedPackagesOnly(_ context.Context, _ *recipes.Recipe, includes []string, _, _ string) ([]artifacts.PackageRef, error) {
	var refs []artifacts.PackageRef
	for _, in := range includes {
		name, version, _ := strings.Cut(in, "=")
		refs = append(refs, artifacts.PackageRef{Name: name, Version: version})
	}
	return refs, nil
}
