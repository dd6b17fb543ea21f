package builder

import (
	"bytes"
	"encoding/json"

	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/roles"
)

// The manifest document, its apiVersion and its file names belong to package manifest. These
// names stay for the builder's tests and callers that spell them the builder's way.
type (
	Manifest     = manifest.Manifest
	ManifestFile = manifest.File
)

// Paths of the build's self-description (docs/node-contract.md), as package manifest has them.
const (
	ImageManifestPath = manifest.ImagePath
	ImageSBOMPath     = manifest.ImageSBOMPath
	ManifestName      = manifest.Name
	SBOMName          = manifest.SBOMName
)

// manifestFiles lists the layer's entries with the digests of what was written.
func manifestFiles(layer *roles.Layer, written []LayerFile) []manifest.File {
	sums := map[string]LayerFile{}
	for _, f := range written {
		sums[f.Path] = f
	}
	out := make([]manifest.File, 0, len(layer.Files))
	for _, f := range layer.Files {
		mf := manifest.File{Path: f.Path, Type: string(f.Type), Mode: f.Mode, UID: f.UID, GID: f.GID, Artifact: f.Artifact, Target: f.Target}
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

// marshalJSON is the one way the builder writes JSON other than the manifest (the SBOM):
// indented, no HTML escaping, newline, as manifest.Marshal.
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
