package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tarEntries lists an archive's entries and the content of its regular files.
func tarEntries(t *testing.T, p string) ([]string, map[string][]byte) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, files
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Typeflag == tar.TypeReg {
			files[h.Name], _ = io.ReadAll(tr)
		}
	}
}

// rewriteTar copies the archive at p to a new file, passing each regular file through change
// (which may edit it, or drop it by returning false), and returns the copy's path.
func rewriteTar(t *testing.T, p string, change func(name string, data []byte) ([]byte, bool)) string {
	t.Helper()
	names, files := tarEntries(t, p)
	out := filepath.Join(t.TempDir(), "rewritten.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		data, isFile := files[n]
		if !isFile {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: 0o755})
			continue
		}
		data, keep := change(n, append([]byte(nil), data...))
		if !keep {
			continue
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	tw.Close()
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func twoImages(t *testing.T) []NamedImage {
	t.Helper()
	tiny, err := Build(tinySpec())
	if err != nil {
		t.Fatal(err)
	}
	spec := tinySpec()
	spec.Config.Cmd = []string{"--quiet"} // same layer, other config: the layer blob is shared
	other, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	return []NamedImage{{Ref: "kubebake.local/tiny:1.0", Image: tiny}, {Ref: "kubebake.local/team/other:v2", Image: other}}
}

// The archive is an OCI layout containerd names images from: oci-layout 1.0.0, index.json
// with both annotations and the platform per manifest, every blob once, and it reads back
// and validates with go-containerregistry.
func TestArchiveLayoutAndValidate(t *testing.T) {
	images := twoImages(t)
	p := filepath.Join(t.TempDir(), "images.tar")
	a, err := WriteArchive(p, images)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	sum := sha256.Sum256(data)
	if a.SHA256 != hex.EncodeToString(sum[:]) || a.Size != int64(len(data)) {
		t.Errorf("archive says sha256 %s size %d; the file has %x, %d", a.SHA256, a.Size, sum, len(data))
	}

	names, files := tarEntries(t, p)
	// 2 manifests + 2 configs + 1 shared layer.
	if len(names) != 4+5 || names[0] != "oci-layout" || names[1] != "index.json" || names[2] != "blobs/" || names[3] != "blobs/sha256/" {
		t.Errorf("archive entries %v", names)
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %s", files["oci-layout"])
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if index.MediaType != "application/vnd.oci.image.index.v1+json" || len(index.Manifests) != 2 {
		t.Fatalf("index.json: %s", files["index.json"])
	}
	wantNames := [][2]string{{"kubebake.local/tiny:1.0", "1.0"}, {"kubebake.local/team/other:v2", "v2"}}
	for i, m := range index.Manifests {
		if m.Annotations["io.containerd.image.name"] != wantNames[i][0] || m.Annotations["org.opencontainers.image.ref.name"] != wantNames[i][1] {
			t.Errorf("manifest %d annotations %v, want %v", i, m.Annotations, wantNames[i])
		}
		if m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != "amd64" {
			t.Errorf("manifest %d platform %v", i, m.Platform)
		}
		if m.Digest.String() != a.Images[i].Digest {
			t.Errorf("manifest %d digest %s, WriteArchive said %s", i, m.Digest, a.Images[i].Digest)
		}
	}

	checked, err := Validate(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(checked) != 2 {
		t.Fatalf("Validate found %d images", len(checked))
	}
	for i, c := range checked {
		if c.Ref != wantNames[i][0] || c.RefName != wantNames[i][1] || c.Digest != a.Images[i].Digest {
			t.Errorf("validated image %d: %+v", i, c)
		}
	}
	if got := strings.Join(checked[1].Config.Config.Cmd, " "); got != "--quiet" {
		t.Errorf("second image's cmd %q", got)
	}
}

// Validate is not a rubber stamp: a flipped byte in a blob, a missing blob and a wrong
// oci-layout version are each refused.
func TestValidateRefusesDamage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "images.tar")
	if _, err := WriteArchive(p, twoImages(t)); err != nil {
		t.Fatal(err)
	}
	_, files := tarEntries(t, p)
	rewrite := func(change func(name string, data []byte) ([]byte, bool)) string { return rewriteTar(t, p, change) }
	var layer string // the gzip blob
	for n, d := range files {
		if bytes.HasPrefix(d, []byte{0x1f, 0x8b}) {
			layer = n
		}
	}
	damages := map[string]func(string, []byte) ([]byte, bool){
		"flipped byte in the layer": func(n string, d []byte) ([]byte, bool) {
			if n == layer {
				d[len(d)/2] ^= 0xff
			}
			return d, true
		},
		"missing layer": func(n string, d []byte) ([]byte, bool) { return d, n != layer },
		"layout 1.1": func(n string, d []byte) ([]byte, bool) {
			if n == "oci-layout" {
				return []byte(`{"imageLayoutVersion":"1.1.0"}`), true
			}
			return d, true
		},
		"short name": func(n string, d []byte) ([]byte, bool) {
			if n == "index.json" {
				d = bytes.ReplaceAll(d, []byte(`"kubebake.local/tiny:1.0"`), []byte(`"tiny:1.0"`))
			}
			return d, true
		},
	}
	if _, err := Validate(rewrite(func(_ string, d []byte) ([]byte, bool) { return d, true })); err != nil {
		t.Fatalf("an unchanged copy fails: %v", err)
	}
	for name, change := range damages {
		if _, err := Validate(rewrite(change)); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// Names must be full and canonical: containerd uses them verbatim.
func TestArchiveRefusesShortNames(t *testing.T) {
	img, err := Build(tinySpec())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, ref := range []string{"busybox:1.35.0", "kubebake.local/busybox", "docker.io/library/busybox:1", "index.docker.io/library/busybox:1", "kubebake.local/BusyBox:1", "kubebake.local/busybox@sha256:" + strings.Repeat("0", 64)} {
		if _, err := WriteArchive(filepath.Join(dir, "x.tar"), []NamedImage{{Ref: ref, Image: img}}); err == nil {
			t.Errorf("WriteArchive accepted %q", ref)
		}
	}
	if _, err := WriteArchive(filepath.Join(dir, "x.tar"), []NamedImage{{Ref: "kubebake.local/a:1", Image: img}, {Ref: "kubebake.local/a:1", Image: img}}); err == nil {
		t.Error("WriteArchive accepted the same name twice")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused writes left %v behind", entries)
	}
}
