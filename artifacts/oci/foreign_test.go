package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tarFile is one regular file of a tar written by writeTar.
type tarFile struct {
	name string
	data []byte
}

func writeTar(t *testing.T, files ...tarFile) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "archive.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func tinyImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := Build(tinySpec())
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// ociLayoutArchive is an OCI layout holding img under ref, as another tool's archive.
func ociLayoutArchive(t *testing.T, ref string, img v1.Image) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "oci.tar")
	if _, err := WriteArchive(p, []NamedImage{{Ref: ref, Image: img}}); err != nil {
		t.Fatal(err)
	}
	return p
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// rewriteChecked rewrites src for image name and checks the result validates, names the
// image ref and keeps digest (when given); it returns the archive.
func rewriteChecked(t *testing.T, src, name, ref, digest string) Archive {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name+".tar")
	a, err := RewriteArchive(src, dst, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Images) != 1 || a.Images[0].Ref != ref || (digest != "" && a.Images[0].Digest != digest) {
		t.Fatalf("rewritten %+v, want %s at %s", a.Images, ref, digest)
	}
	checked, err := Validate(dst)
	if err != nil {
		t.Fatal(err)
	}
	if checked[0].Ref != ref || checked[0].Digest != a.Images[0].Digest {
		t.Errorf("validated %+v", checked[0])
	}
	again, err := RewriteArchive(src, filepath.Join(t.TempDir(), "again.tar"), name)
	if err != nil || again.SHA256 != a.SHA256 {
		t.Errorf("a second rewrite differs: %s vs %s (%v)", again.SHA256, a.SHA256, err)
	}
	return a
}

// An OCI layout keeps its blobs, so the image keeps its digest; its own tag becomes the tag
// under kubebake.local.
func TestForeignOCILayout(t *testing.T) {
	img := tinyImage(t)
	src := ociLayoutArchive(t, "registry.example.com/team/hello:1.0", img)
	fi, err := InspectArchive(src)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Format != FormatOCILayout || fi.Ref != "registry.example.com/team/hello:1.0" || fi.Tag != "1.0" || fi.Config.Architecture != "amd64" {
		t.Errorf("inspected %+v", fi)
	}
	rewriteChecked(t, src, "hello", "kubebake.local/hello:1.0", digestOf(t, img))

	// Without containerd's annotation the OCI one names the tag; with neither, or with
	// "latest", the tag comes from the digest.
	for _, c := range []struct{ name, annotations, ref string }{
		{"ref.name only", `"annotations":{"org.opencontainers.image.ref.name":"2.1"}`, "kubebake.local/hello:2.1"},
		{"no name", "", "kubebake.local/hello:sha256-" + strings.TrimPrefix(digestOf(t, img), "sha256:")[:12]},
		{"latest", `"annotations":{"io.containerd.image.name":"docker.io/library/hello:latest"}`, "kubebake.local/hello:sha256-" + strings.TrimPrefix(digestOf(t, img), "sha256:")[:12]},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := rewriteTar(t, src, func(n string, d []byte) ([]byte, bool) {
				if n == "index.json" {
					d = editIndex(t, d, c.annotations)
				}
				return d, true
			})
			rewriteChecked(t, p, "hello", c.ref, digestOf(t, img))
		})
	}
}

// editIndex replaces the annotations of index.json's one entry with the JSON members given.
func editIndex(t *testing.T, data []byte, annotations string) []byte {
	t.Helper()
	var idx v1.IndexManifest
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	idx.Manifests[0].Annotations = nil
	if annotations != "" {
		if err := json.Unmarshal([]byte("{"+annotations+"}"), &idx.Manifests[0]); err != nil {
			t.Fatal(err)
		}
	}
	out, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A docker save tarball as go-containerregistry writes it (compressed layers) and as older
// Dockers wrote it (uncompressed layer.tar): read, named by its RepoTag, rewritten the same
// way twice.
func TestForeignDockerSave(t *testing.T) {
	src := filepath.Join(t.TempDir(), "docker.tar")
	if err := tarball.WriteToFile(src, name.MustParseReference("hello:2.0"), tinyImage(t)); err != nil {
		t.Fatal(err)
	}
	fi, err := InspectArchive(src)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Format != FormatDockerSave || fi.Ref != "hello:2.0" || fi.Tag != "2.0" {
		t.Errorf("inspected %+v", fi)
	}
	rewriteChecked(t, src, "hello", "kubebake.local/hello:2.0", "")

	layer := writeTar(t, tarFile{"hello.txt", []byte("hello\n")})
	layerData, _ := os.ReadFile(layer)
	diffID := sha256.Sum256(layerData)
	config := []byte(`{"architecture":"amd64","os":"linux","config":{"Cmd":["cat","/hello.txt"]},"rootfs":{"type":"layers","diff_ids":["sha256:` + hex.EncodeToString(diffID[:]) + `"]}}`)
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	legacy := writeTar(t,
		tarFile{configName, config},
		tarFile{"0123abcd/layer.tar", layerData},
		tarFile{"manifest.json", []byte(`[{"Config":"` + configName + `","RepoTags":["hello:latest"],"Layers":["0123abcd/layer.tar"]}]`)},
	)
	fi, err = InspectArchive(legacy)
	if err != nil || fi.Tag != "latest" {
		t.Fatalf("legacy docker save: %+v %v", fi, err)
	}
	a, err := RewriteArchive(legacy, filepath.Join(t.TempDir(), "x.tar"), "hello")
	if err != nil {
		t.Fatal(err)
	}
	rewriteChecked(t, legacy, "hello", "kubebake.local/hello:sha256-"+strings.TrimPrefix(a.Images[0].Digest, "sha256:")[:12], a.Images[0].Digest)
}

// buildx writes a single-platform image as an index with the image and an attestation
// manifest: the image is found, the attestation left out.
func TestForeignNestedIndex(t *testing.T) {
	img := tinyImage(t)
	src := ociLayoutArchive(t, "registry.example.com/hello:3.0", img)
	_, files := tarEntries(t, src)
	var top v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &top); err != nil {
		t.Fatal(err)
	}
	imgDesc := top.Manifests[0]
	imgDesc.Annotations = nil
	attestation := v1.Descriptor{MediaType: imgDesc.MediaType, Size: imgDesc.Size, Digest: imgDesc.Digest,
		Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}, Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}}
	nested, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: top.MediaType, Manifests: []v1.Descriptor{imgDesc, attestation}})
	nestedSum := sha256.Sum256(nested)
	nestedHash := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(nestedSum[:])}
	top.Manifests[0] = v1.Descriptor{MediaType: top.MediaType, Size: int64(len(nested)), Digest: nestedHash,
		Annotations: map[string]string{"org.opencontainers.image.ref.name": "3.0"}}
	topJSON, _ := json.Marshal(top)
	entries := []tarFile{{"oci-layout", files["oci-layout"]}, {"index.json", topJSON}, {blobPath(nestedHash), nested}}
	for n, d := range files {
		if strings.HasPrefix(n, "blobs/") {
			entries = append(entries, tarFile{n, d})
		}
	}
	rewriteChecked(t, writeTar(t, entries...), "hello", "kubebake.local/hello:3.0", digestOf(t, img))
}

