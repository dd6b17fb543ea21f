package oci

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// Archives kubebake did not write: a recipe's images[].archive. Two formats are read, both a
// tar holding exactly one linux/amd64 image:
//   - an OCI image layout (oci-layout, index.json, blobs/sha256/<hex>), as `docker save`
//     writes it since Docker 25, `crane pull --format oci`, `skopeo copy oci-archive:` or
//     `buildx --output type=oci`; its blobs are kept as they are, so the image keeps its
//     manifest digest;
//   - a `docker save` tarball of older Dockers (manifest.json, <id>/layer.tar), whose
//     registry manifest go-containerregistry makes up (compressing uncompressed layers).
//
// The lock rewrites the image with WriteArchive under a kubebake.local name (ExtraImageRef):
// containerd names an imported image by an annotation another tool may not write, so only a
// rewritten archive is imported under a name kubebake chose.

// Archive formats.
const (
	FormatOCILayout  = "OCI image layout"
	FormatDockerSave = "docker save"
)

// ForeignImage is what an archive says about its one image.
type ForeignImage struct {
	Format string
	// Ref is the reference the archive names the image by ("docker.io/library/hello:1.0"),
	// "" when it names none; Tag is its tag ("1.0"), "" when there is none.
	Ref, Tag string
	Config   v1.ConfigFile
}

// InspectArchive reads an archive's format, its one image's name and config, and refuses
// anything but one linux/amd64 image, without reading the layers: cheap enough for lint.
func InspectArchive(archivePath string) (ForeignImage, error) {
	fi, _, closer, err := openArchive(archivePath, false)
	if closer != nil {
		closer.Close()
	}
	return fi, err
}

// OpenArchive is InspectArchive that also returns the image, its layers read from the file
// when asked; the caller closes the closer once done with the image.
func OpenArchive(archivePath string) (ForeignImage, v1.Image, io.Closer, error) {
	fi, img, closer, err := openArchive(archivePath, true)
	if err != nil && closer != nil {
		closer.Close()
		closer = nil
	}
	return fi, img, closer, err
}

