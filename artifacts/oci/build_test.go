package oci

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tinySpec is a small synthetic image: a file, an executable, a symlink, a sticky folder
// and a file owned by nobody, listed out of order and without their parent folders.
func tinySpec() Spec {
	return Spec{
		Files: []File{
			{Path: "/usr/bin/hello", Mode: 0o755, Open: FromBytes([]byte("#!/bin/sh\necho hello\n"))},
			{Path: "/etc/motd", Mode: 0o644, Open: FromBytes([]byte("kubebake\n"))},
			{Path: "/bin/hi", Mode: fs.ModeSymlink | 0o777, Target: "../usr/bin/hello"},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
			{Path: "/home/nobody/.profile", Mode: 0o600, UID: 65534, GID: 65534, Open: FromBytes([]byte("PS1='$ '\n"))},
		},
		Config: Config{
			Entrypoint:   []string{"/usr/bin/hello"},
			Cmd:          []string{"--loud"},
			Env:          []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"},
			WorkingDir:   "/tmp",
			User:         "65534:65534",
			ExposedPorts: []string{"8080/tcp", "53/udp"},
			Labels:       map[string]string{"b": "2", "a": "1"},
		},
		SourceDateEpoch: testEpoch,
	}
}

// Golden values for tinySpec. The diff ID depends only on this package's tar writing; the
// manifest digest and the archive's sha256 also depend on Go's compress/flate output, which
// has not changed in years (if a Go release changes it, only those two move: update them and
// say so in the lock notes, since every image digest moves with them).
const (
	goldenDiffID         = "sha256:da0b6340c1880dabf5f9bbec55dcf54595b2150bfaf1745e6ded7f2db556a51b"
	goldenManifestDigest = "sha256:b0b2f51154013480c6bd92e174b95004e9bfc80c57b20281c5ade8484d2a1926"
	goldenArchiveSHA256  = "438a8ee16d9050eca8cfcb166ee4ead3cf5d192857673fd5c0e4f49d6e163bbf"
)