// What is not one importable linux/amd64 image is refused, saying what the archive holds and
// how to save one that works.
func TestForeignArchiveRefusals(t *testing.T) {
	img := tinyImage(t)
	arm, err := mutate.ConfigFile(img, func() *v1.ConfigFile { c, _ := img.ConfigFile(); c = c.DeepCopy(); c.Architecture = "arm64"; return c }())
	if err != nil {
		t.Fatal(err)
	}
	two := filepath.Join(t.TempDir(), "two.tar")
	if _, err := WriteArchive(two, twoImages(t)); err != nil {
		t.Fatal(err)
	}
	good := ociLayoutArchive(t, "registry.example.com/hello:1.0", img)
	var layer string
	_, files := tarEntries(t, good)
	for n, d := range files {
		if bytes.HasPrefix(d, []byte{0x1f, 0x8b}) {
			layer = n
		}
	}
	for _, c := range []struct {
		name, path, want string
		inspectOK        bool // the damage is only seen once the layers are read
	}{
		{"not a tar", writeFile(t, []byte(strings.Repeat("not a tar archive\n", 64))), "not a readable tar", false},
		{"no image", writeTar(t, tarFile{"hello.txt", []byte("hi")}), "neither an OCI image layout", false},
		{"two images", two, "holds 2 images", false},
		{"arm64", ociLayoutArchive(t, "registry.example.com/hello:arm", arm), "is for linux/arm64", false},
		{"oci-layout 1.1", rewriteTar(t, good, func(n string, d []byte) ([]byte, bool) {
			if n == "oci-layout" {
				d = []byte(`{"imageLayoutVersion":"1.1.0"}`)
			}
			return d, true
		}), "only 1.0.0 exists", false},
		{"flipped byte in the layer", rewriteTar(t, good, func(n string, d []byte) ([]byte, bool) {
			if n == layer {
				d[len(d)/2] ^= 0xff
			}
			return d, true
		}), "damaged or was edited", true},
		{"missing layer", rewriteTar(t, good, func(n string, d []byte) ([]byte, bool) { return d, n != layer }), "missing from the archive", true},
		{"edited config", rewriteTar(t, good, func(n string, d []byte) ([]byte, bool) {
			return bytes.Replace(d, []byte(`"rootfs"`), []byte(` "rootfs"`), 1), true
		}), "does not have that digest", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := InspectArchive(c.path)
			if c.inspectOK != (err == nil) {
				t.Errorf("inspect: %v", err)
			}
			_, err = RewriteArchive(c.path, filepath.Join(t.TempDir(), "out.tar"), "hello")
			t.Logf("%v", err)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path) {
				t.Errorf("rewrite: %v, want %q naming the file", err, c.want)
			}
		})
	}
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A gomod image: the program as /<name> and its entrypoint, named by its module version.
func TestBinaryImage(t *testing.T) {
	bin := busyboxBinary(t)
	ni, err := BinaryImage(BinaryInput{Name: "agent", Binary: bin, Version: "v0.3.1", SourceDateEpoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	if ni.Ref != "kubebake.local/agent:v0.3.1" {
		t.Errorf("ref %s", ni.Ref)
	}
	_, order := readLayer(t, ni.Image)
	if got := strings.Join(order, " "); got != "agent etc/ etc/group etc/passwd" {
		t.Errorf("layer %s", got)
	}
	cfg, _ := ni.Image.ConfigFile()
	if strings.Join(cfg.Config.Entrypoint, " ") != "/agent" || len(cfg.Config.ExposedPorts) != 0 || cfg.Config.Labels["org.opencontainers.image.version"] != "v0.3.1" {
		t.Errorf("config %+v", cfg.Config)
	}
	if BinaryRef("agent", "v2.0.0+incompatible") != "kubebake.local/agent:v2.0.0_incompatible" {
		t.Error(BinaryRef("agent", "v2.0.0+incompatible"))
	}
	for _, bad := range []BinaryInput{{Name: "", Binary: bin}, {Name: "a/b", Binary: bin}, {Name: "agent", Binary: "/usr/bin/env", Version: "v1"}} {
		if _, err := BinaryImage(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}
