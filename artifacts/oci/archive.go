package oci

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kubebake/kubebake/internal/atomicfile"
)

// How containerd names what it imports (read in containerd v1.6.20 client/import.go and
// images/archive/importer.go; v1.7.24 is the same, its ctr import runs locally by default):
//   - The tar is an OCI layout when it holds a regular file "oci-layout" whose
//     imageLayoutVersion is exactly "1.0.0"; "index.json" must be a regular file. Every other
//     regular file is ingested as a blob by the sha256 of its content (its name is not
//     checked), and folders are skipped.
//   - Each manifest descriptor in index.json becomes an image named by its
//     "io.containerd.image.name" annotation, used verbatim: it is not normalized, so it must
//     already be the full name CRI looks up (kubebake.local/busybox:1.35.0, never busybox:1.35).
//   - Only without that annotation does "org.opencontainers.image.ref.name" count, and then
//     ctr prefixes a bare tag with "import-<date>" unless --base-name is given: a name that
//     depends on the import day. So both annotations are written; the first one decides.
//   - Descriptors are filtered by platform (a descriptor without one passes) and unpacked for
//     the default platform, so each carries linux/amd64 and the config says linux/amd64.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
	ociLayoutFile       = `{"imageLayoutVersion":"1.0.0"}`
)

// NamedImage is an image and the full reference it is imported as.
type NamedImage struct {
	Ref   string // kubebake.local/busybox:1.35.0
	Image v1.Image
}

// ArchivedImage is one image of a written archive.
type ArchivedImage struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"` // the manifest digest, sha256:<hex>
}

// Archive describes a written archive.
type Archive struct {
	Path   string          `json:"path"`
	SHA256 string          `json:"sha256"`
	Size   int64           `json:"size"`
	Images []ArchivedImage `json:"images"`
}

// parseRef checks that ref is a full, canonical tag reference: containerd uses the name
// verbatim, so a short name would never match what kubelet asks for.
func parseRef(ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %q: %w; write it in full, like kubebake.local/busybox:1.35.0", ref, err)
	}
	if tag.Name() != ref || tag.RegistryStr() == name.DefaultRegistry {
		return name.Tag{}, fmt.Errorf("image reference %q is not in canonical form (it reads as %s); use a registry of its own, like kubebake.local/busybox:1.35.0", ref, tag.Name())
	}
	return tag, nil
}

// WriteArchive writes the images as one OCI image layout in a tar at path, atomically: the
// file oci-layout, index.json (one manifest per image, in the given order, annotated with its
// name) and blobs/sha256/<hex> for every manifest, config and layer, each blob once. Entries
// are in a fixed order with fixed times, so equal images give a byte-identical archive.
func WriteArchive(path string, images []NamedImage) (Archive, error) {
	if len(images) == 0 {
		return Archive{}, fmt.Errorf("writing %s: no images given", path)
	}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}
	out := Archive{Path: path}
	seen := map[string]bool{}
	for _, ni := range images {
		tag, err := parseRef(ni.Ref)
		if err != nil {
			return Archive{}, err
		}
		if seen[ni.Ref] {
			return Archive{}, fmt.Errorf("writing %s: image %s is given twice", path, ni.Ref)
		}
		seen[ni.Ref] = true
		desc, err := manifestDescriptor(ni.Image)
		if err != nil {
			return Archive{}, fmt.Errorf("image %s: %w", ni.Ref, err)
		}
		platform := Platform
		desc.Platform = &platform
		desc.Annotations = map[string]string{annotationImageName: ni.Ref, annotationRefName: tag.TagStr()}
		index.Manifests = append(index.Manifests, desc)
		out.Images = append(out.Images, ArchivedImage{Ref: ni.Ref, Digest: desc.Digest.String()})
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return Archive{}, err
	}

	sum := sha256.New()
	err = atomicfile.Write(path, 0o644, func(w io.Writer) error {
		cw := &countingWriter{w: io.MultiWriter(w, sum)}
		tw := tar.NewWriter(cw)
		if err := writeTarFile(tw, "oci-layout", []byte(ociLayoutFile)); err != nil {
			return err
		}
		if err := writeTarFile(tw, "index.json", indexJSON); err != nil {
			return err
		}
		for _, dir := range []string{"blobs/", "blobs/sha256/"} {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: archiveTime}); err != nil {
				return err
			}
		}
		written := map[v1.Hash]bool{}
		for _, ni := range images {
			if err := writeImageBlobs(tw, ni.Image, written); err != nil {
				return fmt.Errorf("image %s: %w", ni.Ref, err)
			}
		}
		if err := tw.Close(); err != nil {
			return err
		}
		out.Size = cw.n
		return nil
	})
	if err != nil {
		return Archive{}, err
	}
	out.SHA256 = hex.EncodeToString(sum.Sum(nil))
	return out, nil
}

// manifestDescriptor is the index entry of an image: media type, size and digest only (the
// index is written here rather than by mutate.AppendManifests, which also adds an
// artifactType that containerd 1.6 does not know). Images kubebake builds have OCI manifests;
// a recipe's own archive may hold a Docker schema 2 one, which containerd imports alike and
// which is kept as it is so that the image keeps its digest.
func manifestDescriptor(img v1.Image) (v1.Descriptor, error) {
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	if !mt.IsImage() {
		return v1.Descriptor{}, fmt.Errorf("manifest media type %s is not an image manifest containerd imports (OCI or Docker schema 2)", mt)
	}
	size, err := img.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Size: size, Digest: digest}, nil
}

// archiveTime is the mtime of every archive entry: the archive is a transport, its blobs are
// named by content, and a fixed time keeps it byte-identical.
var archiveTime = time.Unix(0, 0).UTC()

// writeImageBlobs writes the manifest, config and layers of img that are not written yet.
func writeImageBlobs(tw *tar.Writer, img v1.Image, written map[v1.Hash]bool) error {
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	configName, err := img.ConfigName()
	if err != nil {
		return err
	}
	for _, b := range []struct {
		h    v1.Hash
		data []byte
	}{{digest, manifest}, {configName, config}} {
		if written[b.h] {
			continue
		}
		written[b.h] = true
		if err := writeTarFile(tw, blobPath(b.h), b.data); err != nil {
			return err
		}
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		if written[h] {
			continue
		}
		written[h] = true
		if err := writeLayerBlob(tw, h, l); err != nil {
			return fmt.Errorf("layer %s: %w", h, err)
		}
	}
	return nil
}

func writeLayerBlob(tw *tar.Writer, h v1.Hash, l v1.Layer) error {
	size, err := l.Size()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: blobPath(h), Mode: 0o644, Size: size, ModTime: archiveTime}); err != nil {
		return err
	}
	check := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, check), rc)
	if err != nil {
		return err
	}
	if n != size || hex.EncodeToString(check.Sum(nil)) != h.Hex {
		return fmt.Errorf("the layer read back as %d bytes with another digest than its descriptor (%d bytes)", n, size)
	}
	return nil
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

func writeTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: archiveTime}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
