package builder

import (
	"bytes"
	"encoding/json"
	"io/fs"

	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
)

// Paths of the build's self-description inside the image (docs/node-contract.md).
const (
	ImageManifestPath = "/etc/kubebake/manifest.json"
	ImageSBOMPath     = "/etc/kubebake/sbom.spdx.json"
	ManifestName      = "manifest.json"
	SBOMName          = "sbom.spdx.json"
	ManifestKind      = "ImageManifest"
)

// Manifest says what an image holds. The copy inside the image (/etc/kubebake/manifest.json)
// is the same document without Outputs and Build: an image cannot contain its own checksum,
// and a build duration would make the image differ from one build to the next.
type Manifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Recipe is the recipe with its defaults applied, as the build used it.
	Recipe          *recipes.Recipe `json:"recipe"`
	LockHash        string          `json:"lockHash"`
	SourceDateEpoch int64           `json:"sourceDateEpoch"`
	Image           ImageInfo       `json:"image"`
	// Artifacts are every lock entry: binaries and Debian packages with version and sha256.
	Artifacts []recipes.LockedArtifact `json:"artifacts"`
	// Files are the node layer's entries as written into the image; regular files carry the
	// sha256 of the bytes written.
	Files []ManifestFile `json:"files"`
	// Units are the layer's systemd units and the roles that start each (none: shared).
	Units []roles.Unit `json:"units"`
	// Packages are every Debian package installed in the image (its dpkg status).
	Packages []DebPackage `json:"packages"`

	// Only in the build output folder's manifest.json.
	Outputs []OutputFile `json:"outputs,omitempty"`
	Build   *BuildInfo   `json:"build,omitempty"`
}

// ImageInfo describes the disk.
type ImageInfo struct {
	Size          int64  `json:"size"`
	Kernel        string `json:"kernel"`
	Cmdline       string `json:"cmdline"`
	Bootloader    string `json:"bootloader"`
	BootloaderSHA string `json:"bootloaderSha256"`
	// BootloaderFrom is "rootfs" (the image's systemd-boot-efi package) or "host".
	BootloaderFrom string `json:"bootloaderFrom"`
	DiskGUID       string `json:"diskGuid"`
	ESPPartUUID    string `json:"espPartUuid"`
	RootPartUUID   string `json:"rootPartUuid"`
	RootFSUUID     string `json:"rootFsUuid"`
	ESPSerial      string `json:"espSerial"`
	ESPSize        int64  `json:"espSize"`
	RootSize       int64  `json:"rootSize"`
}

// ManifestFile is one node layer entry.
type ManifestFile struct {
	Path     string      `json:"path"`
	Type     string      `json:"type"`
	Mode     fs.FileMode `json:"mode"`
	UID      int         `json:"uid"`
	GID      int         `json:"gid"`
	Artifact string      `json:"artifact,omitempty"`
	SHA256   string      `json:"sha256,omitempty"`
	Size     int64       `json:"size,omitempty"`
	Target   string      `json:"target,omitempty"`
}

// OutputFile is one file the build wrote.
type OutputFile struct {
	Name   string `json:"name"`
	Format string `json:"format,omitempty"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// BuildInfo is about the build rather than the image.
type BuildInfo struct {
	Kubebake string      `json:"kubebake,omitempty"`
	Seconds  float64     `json:"seconds"`
	Stages   []StageTime `json:"stages"`
	// RootfsCached says the rootfs tarball came from the cache.
	RootfsCached bool `json:"rootfsCached"`
}

// StageTime is one build stage's duration.
type StageTime struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// manifestFiles lists the layer's entries with the digests of what was written.
func manifestFiles(layer *roles.Layer, written []LayerFile) []ManifestFile {
	sums := map[string]LayerFile{}
	for _, f := range written {
		sums[f.Path] = f
	}
	out := make([]ManifestFile, 0, len(layer.Files))
	for _, f := range layer.Files {
		mf := ManifestFile{Path: f.Path, Type: string(f.Type), Mode: f.Mode, UID: f.UID, GID: f.GID, Artifact: f.Artifact, Target: f.Target}
		if f.Type == roles.TypeFile {
			mf.SHA256, mf.Size = f.SHA256, f.Size
			if w, ok := sums[f.Path]; ok {
				mf.SHA256, mf.Size = w.SHA256, w.Size
			}
		}
		out = append(out, mf)
	}
	return out
}

// marshalJSON is the one way the builder writes JSON: indented, no HTML escaping, newline.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
