package builder

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

func TestDeriveIDs(t *testing.T) {
	a, b := DeriveIDs("aaaa"), DeriveIDs("aaaa")
	if a != b {
		t.Fatal("IDs are not a function of the lock hash")
	}
	c := DeriveIDs("aaab")
	if a.DiskGUID == c.DiskGUID || a.RootPart == c.RootPart || a.ESPSerial == c.ESPSerial {
		t.Fatal("different locks share IDs")
	}
	seen := map[string]bool{}
	for _, u := range []string{a.DiskGUID.String(), a.ESPPart.String(), a.RootPart.String(), a.RootFS.String(), a.RootHash.String(), a.VHD.String(), a.SBOMPrefix.String()} {
		if seen[u] {
			t.Fatalf("UUID %s used for two purposes", u)
		}
		seen[u] = true
		if u[14] != '8' {
			t.Errorf("%s is not a version 8 UUID", u)
		}
	}
}

func TestLayout(t *testing.T) {
	l, err := NewLayout(4 * gib)
	if err != nil {
		t.Fatal(err)
	}
	if l.ESPStart != mib || l.RootStart != mib+ESPSize || l.RootStart+l.RootSize != 4*gib-mib {
		t.Errorf("layout %+v", l)
	}
	if ESPSize == 64*mib {
		t.Error("go-diskfs writes a broken FAT32 of exactly 64 MiB")
	}
	for _, bad := range []int64{512 * mib, 4*gib + 1} {
		if _, err := NewLayout(bad); err == nil {
			t.Errorf("NewLayout(%d) accepted", bad)
		}
	}
}

func TestNaturalLess(t *testing.T) {
	if !naturalLess("6.1.0-9-cloud-amd64", "6.1.0-50-cloud-amd64") || naturalLess("6.1.0-50", "6.1.0-9") {
		t.Error("kernel versions are not ordered by number")
	}
}

func TestMke2fsVersion(t *testing.T) {
	for out, ok := range map[string]bool{
		"mke2fs 1.47.2 (1-Jan-2025)\n\tUsing EXT2FS Library version 1.47.2": true,
		"mke2fs 1.47.1 (20-May-2024)":                                       true,
		"mke2fs 1.48 (x)":                                                   true,
		"mke2fs 1.47.0 (5-Feb-2023)":                                        false,
		"mke2fs 1.46.6 (1-Feb-2023)":                                        false,
		"":                                                                  false,
	} {
		if err := checkMke2fsVersion(out); (err == nil) != ok {
			t.Errorf("%q: %v", out, err)
		}
	}
}

func TestExplainMmdebstrap(t *testing.T) {
	spec := RootfsSpec{Release: "bookworm", Suites: []string{"bookworm", "bookworm-updates"}, Recipe: "recipes/debian-12.yaml"}
	cases := map[string]string{
		"E: Unable to locate package kubebake-no-such-package\nE: apt-get failed":    "package kubebake-no-such-package does not exist in the suites bookworm, bookworm-updates; fix base.packages",
		"E: Version '9.9-9' for 'socat' was not found":                               "the Debian mirror no longer has socat 9.9-9, which the lock pins; run \"kubebake lock --update recipes/debian-12.yaml\"",
		"E: Version '1' for 'a' was not found\nE: Version '2' for 'b' was not found": "the Debian mirror no longer has a 1, b 2,",
		"Err:1 http://127.0.0.1:4321/debian bookworm InRelease\n  403  Forbidden [IP: 127.0.0.1 4321]\nE: The repository 'http://127.0.0.1:4321/debian bookworm Release' does not have a Release file.": "the Debian mirror refused a download",
	}
	for stderr, want := range cases {
		err := explainMmdebstrap(&run.Error{Line: "mmdebstrap", Err: errors.New("exit status 1"), Stderr: stderr}, spec)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to say %q", err, want)
		}
		if strings.Contains(err.Error(), "127.0.0.1:4321") {
			t.Errorf("%q names the mirror", err)
		}
	}
}

