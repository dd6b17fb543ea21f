package recipes

// Input is one thing the lock must pin, derived from a recipe by Recipe.Inputs. The artifacts
// package resolves inputs to LockedArtifacts; the lock's InputsDigest is a hash of them.
type Input struct {
	Name    string `json:"name"`    // lock name: "kubelet", "etcd", "cni/bridge", "deb/containerd"
	Kind    string `json:"kind"`    // "binary" or "deb"
	Source  Source `json:"source"`  // how it is obtained (type gomod, url or deb)
	Version string `json:"version"` // exact version or minor track, as the recipe says
	// Package is the Go main package for gomod (k8s.io/kubernetes/cmd/kubelet), the file name
	// for url (kubelet), or the Debian package name for deb (containerd).
	Package string `json:"package"`
	// Suites and Mirror say where deb inputs are looked up (Mirror empty: the machine's apt).
	Suites []string `json:"suites,omitempty"`
	Mirror string   `json:"mirror,omitempty"`
	Arch   string   `json:"arch,omitempty"`
}

// Input kinds.
const (
	InputBinary = "binary"
	InputDeb    = "deb"
)

// Source types.
const (
	SourceGoMod = "gomod"
	SourceURL   = "url"
	SourceDeb   = "deb"
)