func writeTiny(t *testing.T, dir string) Archive {
	t.Helper()
	img, err := Build(tinySpec())
	if err != nil {
		t.Fatal(err)
	}
	a, err := WriteArchive(filepath.Join(dir, "tiny.tar"), []NamedImage{{Ref: "kubebake.local/tiny:1.0", Image: img}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Two independent builds of the same spec give byte-identical archives and the golden digests.
func TestBuildIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	first := writeTiny(t, dir)
	if err := os.Rename(first.Path, filepath.Join(dir, "first.tar")); err != nil {
		t.Fatal(err)
	}
	second := writeTiny(t, dir)
	a, _ := os.ReadFile(filepath.Join(dir, "first.tar"))
	b, _ := os.ReadFile(second.Path)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("two builds differ: %d and %d bytes", len(a), len(b))
	}
	if first.SHA256 != second.SHA256 || first.Images[0].Digest != second.Images[0].Digest {
		t.Fatalf("digests differ: %+v and %+v", first, second)
	}

	img, err := Build(tinySpec())
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	diffID, err := layers[0].DiffID()
	if err != nil {
		t.Fatal(err)
	}
	if diffID.String() != goldenDiffID {
		t.Errorf("layer diff ID %s, golden %s", diffID, goldenDiffID)
	}
	if first.Images[0].Digest != goldenManifestDigest {
		t.Errorf("manifest digest %s, golden %s", first.Images[0].Digest, goldenManifestDigest)
	}
	if first.SHA256 != goldenArchiveSHA256 {
		t.Errorf("archive sha256 %s, golden %s", first.SHA256, goldenArchiveSHA256)
	}
}

// Changing any input changes the digest: the epoch, a mode, a byte of content.
func TestDigestFollowsInputs(t *testing.T) {
	base, err := Build(tinySpec())
	if err != nil {
		t.Fatal(err)
	}
	baseDigest, _ := base.Digest()
	variants := map[string]func(*Spec){
		"epoch":   func(s *Spec) { s.SourceDateEpoch++ },
		"mode":    func(s *Spec) { s.Files[1].Mode = 0o640 },
		"content": func(s *Spec) { s.Files[1].Open = FromBytes([]byte("kubebake!\n")) },
		"env":     func(s *Spec) { s.Config.Env = s.Config.Env[:1] },
	}
	for name, change := range variants {
		spec := tinySpec()
		change(&spec)
		img, err := Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := img.Digest(); d == baseDigest {
			t.Errorf("changing the %s left the digest at %s", name, d)
		}
	}
}

// The layer: sorted entries, parents present, modes, owners, symlinks, fixed mtimes; the
// gzip header carries no time or name; the config carries what the spec said.
func TestLayerAndConfig(t *testing.T) {
	img, err := Build(tinySpec())
	if err != nil {
		t.Fatal(err)
	}
	entries, order := readLayer(t, img)
	wantOrder := []string{"bin/", "bin/hi", "etc/", "etc/motd", "home/", "home/nobody/", "home/nobody/.profile", "tmp/", "usr/", "usr/bin/", "usr/bin/hello"}
	if strings.Join(order, " ") != strings.Join(wantOrder, " ") {
		t.Errorf("layer order\n got %v\nwant %v", order, wantOrder)
	}
	checks := map[string]layerEntry{
		"bin/":                 {Type: '5', Mode: 0o755},
		"bin/hi":               {Type: '2', Mode: 0o777, Linkname: "../usr/bin/hello"},
		"tmp/":                 {Type: '5', Mode: 0o1777},
		"usr/bin/hello":        {Type: '0', Mode: 0o755, Size: 21},
		"etc/motd":             {Type: '0', Mode: 0o644, Size: 9},
		"home/nobody/.profile": {Type: '0', Mode: 0o600, UID: 65534, GID: 65534, Size: 9},
	}
	for name, want := range checks {
		want.MTime = testEpoch
		if got := entries[name]; got != want {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
	}

	layers, _ := img.Layers()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 10)
	io.ReadFull(rc, head)
	rc.Close()
	// gzip: ID1 ID2 CM FLG MTIME(4) XFL OS. FLG 0 means no name, comment or extra field.
	if head[0] != 0x1f || head[1] != 0x8b || head[3] != 0 || !bytes.Equal(head[4:8], []byte{0, 0, 0, 0}) {
		t.Errorf("gzip header % x: want no flags and MTIME 0", head)
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s", mt)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Created.Unix() != testEpoch || cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("config created %v, platform %s/%s", cfg.Created, cfg.OS, cfg.Architecture)
	}
	if len(cfg.History) != 1 || cfg.History[0].Created.Unix() != testEpoch || len(cfg.RootFS.DiffIDs) != 1 {
		t.Errorf("history %+v, diff IDs %v", cfg.History, cfg.RootFS.DiffIDs)
	}
	c := cfg.Config
	if strings.Join(c.Entrypoint, " ") != "/usr/bin/hello" || strings.Join(c.Cmd, " ") != "--loud" ||
		c.WorkingDir != "/tmp" || c.User != "65534:65534" || len(c.Env) != 2 || c.Labels["a"] != "1" {
		t.Errorf("config %+v", c)
	}
	if _, ok := c.ExposedPorts["53/udp"]; !ok || len(c.ExposedPorts) != 2 {
		t.Errorf("exposed ports %v", c.ExposedPorts)
	}
	m, _ := img.Manifest()
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("manifest %s, config %s", m.MediaType, m.Config.MediaType)
	}
}

// A regular file read from disk is sized by Stat; the content must match it.
func TestHostFileContent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "data")
	data := bytes.Repeat([]byte("0123456789"), 100000)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := Build(Spec{Files: []File{{Path: "/data", Mode: 0o644, Open: hostFile(p)}}, SourceDateEpoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := readLayer(t, img)
	if entries["data"].Size != int64(len(data)) {
		t.Errorf("size %d, want %d", entries["data"].Size, len(data))
	}
}

func TestBuildRefusesBadSpecs(t *testing.T) {
	reg := func(p string) File { return File{Path: p, Mode: 0o644, Open: FromBytes(nil)} }
	cases := map[string]Spec{
		"relative path":      {Files: []File{reg("etc/motd")}},
		"unclean path":       {Files: []File{reg("/etc//motd")}},
		"twice":              {Files: []File{reg("/a"), reg("/a")}},
		"parent is a file":   {Files: []File{reg("/a"), reg("/a/b")}},
		"whiteout":           {Files: []File{reg("/etc/.wh.motd")}},
		"symlink, no target": {Files: []File{{Path: "/l", Mode: fs.ModeSymlink}}},
		"file, no content":   {Files: []File{{Path: "/f", Mode: 0o644}}},
		"device":             {Files: []File{{Path: "/dev/null", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666}}},
		"bad port":           {Config: Config{ExposedPorts: []string{"53"}}},
		"bad env":            {Config: Config{Env: []string{"PATH"}}},
		"negative epoch":     {SourceDateEpoch: -1},
	}
	for name, spec := range cases {
		if _, err := Build(spec); err == nil {
			t.Errorf("%s: Build accepted it", name)
		}
	}
}
