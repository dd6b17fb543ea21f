package oci

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// CheckedImage is one image found in an archive that Validate read back.
type CheckedImage struct {
	Ref      string // the io.containerd.image.name annotation
	RefName  string // the org.opencontainers.image.ref.name annotation (the tag)
	Digest   string // manifest digest, sha256:<hex>
	Platform v1.Platform
	Config   v1.ConfigFile
}

// Validate reads an archive written by WriteArchive back with go-containerregistry's layout
// reader and checks it the way an importer would: the oci-layout version, every blob's
// sha256 against its name, the index, manifest, config and layer media types, and each image
// with validate.Image (digests, diff IDs, sizes, config). It returns the images in index
// order.
func Validate(archivePath string) ([]CheckedImage, error) {
	dir, err := os.MkdirTemp("", "kubebake-oci-validate-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := unpackLayout(archivePath, dir); err != nil {
		return nil, fmt.Errorf("%s: %w", archivePath, err)
	}
	imgs, err := validateLayout(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", archivePath, err)
	}
	return imgs, nil
}

// unpackLayout extracts the archive's regular files and checks each blob's name is its
// sha256. It refuses names that are not plain relative paths.
func unpackLayout(archivePath, dir string) error {
	f, err := os.Open(archivePath)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the tar: %w", err)
		}
		name := path.Clean(h.Name)
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q points outside the layout", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return fmt.Errorf("entry %s has tar type %q; an OCI layout holds only files and folders", h.Name, h.Typeflag)
		}
		if seen[name] {
			return fmt.Errorf("entry %s appears twice", name)
		}
		seen[name] = true
		target := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		sum := sha256.New()
		_, err = io.Copy(io.MultiWriter(out, sum), tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("extracting %s: %w", name, err)
		}
		if hexName, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			if got := hex.EncodeToString(sum.Sum(nil)); got != hexName {
				return fmt.Errorf("blob %s has sha256 %s: the archive is corrupt", name, got)
			}
		} else if name != "oci-layout" && name != "index.json" {
			return fmt.Errorf("unexpected entry %s (only oci-layout, index.json and blobs/sha256/<hex>)", name)
		}
	}
	layoutFile, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil {
		return fmt.Errorf("no oci-layout file: containerd would not read it as an OCI layout")
	}
	if strings.TrimSpace(string(layoutFile)) != ociLayoutFile {
		return fmt.Errorf("oci-layout is %q, containerd 1.6 accepts only %s", layoutFile, ociLayoutFile)
	}
	return nil
}

func validateLayout(dir string) ([]CheckedImage, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading index.json: %w", err)
	}
	if mt, err := idx.MediaType(); err != nil || mt != types.OCIImageIndex {
		return nil, fmt.Errorf("index.json media type %q (%v), want %s", mt, err, types.OCIImageIndex)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) == 0 {
		return nil, fmt.Errorf("index.json lists no images")
	}
	var out []CheckedImage
	for _, d := range im.Manifests {
		c, err := checkImage(idx, d)
		if err != nil {
			return nil, fmt.Errorf("image %s (%s): %w", d.Annotations[annotationImageName], d.Digest, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func checkImage(idx v1.ImageIndex, d v1.Descriptor) (CheckedImage, error) {
	c := CheckedImage{Ref: d.Annotations[annotationImageName], RefName: d.Annotations[annotationRefName], Digest: d.Digest.String()}
	if !d.MediaType.IsImage() {
		return c, fmt.Errorf("manifest media type %q, want %s (or Docker schema 2)", d.MediaType, types.OCIManifestSchema1)
	}
	if _, err := parseRef(c.Ref); err != nil {
		return c, fmt.Errorf("annotation %s: %w", annotationImageName, err)
	}
	if !strings.HasSuffix(c.Ref, ":"+c.RefName) {
		return c, fmt.Errorf("annotation %s=%q is not the tag of %s", annotationRefName, c.RefName, c.Ref)
	}
	if d.Platform == nil || d.Platform.OS != Platform.OS || d.Platform.Architecture != Platform.Architecture {
		return c, fmt.Errorf("descriptor platform %v, want %s/%s", d.Platform, Platform.OS, Platform.Architecture)
	}
	c.Platform = *d.Platform
	img, err := idx.Image(d.Digest)
	if err != nil {
		return c, err
	}
	if err := validate.Image(img); err != nil {
		return c, err
	}
	m, err := img.Manifest()
	if err != nil {
		return c, err
	}
	if err := checkImportable(m); err != nil {
		return c, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return c, err
	}
	if cfg.OS != Platform.OS || cfg.Architecture != Platform.Architecture {
		return c, fmt.Errorf("config platform %s/%s, want %s/%s", cfg.OS, cfg.Architecture, Platform.OS, Platform.Architecture)
	}
	c.Config = *cfg
	return c, nil
}
