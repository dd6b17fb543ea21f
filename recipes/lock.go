package recipes

// Lock pins every input of a recipe to an exact version and sha256. It is written as
// <recipe>.lock next to the recipe: sorted, stable JSON so that a diff shows what moved.
type Lock struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Recipe     string `json:"recipe"`
	// InputsDigest is the sha256 of the recipe's inputs (Recipe.Inputs) when it was locked;
	// build --locked refuses a recipe whose inputs no longer hash to it.
	InputsDigest string `json:"inputsDigest"`
	// SourceDateEpoch fixes every timestamp in the image; it changes only when an input does.
	SourceDateEpoch int64 `json:"sourceDateEpoch"`
	// Artifacts are sorted by Name.
	Artifacts []LockedArtifact `json:"artifacts"`
}

// LockedArtifact is one pinned input: a binary or a Debian package.
type LockedArtifact struct {
	Name    string `json:"name"`    // "kubelet", "etcd", "cni/bridge", "deb/containerd"
	Kind    string `json:"kind"`    // "binary" or "deb"
	Source  string `json:"source"`  // gomod, url, deb
	Version string `json:"version"` // exact: v1.35.4, 1.6.20~ds1-1+deb12u1
	// gomod: the module at its version, its go.sum hash, the main package and the toolchain.
	Module    string `json:"module,omitempty"`
	ModuleSum string `json:"moduleSum,omitempty"`
	Package   string `json:"package,omitempty"`
	Toolchain string `json:"toolchain,omitempty"`
	// url: the upstream URL (before mirror rewrites). deb: the pool path relative to the
	// mirror root (never a host name), and the suite it was found in.
	URL   string `json:"url,omitempty"`
	Suite string `json:"suite,omitempty"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}