func TestRootfsKeyIgnoresMirror(t *testing.T) {
	a := RootfsSpec{Release: "bookworm", Suites: []string{"bookworm"}, Components: []string{"main"}, Packages: []string{"a=1"}, Mirror: "http://one.invalid/debian"}
	b := a
	b.Mirror = "http://two.invalid/debian"
	if a.Key() != b.Key() {
		t.Error("the rootfs key depends on the mirror")
	}
	b.Packages = []string{"a=2"}
	if a.Key() == b.Key() {
		t.Error("the rootfs key ignores package versions")
	}
	args := strings.Join(a.mmdebstrapArgs("/x.tar", ""), " ")
	if !strings.Contains(args, "--include=a=1") || !strings.Contains(args, "deb http://one.invalid/debian bookworm") {
		t.Errorf("mmdebstrap args %s", args)
	}
}

func TestRootfsPackagesNeedTheLock(t *testing.T) {
	r := &recipes.Recipe{Name: "t", Base: recipes.Base{Kernel: "linux-image-cloud-amd64", Packages: []string{"socat"}}}
	l := &recipes.Lock{}
	for _, p := range append(recipes.BootPackages(), "linux-image-cloud-amd64") {
		l.Artifacts = append(l.Artifacts, recipes.LockedArtifact{Name: "deb/" + p, Kind: recipes.InputDeb, Version: "1"})
	}
	_, err := recipes.RootfsPackages(r, l)
	if err == nil || !strings.Contains(err.Error(), "socat") || !strings.Contains(err.Error(), "kubebake lock") {
		t.Fatalf("err %v", err)
	}
	l.Artifacts = append(l.Artifacts, recipes.LockedArtifact{Name: "deb/socat", Kind: recipes.InputDeb, Version: "1.7.4.4-2"})
	pkgs, err := recipes.RootfsPackages(r, l)
	if err != nil || !strings.Contains(strings.Join(pkgs, " "), "socat=1.7.4.4-2") {
		t.Fatalf("%v %v", pkgs, err)
	}
}

