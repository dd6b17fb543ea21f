package verify

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// GuestManifestPath is where an image carries a copy of its manifest.
const GuestManifestPath = "/etc/kubebake/manifest.json"

// Manifest is the part of the builder's manifest.json that verify reads. verify never imports
// the builder: this is its own minimal view of the file, tolerant of fields it does not know.
type Manifest struct {
	Recipe   ManifestRecipe     `json:"recipe"`
	LockHash string             `json:"lockHash,omitempty"`
	Files    []ManifestFile     `json:"files"`
	Units    []ManifestUnit     `json:"units"`
	Lock     []ManifestArtifact `json:"artifacts"`
	Packages []Package          `json:"packages"`
	// Outputs are the files of the build output folder (only in its manifest.json).
	Outputs []ManifestOutput `json:"outputs,omitempty"`
}

// ManifestOutput is one file a build wrote.
type ManifestOutput struct {
	Name   string `json:"name"`
	Format string `json:"format,omitempty"`
}

// ManifestRecipe is what the manifest says of the recipe the image was built from.
type ManifestRecipe struct {
	Name    string            `json:"name"`
	Sysctls map[string]string `json:"sysctls"`
	Modules []string          `json:"modules"`
	Runtime struct {
		Name string `json:"name"`
	} `json:"runtime"`
	Storage struct {
		Driver string `json:"driver"`
	} `json:"storage"`
	CNI struct {
		Plugins []string `json:"plugins"`
	} `json:"cni"`
	Roles []struct {
		Name  string   `json:"name"`
		Units []string `json:"units"`
	} `json:"roles"`
}

// ManifestFile is one node-layer file in the image.
type ManifestFile struct {
	Path     string `json:"path"`
	Type     string `json:"type"`
	Artifact string `json:"artifact,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
}

// ManifestUnit is a systemd unit and the roles whose marker lets it start (none: shared).
type ManifestUnit struct {
	Name  string   `json:"name"`
	Roles []string `json:"roles,omitempty"`
}

// ManifestArtifact is a pinned input as the lock has it.
type ManifestArtifact struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Source  string `json:"source"`
	Version string `json:"version"`
	Module  string `json:"module,omitempty"`
	SHA256  string `json:"sha256"`
	// Ref names a container image artifact (kubebake.local/busybox:1.35.0).
	Ref string `json:"ref,omitempty"`
}

// ImageRef returns the reference of the baked container image whose repository ends in
// "/"+name (busybox, coredns), or "".
func (m *Manifest) ImageRef(name string) string {
	for _, a := range m.Lock {
		repo, _, _ := strings.Cut(a.Ref, ":")
		if a.Ref != "" && (repo == name || strings.HasSuffix(repo, "/"+name)) {
			return a.Ref
		}
	}
	return ""
}

// LoadManifest reads manifest.json.
func LoadManifest(file string) (*Manifest, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return m, nil
}

// ParseManifest decodes a manifest and checks that it says enough to derive checks from.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("not a kubebake manifest: %w", err)
	}
	if len(m.Files) == 0 && len(m.Lock) == 0 {
		return nil, fmt.Errorf("the manifest lists no files and no artifacts: is it a kubebake build's manifest.json?")
	}
	return &m, nil
}

// RoleUnits maps each role to the units that run on it: from the manifest's units and their
// effective roles, else from the recipe's role lists.
func (m *Manifest) RoleUnits() map[string][]string {
	out := map[string][]string{}
	for _, u := range m.Units {
		for _, r := range u.Roles {
			out[r] = append(out[r], u.Name)
		}
	}
	if len(out) == 0 {
		for _, r := range m.Recipe.Roles {
			out[r.Name] = append(out[r.Name], r.Units...)
		}
	}
	for r := range out {
		sort.Strings(out[r])
	}
	return out
}

// versionArgs says how each versioned binary prints its version; binaries not listed get a
// sha256 check only.
var versionArgs = map[string]string{
	"kubelet":                 "--version",
	"kube-apiserver":          "--version",
	"kube-controller-manager": "--version",
	"kube-scheduler":          "--version",
	"kube-proxy":              "--version",
	"kubeadm":                 "version -o short",
	"kubectl":                 "version --client",
	"etcd":                    "--version",
	"etcdctl":                 "version",
	"etcdutl":                 "version",
}

// Spec derives a role's checks' expectations from the manifest.
func (m *Manifest) Spec(role string) Spec {
	s := Spec{
		Role:          role,
		Roles:         m.RoleUnits(),
		Sysctls:       m.Recipe.Sysctls,
		Modules:       m.Recipe.Modules,
		Runtime:       m.Recipe.Runtime.Name,
		StorageDriver: m.Recipe.Storage.Driver,
		CNIPlugins:    m.Recipe.CNI.Plugins,
		Packages:      m.Packages,
	}
	if s.Runtime == "" {
		s.Runtime = "containerd"
	}
	versions := map[string]string{}
	for _, a := range m.Lock {
		versions[a.Name] = a.Version
	}
	for _, f := range m.Files {
		if f.Artifact == "" || f.SHA256 == "" || (f.Type != "" && f.Type != "file") {
			continue
		}
		b := Binary{Name: f.Artifact, Path: f.Path, SHA256: f.SHA256}
		if args, ok := versionArgs[path.Base(f.Path)]; ok {
			b.Version, b.VersionArgs = versions[f.Artifact], args
		}
		s.Binaries = append(s.Binaries, b)
	}
	sort.Slice(s.Binaries, func(i, j int) bool { return s.Binaries[i].Path < s.Binaries[j].Path })
	// Binaries listed once per path (a layer may link the same artifact twice).
	s.Binaries = compactBinaries(s.Binaries)
	return s
}

func compactBinaries(bs []Binary) []Binary {
	var out []Binary
	for i, b := range bs {
		if i > 0 && bs[i-1].Path == b.Path {
			continue
		}
		out = append(out, b)
	}
	return out
}
