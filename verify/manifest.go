package verify

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
)

// GuestManifestPath is where an image carries a copy of its manifest.
const GuestManifestPath = manifest.ImagePath

// Manifest is a build's manifest.json as verify uses it: the document package manifest owns
// (and checks the apiVersion and kind of), with the lookups verify derives its checks from.
// verify never imports the builder: the two meet at the image files and this document.
type Manifest struct {
	manifest.Manifest
}

// ImageRef returns the reference of the baked container image whose repository ends in
// "/"+name (busybox, coredns), or "".
func (m *Manifest) ImageRef(name string) string {
	for _, a := range m.Artifacts {
		repo, _, _ := strings.Cut(a.Ref, ":")
		if a.Ref != "" && (repo == name || strings.HasSuffix(repo, "/"+name)) {
			return a.Ref
		}
	}
	return ""
}

// LoadManifest reads a manifest.json (manifest.Read) and checks that it says enough to
// derive checks from.
func LoadManifest(file string) (*Manifest, error) {
	m, err := manifest.Read(file)
	if err != nil {
		return nil, err
	}
	return checked(m, file)
}

// ParseManifest decodes a manifest (manifest.Parse; name says where data came from, for
// messages) and checks that it says enough to derive checks from.
func ParseManifest(data []byte, name string) (*Manifest, error) {
	m, err := manifest.Parse(data, name)
	if err != nil {
		return nil, err
	}
	return checked(m, name)
}

// manifestOutputs returns the outputs a build output folder's manifest.json lists, or nil when
// there is no manifest or it cannot be read (Run says why when it loads the manifest).
func manifestOutputs(file string) []manifest.OutputFile {
	if file == "" {
		return nil
	}
	m, err := manifest.Read(file)
	if err != nil {
		return nil
	}
	return m.Outputs
}

func checked(m *manifest.Manifest, name string) (*Manifest, error) {
	if len(m.Files) == 0 && len(m.Artifacts) == 0 {
		return nil, fmt.Errorf("%s: the manifest lists no files and no artifacts: is it a kubebake build's manifest.json?", name)
	}
	return &Manifest{Manifest: *m}, nil
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
	if len(out) == 0 && m.Recipe != nil {
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
	s := Spec{Role: role, Roles: m.RoleUnits()}
	if r := m.Recipe; r != nil {
		s.Sysctls, s.Modules, s.Runtime = r.Sysctls, r.Modules, r.Runtime.Name
		s.StorageDriver, s.CNIPlugins = r.Storage.Driver, r.CNI.Plugins
		s.CRI = recipes.CRIOf(r.Runtime)
		if r.Security != nil {
			s.Relaxed = r.Security.Relax
		}
	}
	for _, p := range m.Packages {
		s.Packages = append(s.Packages, Package{Name: p.Name, Version: p.Version})
	}
	if s.Runtime == "" {
		s.Runtime = "containerd"
	}
	versions := map[string]string{}
	for _, a := range m.Artifacts {
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
	for _, img := range m.Images() {
		if img.Path != "" { // an image the layer carries (a docker node's lock has none)
			s.Images = append(s.Images, Image{Name: strings.TrimPrefix(img.Artifact, "image/"), Ref: img.Ref, Digest: img.Digest})
		}
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
