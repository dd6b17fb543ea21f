package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// mmdebstrap 1.3.5 --simulate --verbose, abridged: the essential set is simulated first and
// listed again by the second apt run.
const simulatedOutput = `I: running apt-get update...
Get:1 http://<mirror>/debian bookworm InRelease [151 kB]
I: simulate downloading packages with apt...
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Conf gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []
Inst base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])
I: simulate installing remaining packages inside the chroot...
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []
Inst ca-certificates (20230311+deb12u1 Debian:12.15/oldstable [all])
Inst conntrack:amd64 (1:1.4.7-1+b2 Debian:12.15/oldstable [amd64])
I: success in 8.1871 seconds
`

func TestParseSimulated(t *testing.T) {
	refs, err := parseSimulated([]byte(simulatedOutput))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range refs {
		got = append(got, r.Name+"="+r.Version+"/"+r.Arch)
	}
	want := "base-files=12.4+deb12u15/amd64 ca-certificates=20230311+deb12u1/all conntrack=1:1.4.7-1+b2/amd64 gcc-12-base=12.2.0-14+deb12u1/amd64 libc6=2.36-9+deb12u14/amd64"
	if strings.Join(got, " ") != want {
		t.Errorf("parsed %s\nwant   %s", strings.Join(got, " "), want)
	}
	_, err = parseSimulated([]byte(simulatedOutput + "Inst libc6 (2.36-9+deb12u15 Debian:12.15/oldstable [amd64])\n"))
	if err == nil || !strings.Contains(err.Error(), "libc6 at 2.36-9+deb12u14 and at 2.36-9+deb12u15") {
		t.Errorf("two versions of one package: err = %v", err)
	}
}

func TestCheckPackageSet(t *testing.T) {
	l := &recipes.Lock{Packages: []recipes.LockedPackage{{Name: "libc6", Version: "2.36-9+deb12u14"}, {Name: "socat", Version: "1.7.4.4-2"}, {Name: "conntrack", Version: "1:1.4.7-1+b2"}}}
	ok := []DebPackage{{Name: "conntrack", Version: "1:1.4.7-1+b2"}, {Name: "libc6", Version: "2.36-9+deb12u14"}, {Name: "socat", Version: "1.7.4.4-2"}}
	if err := checkPackageSet(l, ok, "recipes/x.yaml"); err != nil {
		t.Fatal(err)
	}
	bad := []DebPackage{{Name: "libc6", Version: "2.36-9+deb12u13"}, {Name: "socat", Version: "1.7.4.4-2"}, {Name: "gawk", Version: "1:5.2.1-2"}}
	err := checkPackageSet(l, bad, "recipes/x.yaml")
	for _, want := range []string{"conntrack 1:1.4.7-1+b2 is pinned but not installed", "gawk 1:5.2.1-2 is installed but not pinned", "libc6 is installed at 2.36-9+deb12u13, pinned at 2.36-9+deb12u14", `kubebake lock --update recipes/x.yaml`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v; want it to say %q", err, want)
		}
	}
	// A lock without a package set makes no promise to check.
	if err := checkPackageSet(&recipes.Lock{}, bad, "x"); err != nil {
		t.Error(err)
	}
}

// tinyDeb builds a real .deb with dpkg-deb and returns its path, sha256 and size.
func tinyDeb(t *testing.T, name, version string) localDeb {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		testenv.Missing(t, "dpkg-deb", "apt-get install dpkg")
	}
	root := filepath.Join(t.TempDir(), name)
	os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(root, "usr/share/"+name), 0o755)
	os.WriteFile(filepath.Join(root, "usr/share/"+name+"/hello"), []byte("hello\n"), 0o644)
	control := "Package: " + name + "\nVersion: " + version + "\nArchitecture: all\nMaintainer: kubebake tests <t@kubebake.invalid>\nPriority: optional\nDepends: libc6 (>= 2.36)\nDescription: a test package\n more text\n"
	os.WriteFile(filepath.Join(root, "DEBIAN/control"), []byte(control), 0o644)
	deb := root + ".deb"
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v %s", err, out)
	}
	data, _ := os.ReadFile(deb)
	sum := sha256.Sum256(data)
	return localDeb{Path: deb, LockedPackage: recipes.LockedPackage{Name: name, Version: version, Arch: "all",
		URL: "pool/main/" + name[:1] + "/" + name + "/" + name + "_" + version + "_all.deb", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}}
}

