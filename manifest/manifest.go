// Package manifest owns manifest.json, the document in which a build says what an image
// holds. The builder writes it (into the build output folder and, without Outputs and Build,
// into the image as /etc/kubebake/manifest.json); verify and kubebake's commands read it.
//
// The document is versioned by its apiVersion and kind. Read and Parse refuse any other
// apiVersion or kind than this package's, with a message that names the file and says how to
// get a pair that works, rather than decoding a shape they do not know into zero values.
//
// Field order and JSON names are part of the contract: the in-image copy's bytes are part of
// the image, and images are reproducible. A field added to Manifest changes every image
// built afterwards.
package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/recipes"
)

// APIVersion and Kind identify the document. A manifest with another apiVersion or kind is
// refused on read.
const (
	APIVersion = "kubebake.dev/v1alpha1"
	Kind       = "ImageManifest"
)

// Where the manifest and the SBOM are (docs/node-contract.md).
const (
	// Name and SBOMName are the files in a build output folder.
	Name     = "manifest.json"
	SBOMName = "sbom.spdx.json"
	// ImagePath and ImageSBOMPath are the copies inside the image.
	ImagePath     = "/etc/kubebake/manifest.json"
	ImageSBOMPath = "/etc/kubebake/sbom.spdx.json"
)

// Manifest says what an image holds. The copy inside the image (ImagePath) is the same
// document without Outputs and Build: an image cannot contain its own checksum, and a build
// duration would make the image differ from one build to the next.
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
	Files []File `json:"files"`
	// Units are the layer's systemd units and the roles that start each (none: shared).
	Units []Unit `json:"units"`
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

// File is one node layer entry.
type File struct {
	Path     string      `json:"path"`
	Type     string      `json:"type"` // file, dir, symlink
	Mode     fs.FileMode `json:"mode"`
	UID      int         `json:"uid"`
	GID      int         `json:"gid"`
	Artifact string      `json:"artifact,omitempty"`
	SHA256   string      `json:"sha256,omitempty"`
	Size     int64       `json:"size,omitempty"`
	Target   string      `json:"target,omitempty"`
}

// Unit is one systemd unit of the node layer and what starts it (roles.Unit is this type).
type Unit struct {
	Name string `json:"name"`
	// Roles whose marker lets the unit start (its role drop-in); empty for shared units.
	// A unit gets the roles that list it and the roles of every unit that needs it (a
	// dependency such as kubebake-master-pki.service runs wherever its dependents may).
	Roles []string `json:"roles,omitempty"`
	// Foreign units come from a Debian package (containerd.service): the layer carries only
	// their role drop-in and enablement link.
	Foreign bool `json:"foreign,omitempty"`
	// Enabled units are pulled in at boot by a link in the layer: role units by
	// kubebake-roles.target, shared units by multi-user.target.
	Enabled bool `json:"enabled"`
	// Listed is true for units a recipe role names (as opposed to dependencies).
	Listed bool `json:"listed,omitempty"`
}

// DebPackage is one installed Debian package, from the image's /var/lib/dpkg/status.
type DebPackage struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	Architecture string `json:"architecture"`
	// Source is the source package name, when it differs from Name.
	Source string `json:"source,omitempty"`
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

// BakedImage is a container image an image carries, as its manifest says: the lock entry
// (kind image) and, when the node layer holds its archive, the archive's path.
type BakedImage struct {
	Artifact string // image/pause, image/hello
	Ref      string // the name containerd imports it as: kubebake.local/pause:1.35.0
	Digest   string // the manifest digest containerd lists: sha256:<hex>
	Path     string // /usr/lib/kubebake/images/pause.tar, "" when no layer file is its
}

// Images are the container images the manifest's artifacts pin (kubebake's and the recipe's
// own), in artifact order, each with its archive's path in the image.
func (m *Manifest) Images() []BakedImage {
	paths := map[string]string{}
	for _, f := range m.Files {
		if f.Artifact != "" && f.Type == "file" {
			paths[f.Artifact] = f.Path
		}
	}
	var out []BakedImage
	for _, a := range m.Artifacts {
		if a.Kind == recipes.KindImage {
			out = append(out, BakedImage{Artifact: a.Name, Ref: a.Ref, Digest: a.Digest, Path: paths[a.Name]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Artifact < out[j].Artifact })
	return out
}

// Marshal encodes m as kubebake writes JSON: indented by two spaces, no HTML escaping, a final
// newline. It refuses a manifest without this package's apiVersion and kind, which no reader
// would accept.
func Marshal(m *Manifest) ([]byte, error) {
	if m.APIVersion != APIVersion || m.Kind != Kind {
		return nil, fmt.Errorf("manifest: writing apiVersion %q kind %q; want %s %s", m.APIVersion, m.Kind, APIVersion, Kind)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Write writes m to path atomically (a temporary file beside it, fsynced, renamed).
func Write(path string, m *Manifest) error {
	data, err := Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}

// Read reads and parses the manifest at path; see Parse.
func Read(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes a manifest. name says where data came from (a path, or "<path> in the
// guest") and starts every error. The apiVersion and kind are checked before the rest is
// decoded, so a manifest of another version is refused as such and not as a shape error.
// Fields this version does not know are ignored.
func Parse(data []byte, name string) (*Manifest, error) {
	var head struct {
		APIVersion *string `json:"apiVersion"`
		Kind       *string `json:"kind"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, &Error{File: name, Msg: "not a kubebake image manifest: " + err.Error(),
			Fix: "give the " + Name + " of a kubebake build"}
	}
	if err := checkHeader(name, head.APIVersion, head.Kind); err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, &Error{File: name, Msg: "not a " + APIVersion + " " + Kind + ": " + err.Error(),
			Fix: "rebuild the image with this kubebake"}
	}
	return &m, nil
}

func checkHeader(name string, apiVersion, kind *string) error {
	switch {
	case apiVersion == nil || *apiVersion == "":
		return &Error{File: name, Field: "apiVersion", Msg: "missing; this kubebake reads " + APIVersion,
			Fix: "give the " + Name + " of a kubebake build, or rebuild the image with this kubebake"}
	case *apiVersion != APIVersion:
		return &Error{File: name, Field: "apiVersion", Found: *apiVersion,
			Msg: "this kubebake reads only " + APIVersion,
			Fix: "use a kubebake that reads " + *apiVersion + ", or rebuild the image with this kubebake"}
	case kind == nil || *kind == "":
		return &Error{File: name, Field: "kind", Msg: "missing; want " + Kind,
			Fix: "give the " + Name + " of a kubebake build"}
	case *kind != Kind:
		return &Error{File: name, Field: "kind", Found: *kind, Msg: "not an image manifest (want " + Kind + ")",
			Fix: "give the " + Name + " a kubebake build wrote (not a recipe or a lock)"}
	}
	return nil
}

// Error is a manifest that cannot be read: which file, which field and the value found (when
// the refusal is about one), what is wrong, and what to do. Error() is one line:
// `file: field "found": what is wrong; fix`.
type Error struct {
	File  string
	Field string // apiVersion, kind; "" for the document as a whole
	Found string // the value found, "" when missing
	Msg   string
	Fix   string
}

func (e *Error) Error() string {
	var b bytes.Buffer
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		if e.Found != "" {
			fmt.Fprintf(&b, " %q", e.Found)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Fix != "" {
		b.WriteString("; ")
		b.WriteString(e.Fix)
	}
	return b.String()
}