func openArchive(archivePath string, wantImage bool) (ForeignImage, v1.Image, io.Closer, error) {
	ix, err := indexTar(archivePath)
	if err != nil {
		return ForeignImage{}, nil, nil, fmt.Errorf("%s: %w", archivePath, err)
	}
	var fi ForeignImage
	var img v1.Image
	switch {
	case ix.has("oci-layout"):
		fi, img, err = ix.layoutImage(wantImage)
	case ix.has("manifest.json"):
		ix.Close() // go-containerregistry's tarball reader opens the file itself
		fi, img, err = dockerSaveImage(archivePath, wantImage)
		return fi, img, nopCloser{}, wrapPath(archivePath, err)
	default:
		err = fmt.Errorf("neither an OCI image layout (no oci-layout file) nor a docker save tarball (no manifest.json); write it with docker save -o FILE IMAGE or crane pull --format oci IMAGE FILE")
	}
	if err == nil {
		err = checkPlatform(fi.Config)
	}
	return fi, img, ix, wrapPath(archivePath, err)
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

func wrapPath(p string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

func checkPlatform(cfg v1.ConfigFile) error {
	if cfg.OS != Platform.OS || cfg.Architecture != Platform.Architecture {
		return fmt.Errorf("the image is for %s/%s, kubebake nodes run %s/%s; save the image of that platform (docker save --platform %[3]s/%[4]s, crane pull --platform %[3]s/%[4]s)",
			orUnknown(cfg.OS), orUnknown(cfg.Architecture), Platform.OS, Platform.Architecture)
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// tarIndex finds the regular files of a tar by name, read in place (no unpacking).
type tarIndex struct {
	f     *os.File
	files map[string]tarEntry
}

type tarEntry struct{ off, size int64 }

func indexTar(p string) (*tarIndex, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	ix := &tarIndex{f: f, files: map[string]tarEntry{}}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("not a readable tar: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue // folders; docker save's symlinked layers are go-containerregistry's to follow
		}
		name := path.Clean(h.Name)
		if _, dup := ix.files[name]; dup {
			f.Close()
			return nil, fmt.Errorf("entry %s appears twice", name)
		}
		// tar.Reader reads nothing ahead: the file offset is where the entry's data starts.
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, err
		}
		ix.files[name] = tarEntry{off: off, size: h.Size}
	}
	return ix, nil
}

func (ix *tarIndex) Close() error { return ix.f.Close() }

func (ix *tarIndex) has(name string) bool { _, ok := ix.files[name]; return ok }

func (ix *tarIndex) open(name string) (*io.SectionReader, error) {
	e, ok := ix.files[name]
	if !ok {
		return nil, fmt.Errorf("no entry %s", name)
	}
	return io.NewSectionReader(ix.f, e.off, e.size), nil
}

// maxJSON bounds the JSON documents read into memory (index, manifest, config).
const maxJSON = 16 << 20

func (ix *tarIndex) readJSON(name string, v any) ([]byte, error) {
	r, err := ix.open(name)
	if err != nil {
		return nil, err
	}
	if r.Size() > maxJSON {
		return nil, fmt.Errorf("%s is %d bytes, too large for a JSON document", name, r.Size())
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return data, nil
}

// readBlobJSON reads a JSON blob of a layout (an index, manifest or config) and checks it
// against its digest: the image's digest is computed from these bytes.
func (ix *tarIndex) readBlobJSON(h v1.Hash, v any) ([]byte, error) {
	data, err := ix.readJSON(blobPath(h), v)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(data); h.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != h.Hex {
		return nil, fmt.Errorf("blob %s does not have that digest: the archive is damaged or was edited; save it again", h)
	}
	return data, nil
}

// layoutImage reads the one image of an OCI layout: index.json lists it, directly or in one
// nested index (buildx's, beside attestation manifests).
func (ix *tarIndex) layoutImage(wantImage bool) (ForeignImage, v1.Image, error) {
	fi := ForeignImage{Format: FormatOCILayout}
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	if _, err := ix.readJSON("oci-layout", &layout); err != nil {
		return fi, nil, err
	}
	if layout.Version != "1.0.0" {
		return fi, nil, fmt.Errorf("oci-layout says imageLayoutVersion %q; only 1.0.0 exists", layout.Version)
	}
	var index v1.IndexManifest
	if _, err := ix.readJSON("index.json", &index); err != nil {
		return fi, nil, err
	}
	var images []v1.Descriptor
	for _, d := range index.Manifests {
		fi.Ref, fi.Tag = layoutRef(d.Annotations)
		switch {
		case d.MediaType.IsImage():
			images = append(images, d)
		case d.MediaType.IsIndex():
			var nested v1.IndexManifest
			if _, err := ix.readBlobJSON(d.Digest, &nested); err != nil {
				return fi, nil, err
			}
			for _, n := range nested.Manifests {
				if n.MediaType.IsImage() && !isAttestation(n) {
					images = append(images, n)
				}
			}
		}
	}
	if len(images) != 1 || len(index.Manifests) != 1 {
		fi.Ref, fi.Tag = "", ""
		return fi, nil, fmt.Errorf("holds %d images (%d entries in index.json); save exactly one image of one platform", len(images), len(index.Manifests))
	}
	d := images[0]
	li := &layoutImg{ix: ix, mediaType: d.MediaType}
	var err error
	if li.manifest, err = ix.readBlobJSON(d.Digest, &li.m); err != nil {
		return fi, nil, err
	}
	if li.config, err = ix.readBlobJSON(li.m.Config.Digest, &fi.Config); err != nil {
		return fi, nil, err
	}
	if err := checkImportable(&li.m); err != nil {
		return fi, nil, err
	}
	if !wantImage {
		return fi, nil, nil
	}
	img, err := partial.CompressedToImage(li)
	return fi, img, err
}

// isAttestation tells buildx's attestation manifests (platform unknown/unknown) from images.
func isAttestation(d v1.Descriptor) bool {
	return d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" ||
		(d.Platform != nil && d.Platform.OS == "unknown" && d.Platform.Architecture == "unknown")
}

// layoutRef is the reference an index.json entry names its image by: containerd's
// annotation (a full reference), else the OCI one, which holds a tag or a full reference.
func layoutRef(ann map[string]string) (ref, tag string) {
	if r := ann[annotationImageName]; r != "" {
		return r, tagOf(r)
	}
	r := ann[annotationRefName]
	if r == "" {
		return "", ""
	}
	if strings.ContainsAny(r, "/:@") {
		return r, tagOf(r)
	}
	if tagRE.MatchString(r) {
		return "", r
	}
	return "", ""
}

var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// tagOf is a reference's tag, "" when it has none (a digest reference, or no tag written:
// go-containerregistry would make that "latest").
func tagOf(ref string) string {
	t, err := name.NewTag(ref, name.WeakValidation)
	if err != nil || !strings.HasSuffix(ref, ":"+t.TagStr()) {
		return ""
	}
	return t.TagStr()
}

// layoutImg is the image of an OCI layout, its blobs read from the tar in place.
type layoutImg struct {
	ix               *tarIndex
	mediaType        types.MediaType
	manifest, config []byte
	m                v1.Manifest
}

func (i *layoutImg) MediaType() (types.MediaType, error) { return i.mediaType, nil }
func (i *layoutImg) RawManifest() ([]byte, error)        { return i.manifest, nil }
func (i *layoutImg) RawConfigFile() ([]byte, error)      { return i.config, nil }

func (i *layoutImg) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.m.Config.Digest {
		return &layoutBlob{ix: i.ix, d: i.m.Config}, nil
	}
	for _, d := range i.m.Layers {
		if d.Digest == h {
			return &layoutBlob{ix: i.ix, d: d}, nil
		}
	}
	return nil, fmt.Errorf("the manifest has no layer %s", h)
}

// layoutBlob is one blob of a layout image; validate.Image checks its content against d.
type layoutBlob struct {
	ix *tarIndex
	d  v1.Descriptor
}

func (b *layoutBlob) Digest() (v1.Hash, error)            { return b.d.Digest, nil }
func (b *layoutBlob) Size() (int64, error)                { return b.d.Size, nil }
func (b *layoutBlob) MediaType() (types.MediaType, error) { return b.d.MediaType, nil }

func (b *layoutBlob) Compressed() (io.ReadCloser, error) {
	r, err := b.ix.open(blobPath(b.d.Digest))
	if err != nil {
		return nil, fmt.Errorf("blob %s is missing from the archive", b.d.Digest)
	}
	return io.NopCloser(r), nil
}

// dockerSaveImage reads a docker save tarball's one image.
func dockerSaveImage(archivePath string, wantImage bool) (ForeignImage, v1.Image, error) {
	fi := ForeignImage{Format: FormatDockerSave}
	opener := func() (io.ReadCloser, error) { return os.Open(archivePath) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return fi, nil, fmt.Errorf("manifest.json: %w", err)
	}
	if len(m) != 1 {
		return fi, nil, fmt.Errorf("holds %d images; save exactly one (docker save -o FILE IMAGE)", len(m))
	}
	if len(m[0].RepoTags) > 0 {
		fi.Ref = m[0].RepoTags[0]
		fi.Tag = tagOf(fi.Ref)
	}
	img, err := tarball.Image(opener, nil)
	if err != nil {
		return fi, nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return fi, nil, fmt.Errorf("the image config: %w", err)
	}
	fi.Config = *cfg
	if err := checkPlatform(fi.Config); err != nil {
		return fi, nil, err
	}
	if !wantImage {
		return fi, nil, nil
	}
	// The manifest is made up from the layers (compressing them), so only when it is needed.
	im, err := img.Manifest()
	if err != nil {
		return fi, nil, err
	}
	if err := checkImportable(im); err != nil {
		return fi, nil, err
	}
	return fi, img, nil
}

// checkImportable refuses an image containerd could not import from the node's disk alone:
// a config or layer of a type it does not unpack, or a layer that lives elsewhere.
func checkImportable(m *v1.Manifest) error {
	if !m.Config.MediaType.IsConfig() {
		return fmt.Errorf("config media type %q is not an image config", m.Config.MediaType)
	}
	for _, l := range m.Layers {
		switch l.MediaType {
		case types.OCILayer, types.OCIUncompressedLayer, types.OCILayerZStd, types.DockerLayer, types.DockerUncompressedLayer:
		default:
			if !l.MediaType.IsDistributable() {
				return fmt.Errorf("layer %s is non-distributable (%s): a node would have to download it", l.Digest, l.MediaType)
			}
			return fmt.Errorf("layer %s media type %q is not one containerd unpacks", l.Digest, l.MediaType)
		}
	}
	return nil
}

// ExtraImageRef is the name a recipe's own image is imported as: kubebake.local/<name>:<tag>,
// where the tag is the archive's own (not "latest", whose pull policy would make the kubelet
// try a registry) or else "sha256-" and the first 12 hex digits of the manifest digest. A
// name under kubebake.local never resolves, so a pod naming an image the node lacks fails at
// once instead of reaching out.
func ExtraImageRef(name, tag, digest string) string {
	if tag == "" || tag == "latest" {
		tag = "sha256-" + shortHex(digest)
	}
	return Registry + "/" + name + ":" + tag
}

// BinaryRef is the name of a single-binary image: kubebake.local/<name>:<version>, the version
// as the module proxy tags it ("v0.3.1"); "+" is not allowed in a tag and becomes "_".
func BinaryRef(name, version string) string {
	return Registry + "/" + name + ":" + strings.ReplaceAll(version, "+", "_")
}

func shortHex(digest string) string {
	h := strings.TrimPrefix(digest, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// RewriteArchive writes the one image of the foreign archive at src as a kubebake archive at
// dst, named ExtraImageRef(name, its tag, its digest), after checking every blob against its
// digest. The manifest, config and layers are kept byte for byte: the image keeps its digest.
func RewriteArchive(src, dst, name string) (Archive, error) {
	fi, img, closer, err := OpenArchive(src)
	if err != nil {
		return Archive{}, err
	}
	defer closer.Close()
	if err := validate.Image(img); err != nil {
		return Archive{}, fmt.Errorf("%s: %w; the archive is damaged or was edited: save it again", src, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Archive{}, fmt.Errorf("%s: %w", src, err)
	}
	return WriteArchive(dst, []NamedImage{{Ref: ExtraImageRef(name, fi.Tag, digest.String()), Image: img}})
}