// TestLocalArchive: the archive apt reads holds each .deb's own control fields, the lock's
// pool path, size and sha256, and a Release whose checksum matches its Packages; the files
// are served from the cache paths.
func TestLocalArchive(t *testing.T) {
	a, b := tinyDeb(t, "kubebake-a", "1.0-1"), tinyDeb(t, "kubebake-b", "2:3.4-5+deb12u1")
	dir := filepath.Join(t.TempDir(), "archive")
	if err := writeLocalArchive(context.Background(), dir, "bookworm", "amd64", 1795996800, []localDeb{b, a}); err != nil {
		t.Fatal(err)
	}
	packages, err := os.ReadFile(filepath.Join(dir, "dists/bookworm/main/binary-amd64/Packages"))
	if err != nil {
		t.Fatal(err)
	}
	stanzas := strings.Split(strings.TrimSpace(string(packages)), "\n\n")
	if len(stanzas) != 2 || !strings.HasPrefix(stanzas[0], "Package: kubebake-a\n") {
		t.Fatalf("Packages, sorted by name, one stanza each:\n%s", packages)
	}
	for _, want := range []string{"Version: 2:3.4-5+deb12u1", "Depends: libc6 (>= 2.36)", "Description: a test package\n more text", "Filename: " + b.URL, "SHA256: " + b.SHA256} {
		if !strings.Contains(stanzas[1], want) {
			t.Errorf("stanza of kubebake-b lacks %q:\n%s", want, stanzas[1])
		}
	}
	release, _ := os.ReadFile(filepath.Join(dir, "dists/bookworm/Release"))
	sum := sha256.Sum256(packages)
	for _, want := range []string{"Codename: bookworm", "Date: Mon, 30 Nov 2026 00:00:00 UTC", hex.EncodeToString(sum[:])} {
		if !strings.Contains(string(release), want) {
			t.Errorf("Release lacks %q:\n%s", want, release)
		}
	}
	url, stop, err := serveLocalArchive(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Errorf("served at %s, want 127.0.0.1", url)
	}
	resp, err := http.Get(url + "/" + a.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, _ := os.ReadFile(a.Path)
	if resp.StatusCode != 200 || string(got) != string(want) {
		t.Errorf("GET %s: %s, %d bytes (want the cached file, %d bytes)", a.URL, resp.Status, len(got), len(want))
	}

	// A file that is no .deb is refused with its name.
	junk := a
	junk.Name, junk.Path = "junk", filepath.Join(t.TempDir(), "junk.deb")
	os.WriteFile(junk.Path, []byte("not an ar archive"), 0o644)
	err = writeLocalArchive(context.Background(), filepath.Join(t.TempDir(), "x"), "bookworm", "amd64", 0, []localDeb{junk})
	if err == nil || !strings.Contains(err.Error(), "junk 1.0-1") {
		t.Errorf("err = %v", err)
	}
}

// TestRootfsSpecHermetic: with a package set the spec includes every pinned package and
// keys on their sha256; a named package outside the set, or a set not fetched, is refused.
func TestRootfsSpecHermetic(t *testing.T) {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		testenv.Missing(t, "mmdebstrap", "make deps")
	}
	r := &recipes.Recipe{Name: "t", File: "recipes/t.yaml", Base: recipes.Base{Release: "bookworm", Arch: "amd64", Kernel: "linux-image-cloud-amd64"}}
	l := &recipes.Lock{SourceDateEpoch: 1}
	for _, p := range append(recipes.BootPackages(), "linux-image-cloud-amd64") {
		l.Artifacts = append(l.Artifacts, recipes.LockedArtifact{Name: "deb/" + p, Kind: recipes.InputDeb, Version: "1"})
		l.Packages = append(l.Packages, recipes.LockedPackage{Name: p, Version: "1", SHA256: strings.Repeat("a", 63) + string(rune('a'+len(l.Packages)%6))})
	}
	l.Packages = append(l.Packages, recipes.LockedPackage{Name: "libc6", Version: "2.36", SHA256: strings.Repeat("c", 64)})
	debs := map[string]string{}
	for _, p := range l.Packages {
		debs[p.SHA256] = "/cache/" + p.SHA256
	}
	ctx := context.Background()
	spec, err := NewRootfsSpec(ctx, r, l, "", "", debs)
	if err != nil {
		t.Fatal(err)
	}
	if !spec.Hermetic() || len(spec.Packages) != len(l.Packages) || !strings.Contains(strings.Join(spec.Packages, ","), "libc6=2.36") {
		t.Errorf("spec includes %v", spec.Packages)
	}
	legacy, _ := NewRootfsSpec(ctx, r, &recipes.Lock{SourceDateEpoch: 1, Artifacts: l.Artifacts}, "", "", nil)
	if legacy.Hermetic() || legacy.Key() == spec.Key() {
		t.Error("a lock without a package set gives a hermetic spec, or the same key")
	}
	other := *l
	other.Packages = append([]recipes.LockedPackage(nil), l.Packages...)
	other.Packages[len(other.Packages)-1].SHA256 = strings.Repeat("d", 64)
	debs[strings.Repeat("d", 64)] = "/cache/d"
	spec2, _ := NewRootfsSpec(ctx, r, &other, "", "", debs)
	if spec2.Key() == spec.Key() {
		t.Error("another file for libc6 gives the same rootfs key")
	}

	delete(debs, strings.Repeat("c", 64))
	if _, err := NewRootfsSpec(ctx, r, l, "", "", debs); err == nil || !strings.Contains(err.Error(), "libc6 2.36") || !strings.Contains(err.Error(), "kubebake fetch recipes/t.yaml") {
		t.Errorf("a set not fetched: err = %v", err)
	}
	debs[strings.Repeat("c", 64)] = "/cache/c"
	short := *l
	short.Packages = l.Packages[1:]
	if _, err := NewRootfsSpec(ctx, r, &short, "", "", debs); err == nil || !strings.Contains(err.Error(), "lacks "+recipes.BootPackages()[0]+" 1") {
		t.Errorf("a named package outside the set: err = %v", err)
	}
}

var _ artifacts.ClosureFunc = ResolvePackageSet