func TestSBOM(t *testing.T) {
	r := &recipes.Recipe{Name: "debian-12", Base: recipes.Base{Release: "bookworm"}}
	l := &recipes.Lock{SourceDateEpoch: 1795305600, Artifacts: []recipes.LockedArtifact{
		{Name: "kubelet", Kind: "binary", Source: "gomod", Version: "v1.35.4", Module: "k8s.io/kubernetes@v1.35.4", Package: "k8s.io/kubernetes/cmd/kubelet", SHA256: "ab"},
	}}
	doc := makeSBOM(sbomInput{Recipe: r, Lock: l, LockHash: "ff", IDs: DeriveIDs("ff"), Tool: "kubebake",
		Packages:   []DebPackage{{Name: "libc6", Version: "2.36-9+deb12u4", Architecture: "amd64"}, {Name: "conntrack", Version: "1:1.4.7-1+b2", Architecture: "amd64"}},
		LayerFiles: []ManifestFile{{Path: "/usr/bin/kubelet", Type: "file", Artifact: "kubelet", SHA256: "ab"}, {Path: "/etc/x", Type: "file", SHA256: "cd"}},
	})
	data, err := marshalJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{
		`"spdxVersion": "SPDX-2.3"`, `"created": "2026-11-22T00:00:00Z"`,
		`pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&distro=bookworm`,
		`pkg:deb/debian/conntrack@1:1.4.7-1+b2?arch=amd64`,
		`pkg:golang/k8s.io/kubernetes@v1.35.4#cmd/kubelet`,
		`"checksumValue": "ab"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("SBOM lacks %s", want)
		}
	}
	if strings.Contains(s, `"cd"`) {
		t.Error("a rendered config file is listed as a binary")
	}
	idRE := regexp.MustCompile(`^SPDXRef-[A-Za-z0-9.-]+$`)
	for _, p := range doc.Packages {
		if !idRE.MatchString(p.SPDXID) {
			t.Errorf("bad SPDXID %q", p.SPDXID)
		}
	}
	again, _ := marshalJSON(makeSBOM(sbomInput{Recipe: r, Lock: l, LockHash: "ff", IDs: DeriveIDs("ff"), Tool: "kubebake",
		Packages:   []DebPackage{{Name: "libc6", Version: "2.36-9+deb12u4", Architecture: "amd64"}, {Name: "conntrack", Version: "1:1.4.7-1+b2", Architecture: "amd64"}},
		LayerFiles: []ManifestFile{{Path: "/usr/bin/kubelet", Type: "file", Artifact: "kubelet", SHA256: "ab"}, {Path: "/etc/x", Type: "file", SHA256: "cd"}},
	}))
	if string(again) != s {
		t.Error("the SBOM is not deterministic")
	}
}

func TestVHDFooterPatch(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.vhd")
	footer := make([]byte, 512)
	copy(footer, "conectix")
	binary.BigEndian.PutUint32(footer[24:], 12345)
	if err := os.WriteFile(p, append(make([]byte, 1024), footer...), 0o644); err != nil {
		t.Fatal(err)
	}
	ids := DeriveIDs("x")
	if err := patchVHDFooter(p, ids, 1795305600); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	f := data[len(data)-512:]
	if got := binary.BigEndian.Uint32(f[24:]); got != 1795305600-vhdEpoch {
		t.Errorf("timestamp %d", got)
	}
	if string(f[68:84]) != string(ids.VHD[:]) {
		t.Error("unique id not derived")
	}
	sum := binary.BigEndian.Uint32(f[64:])
	var s uint32
	for i, b := range f {
		if i < 64 || i >= 68 {
			s += uint32(b)
		}
	}
	if sum != ^s {
		t.Error("footer checksum wrong")
	}
}

// TestESPIsCleanFAT32 writes an ESP with go-diskfs and checks it with dosfstools and mtools.
func TestESPIsCleanFAT32(t *testing.T) {
	testenv.NeedTools(t, "fsck.fat", "mtype", "mdir", "sgdisk", "blkid")
	dir := t.TempDir()
	for name, body := range map[string]string{"vmlinuz": "kernel", "initrd": "initrd", "boot.efi": "MZ efi"} {
		os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat(body, 100000)), 0o644)
	}
	l, err := NewLayout(2 * gib)
	if err != nil {
		t.Fatal(err)
	}
	ids := DeriveIDs("esp-test")
	sums := []string{}
	for i := range 2 {
		disk := filepath.Join(dir, "disk"+string(rune('a'+i))+".raw")
		if err := createDisk(disk, l, ids); err != nil {
			t.Fatal(err)
		}
		boot := Boot{KernelVersion: "6.1.0-50-cloud-amd64", Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd"), Loader: filepath.Join(dir, "boot.efi"), Cmdline: "root=PARTUUID=x rw", Title: "t"}
		if err := writeESP(disk, l, ids, 1795305600, espFiles(boot, "kubebake")); err != nil {
			t.Fatal(err)
		}
		sum, _ := fileSHA256(disk)
		sums = append(sums, sum)
		if i > 0 {
			break
		}
		out, err := exec.Command("sgdisk", "-v", disk).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Errorf("sgdisk -v: %v\n%s", err, out)
		}
		esp := filepath.Join(dir, "esp.img")
		extract(t, disk, esp, l.ESPStart, l.ESPSize)
		out, err = exec.Command("fsck.fat", "-n", "-v", esp).CombinedOutput()
		if err != nil || strings.Contains(string(out), "Fixing") || strings.Contains(string(out), "uninitialized") {
			t.Errorf("fsck.fat -n: %v\n%s", err, out)
		}
		out, err = exec.Command("mtype", "-i", esp, "::/loader/entries/kubebake.conf").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "linux /kubebake/vmlinuz") {
			t.Errorf("mtype: %v\n%s", err, out)
		}
		out, _ = exec.Command("mdir", "-i", esp, "::/EFI/BOOT").CombinedOutput()
		if !strings.Contains(string(out), "2026-11-22") {
			t.Errorf("FAT timestamps are not SOURCE_DATE_EPOCH:\n%s", out)
		}
		out, _ = exec.Command("blkid", "-o", "value", "-s", "UUID", esp).CombinedOutput()
		if strings.TrimSpace(string(out)) == "0000-0000" || strings.TrimSpace(string(out)) == "" {
			t.Errorf("FAT serial %q is not derived", out)
		}
	}
	if sums[0] != sums[1] {
		t.Error("two ESPs of the same inputs differ")
	}
}

func extract(t *testing.T, disk, dst string, off, size int64) {
	t.Helper()
	in, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	buf := make([]byte, size)
	if _, err := in.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSpaceErrorMessage(t *testing.T) {
	e := &spaceError{dir: "/out", need: 5 * gib / 2, free: gib}
	if !strings.HasPrefix(e.Error(), "no space left on /out: need about 2.5 GiB") || !errors.Is(e, syscall.ENOSPC) {
		t.Errorf("%v", e)
	}
	// The work folder is beside the output folder: the space that runs out is its parent's.
	parent := t.TempDir()
	s := &state{opts: Options{OutDir: filepath.Join(parent, "out")}, need: 3 * gib}
	err := s.explainSpace(&run.Error{Line: "mke2fs", Err: errors.New("exit status 1"), Stderr: "mke2fs: No space left on device while populating file system"})
	if !strings.Contains(err.Error(), "no space left on "+parent+": need about 3.0 GiB") {
		t.Errorf("%v", err)
	}
	_ = context.Background
}

func TestCopySparseHashesLikeARead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.WriteAt([]byte("start"), 0)
	f.WriteAt([]byte(strings.Repeat("middle", 100000)), 20<<20)
	f.WriteAt([]byte("end"), 64<<20-3)
	f.Close()
	got, n, err := fileSHA256Size(context.Background(), p)
	if err != nil || n != 64<<20 {
		t.Fatal(n, err)
	}
	data, _ := os.ReadFile(p)
	if want := sha256Hex(data); got != want {
		t.Fatalf("sparse hash %s, read hash %s", got, want)
	}
}

// TestRootFSKeepsCapabilities runs the merge and mke2fs on the stand-in rootfs: a file
// capability (ping's cap_net_raw) must reach the ext4, and two runs give the same bytes.
func TestRootFSKeepsCapabilities(t *testing.T) {
	testenv.NeedTools(t, "mke2fs", "debugfs", "e2fsck")
	if err := checkTools(context.Background(), nil); err != nil {
		testenv.Missing(t, "e2fsprogs >= 1.47.1", err.Error())
	}
	data, _, _ := runMerge(t)
	dir := t.TempDir()
	tarball := filepath.Join(dir, "root.tar")
	os.WriteFile(tarball, data, 0o644)
	l, _ := NewLayout(2 * gib)
	ids := DeriveIDs("caps")
	var sums []string
	for i := range 2 {
		disk := filepath.Join(dir, fmt.Sprintf("d%d.raw", i))
		if err := createDisk(disk, l, ids); err != nil {
			t.Fatal(err)
		}
		if err := mkRootFS(context.Background(), dir, disk, tarball, l, ids, 1795305600); err != nil {
			t.Fatal(err)
		}
		sum, _ := fileSHA256(disk)
		sums = append(sums, sum)
	}
	if sums[0] != sums[1] {
		t.Error("mke2fs gave two different filesystems for one tarball")
	}
	fs := fmt.Sprintf("%s?offset=%d", filepath.Join(dir, "d0.raw"), l.RootStart)
	out, _ := exec.Command("debugfs", "-R", "ea_list /usr/bin/ping", fs).CombinedOutput()
	if !strings.Contains(string(out), "security.capability") {
		t.Errorf("ping lost its file capability:\n%s", out)
	}
	out, _ = exec.Command("debugfs", "-R", "stat /usr/bin/ping4", fs).CombinedOutput()
	if !strings.Contains(string(out), "Links: 2") {
		t.Errorf("ping4 is not a hard link of ping:\n%s", out)
	}
	if out, err := exec.Command("e2fsck", "-fn", fs).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
}
