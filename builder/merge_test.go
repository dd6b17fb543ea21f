package builder

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/roles"
)

// tarEntry is one entry of a test tarball.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	mtime      time.Time
	pax        map[string]string
}

func writeTestTar(t *testing.T, path string, entries []tarEntry) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body)), ModTime: e.mtime, PAXRecords: e.pax}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			io.WriteString(tw, e.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// rootfsStandIn is a small rootfs tarball shaped like mmdebstrap's: "./" names, merged /usr,
// the hygiene targets present.
func rootfsStandIn() []tarEntry {
	d := func(n string) tarEntry { return tarEntry{name: n, typ: tar.TypeDir, mode: 0o755} }
	f := func(n, body string) tarEntry { return tarEntry{name: n, typ: tar.TypeReg, mode: 0o644, body: body} }
	l := func(n, target string) tarEntry {
		return tarEntry{name: n, typ: tar.TypeSymlink, mode: 0o777, link: target}
	}
	return []tarEntry{
		d("./"), d("./boot/"), f("./boot/vmlinuz-6.1.0-9-cloud-amd64", "old kernel"), f("./boot/initrd.img-6.1.0-9-cloud-amd64", "old initrd"),
		f("./boot/vmlinuz-6.1.0-50-cloud-amd64", "kernel"), f("./boot/initrd.img-6.1.0-50-cloud-amd64", "initrd"),
		d("./etc/"), f("./etc/machine-id", "0123456789abcdef0123456789abcdef\n"), f("./etc/hostname", "buildhost\n"),
		f("./etc/resolv.conf", "nameserver 10.1.2.3\n"), f("./etc/fstab", "# UNCONFIGURED FSTAB\n"),
		f("./etc/shadow", "root:$6$salt$hash:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nnopw::20000::::::\nlocked:!$6$x:20000::::::\n"),
		f("./etc/shadow-", "root:$6$old:1::::::\n"),
		d("./etc/apt/"), f("./etc/apt/sources.list", "deb http://mirror.invalid/debian bookworm main\n"),
		d("./etc/ssh/"), f("./etc/ssh/sshd_config", "Port 22\n"), f("./etc/ssh/ssh_host_ed25519_key", "SECRET"), f("./etc/ssh/ssh_host_ed25519_key.pub", "pub"),
		d("./usr/"), d("./usr/bin/"), d("./usr/lib/"), d("./usr/lib/systemd/"), d("./usr/lib/systemd/system/"),
		{name: "./usr/bin/ping", typ: tar.TypeReg, mode: 0o755, body: "ping", pax: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
		{name: "./usr/bin/ping4", typ: tar.TypeLink, link: "./usr/bin/ping"},
		f("./usr/lib/systemd/system/ssh.service", "[Service]\n"),
		l("./lib", "usr/lib"), l("./bin", "usr/bin"),
		d("./var/"), d("./var/lib/"), d("./var/lib/dpkg/"),
		f("./var/lib/dpkg/status", "Package: base-files\nStatus: install ok installed\nVersion: 12.4+deb12u1\nArchitecture: amd64\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: amd64\n\nPackage: libc6\nStatus: install ok installed\nSource: glibc\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\nDescription: x\n multi-line\n"),
		d("./var/lib/cloud/"), d("./var/lib/cloud/instance/"), f("./var/lib/cloud/instance/boot-finished", "x"),
		d("./var/lib/dbus/"), f("./var/lib/dbus/machine-id", "0123"),
		d("./var/lib/systemd/"), f("./var/lib/systemd/random-seed", "seed"),
		d("./var/log/"), d("./var/log/journal/"), f("./var/log/dpkg.log", "log"), l("./var/log/README", "../../usr/share/doc/systemd/README.logs"),
		d("./var/lib/apt/"), d("./var/lib/apt/lists/"), d("./var/lib/apt/lists/partial/"), f("./var/lib/apt/lists/mirror_dists_bookworm_InRelease", "x"),
		d("./var/cache/"), d("./var/cache/apt/"), f("./var/cache/apt/pkgcache.bin", "x"),
		d("./tmp/"), f("./tmp/leftover", "x"),
	}
}

func testLayer() *roles.Layer {
	return &roles.Layer{Files: []roles.File{
		{Path: "/etc", Type: roles.TypeDir, Mode: 0o755},
		{Path: "/etc/kubebake", Type: roles.TypeDir, Mode: 0o755},
		{Path: "/etc/kubebake/release", Type: roles.TypeFile, Mode: 0o644, Content: []byte("RECIPE=test\n")},
		{Path: "/etc/ssh", Type: roles.TypeDir, Mode: 0o700},
		{Path: "/etc/ssh/sshd_config", Type: roles.TypeFile, Mode: 0o600, Content: []byte("Port 2222\n")},
		{Path: "/lib", Type: roles.TypeDir, Mode: 0o755},
		{Path: "/lib/systemd", Type: roles.TypeDir, Mode: 0o755},
		{Path: "/lib/systemd/system", Type: roles.TypeDir, Mode: 0o755},
		{Path: "/lib/systemd/system/kubelet.service", Type: roles.TypeFile, Mode: 0o644, Content: []byte("[Unit]\n")},
		{Path: "/usr", Type: roles.TypeDir, Mode: 0o755},
		{Path: "/usr/bin", Type: roles.TypeDir, Mode: 0o755},
		{Path: "/usr/bin/kubelet", Type: roles.TypeFile, Mode: 0o755, Artifact: "kubelet"},
		{Path: "/usr/bin/kubelet-link", Type: roles.TypeSymlink, Mode: 0o777, Target: "kubelet"},
	}}
}

func openStandIn(name string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("kubelet binary")), nil
}

// lockedLayer fills in the size and digest of the stand-in kubelet artifact, as a lock would.
func lockedLayer(l *roles.Layer) *roles.Layer {
	for i := range l.Files {
		if l.Files[i].Artifact == "kubelet" {
			l.Files[i].Size = int64(len("kubelet binary"))
			l.Files[i].SHA256 = sha256Hex([]byte("kubelet binary"))
		}
	}
	return l
}

type readEntry struct {
	hdr  *tar.Header
	body string
}

func readTar(t *testing.T, data []byte) ([]string, map[string]readEntry) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	m := map[string]readEntry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		names = append(names, h.Name)
		if _, dup := m[h.Name]; dup {
			t.Errorf("%s appears twice in the merged tar", h.Name)
		}
		m[h.Name] = readEntry{h, string(b)}
	}
	return names, m
}

func runMerge(t *testing.T) ([]byte, *MergeInfo, string) {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	writeTestTar(t, rootfs, rootfsStandIn())
	layer := lockedLayer(testLayer())
	extract := filepath.Join(dir, "boot")
	os.Mkdir(extract, 0o755)
	var out bytes.Buffer
	info, err := mergeTar(mergeOptions{
		RootfsTar: rootfs, Layer: layer, Open: openStandIn, Out: &out, Epoch: 1795305600,
		Replace:    []ExtraFile{{Path: "/etc/fstab", Mode: 0o644, Content: []byte("PARTUUID=x / ext4 defaults 0 1\n")}},
		Extract:    func(abs string) bool { return strings.HasPrefix(abs, "/boot/") },
		ExtractDir: extract,
		Extras: func(mi *MergeInfo) ([]ExtraFile, error) {
			return []ExtraFile{{Path: "/etc/kubebake/manifest.json", Mode: 0o644, Content: []byte("{}")}, {Path: "/usr/share/kubebake/new/x", Mode: 0o644, Content: []byte("x")}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), info, extract
}

func TestMergeHygiene(t *testing.T) {
	data, info, _ := runMerge(t)
	_, m := readTar(t, data)
	gone := []string{"./etc/ssh/ssh_host_ed25519_key", "./etc/ssh/ssh_host_ed25519_key.pub", "./var/lib/cloud/instance/", "./var/lib/cloud/instance/boot-finished",
		"./var/lib/dbus/machine-id", "./var/lib/systemd/random-seed", "./var/log/dpkg.log", "./var/lib/apt/lists/mirror_dists_bookworm_InRelease",
		"./var/cache/apt/pkgcache.bin", "./tmp/leftover", "./etc/shadow-"}
	for _, n := range gone {
		if _, ok := m[n]; ok {
			t.Errorf("%s survived hygiene", n)
		}
	}
	kept := []string{"./var/log/journal/", "./var/log/README", "./var/lib/apt/lists/partial/", "./var/lib/cloud/", "./tmp/", "./etc/ssh/"}
	for _, n := range kept {
		if _, ok := m[n]; !ok {
			t.Errorf("%s is missing: hygiene removes contents, not the folders", n)
		}
	}
	want := map[string]string{
		"./etc/machine-id":      "",
		"./etc/hostname":        "localhost\n",
		"./etc/resolv.conf":     "",
		"./etc/fstab":           "PARTUUID=x / ext4 defaults 0 1\n",
		"./etc/shadow":          "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nnopw:*:20000::::::\nlocked:!$6$x:20000::::::\n",
		"./etc/ssh/sshd_config": "Port 2222\n", // the layer wins
	}
	for n, body := range want {
		e, ok := m[n]
		if !ok {
			t.Errorf("%s is missing", n)
			continue
		}
		if e.body != body {
			t.Errorf("%s = %q, want %q", n, e.body, body)
		}
	}
	if e := m["./etc/ssh/sshd_config"]; e.hdr.Mode != 0o600 {
		t.Errorf("sshd_config mode %o, want the layer's 0600", e.hdr.Mode)
	}
	if e := m["./etc/ssh/"]; e.hdr.Mode != 0o700 {
		t.Errorf("/etc/ssh mode %o: a layer directory keeps its place with the layer's mode", e.hdr.Mode)
	}
	// merged /usr: the layer's /lib/systemd/system lands in /usr/lib/systemd/system.
	if _, ok := m["./usr/lib/systemd/system/kubelet.service"]; !ok {
		t.Error("/lib/systemd/system/kubelet.service was not written through the /lib symlink")
	}
	for _, n := range []string{"./lib/", "./lib/systemd/", "./lib/systemd/system/kubelet.service"} {
		if _, ok := m[n]; ok {
			t.Errorf("%s written under a rootfs symlink", n)
		}
	}
	if e := m["./usr/bin/kubelet"]; e.body != "kubelet binary" || e.hdr.Mode != 0o755 {
		t.Errorf("kubelet: %q mode %o", e.body, e.hdr.Mode)
	}
	if e := m["./usr/bin/ping"]; e.hdr.PAXRecords["SCHILY.xattr.security.capability"] == "" {
		t.Error("the file capability of ping was lost")
	}
	if e := m["./usr/bin/ping4"]; e.hdr.Typeflag != tar.TypeLink {
		t.Error("the hard link ping4 was lost")
	}
	// Extras with missing parents get them.
	for _, n := range []string{"./usr/share/", "./usr/share/kubebake/", "./usr/share/kubebake/new/", "./usr/share/kubebake/new/x", "./etc/kubebake/manifest.json"} {
		if _, ok := m[n]; !ok {
			t.Errorf("%s is missing", n)
		}
	}
	epoch := time.Unix(1795305600, 0)
	for n, e := range m {
		if e.hdr.ModTime.After(epoch) {
			t.Errorf("%s: mtime %s after SOURCE_DATE_EPOCH", n, e.hdr.ModTime)
		}
		if !e.hdr.AccessTime.IsZero() || !e.hdr.ChangeTime.IsZero() {
			t.Errorf("%s keeps atime/ctime", n)
		}
	}
	if got := strings.Join(info.Kernels, ","); got != "6.1.0-50-cloud-amd64,6.1.0-9-cloud-amd64" {
		t.Errorf("kernels %q", got)
	}
	pkgs := parseDpkgStatus(info.DpkgStatus)
	if len(pkgs) != 2 || pkgs[1].Name != "libc6" || pkgs[1].Source != "glibc" || pkgs[1].Version != "2.36-9+deb12u4" {
		t.Errorf("packages %+v", pkgs)
	}
	if len(info.LayerFiles) != 4 {
		t.Errorf("layer files %+v", info.LayerFiles)
	}
}

func TestMergeDeterministic(t *testing.T) {
	a, _, _ := runMerge(t)
	b, _, _ := runMerge(t)
	if !bytes.Equal(a, b) {
		t.Fatal("two merges of the same inputs differ")
	}
	names, _ := readTar(t, a)
	// rootfs order first: "./" leads, the layer's new files follow the rootfs.
	if names[0] != "./" {
		t.Errorf("first entry %q", names[0])
	}
}

func TestMergeConflicts(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	writeTestTar(t, rootfs, rootfsStandIn())
	cases := map[string]*roles.Layer{
		"file over directory": {Files: []roles.File{{Path: "/etc", Type: roles.TypeFile, Mode: 0o644, Content: []byte("x")}}},
		"replaces a hard link target": {Files: []roles.File{
			{Path: "/usr", Type: roles.TypeDir, Mode: 0o755}, {Path: "/usr/bin", Type: roles.TypeDir, Mode: 0o755},
			{Path: "/usr/bin/ping", Type: roles.TypeFile, Mode: 0o755, Content: []byte("x")}}},
	}
	for name, l := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := mergeTar(mergeOptions{RootfsTar: rootfs, Layer: lockedLayer(l), Open: openStandIn, Out: io.Discard, Epoch: 1})
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
		})
	}
}

func TestLockPasswords(t *testing.T) {
	in := "root:$y$j9T$abc:1:0:99999:7:::\nuser::1::::::\nsvc:!:1::::::\nlocked:*:1::::::\n"
	want := "root:*:1:0:99999:7:::\nuser:*:1::::::\nsvc:!:1::::::\nlocked:*:1::::::\n"
	if got := string(lockPasswords([]byte(in))); got != want {
		t.Errorf("got %q", got)
	}
}

func TestResolveDirs(t *testing.T) {
	s := &rootfsScan{symlinks: map[string]string{"lib": "usr/lib", "bin": "/usr/bin", "usr/lib/x": "../../opt/x", "loop": "loop"}}
	cases := map[string]string{
		"lib/systemd/system/a": "usr/lib/systemd/system/a",
		"bin/kubelet":          "usr/bin/kubelet",
		"lib":                  "lib",
		"lib/x/y":              "opt/x/y",
		"etc/x":                "etc/x",
	}
	for in, want := range cases {
		got, err := s.resolveDirs(in)
		if err != nil || got != want {
			t.Errorf("resolveDirs(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := s.resolveDirs("loop/x"); err == nil {
		t.Error("a symlink loop resolved")
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
