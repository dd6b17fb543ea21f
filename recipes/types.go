// Package recipes holds the recipe schema (what a node image must contain), its strict parser,
// defaults, lint rules for the known cluster pitfalls, and the lock file that pins every input.
//
// Recipe is the in-memory form of the newest schema version. Older apiVersions are parsed by
// their own version package and translated forward (compare Ignition's config/v3_x packages).
package recipes

// APIVersion is the newest recipe schema version; Kind is the document kind for recipes.
const (
	APIVersion = "kubebake.dev/v1alpha1"
	KindRecipe = "Recipe"
	KindLock   = "Lock"
)

// Recipe says what a Kubernetes node image holds. Field comments name the YAML keys.
//
// Fields tagged kubebake:"required" must be written in the YAML; the strict parser reports a
// missing one at its parent mapping. Other empty fields get defaults (see SetDefaults).
type Recipe struct {
	APIVersion  string `yaml:"apiVersion" json:"apiVersion" kubebake:"required"`
	Kind        string `yaml:"kind" json:"kind" kubebake:"required"`
	Name        string `yaml:"name" json:"name" kubebake:"required"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`

	Base       Base       `yaml:"base" json:"base" kubebake:"required"`
	Kubernetes Kubernetes `yaml:"kubernetes" json:"kubernetes" kubebake:"required"`
	Runtime    Runtime    `yaml:"runtime" json:"runtime"`
	Etcd       Etcd       `yaml:"etcd" json:"etcd" kubebake:"required"`
	CNI        CNI        `yaml:"cni" json:"cni" kubebake:"required"`
	Storage    Storage    `yaml:"storage" json:"storage"`
	Network    Network    `yaml:"network" json:"network"`
	// PodNetwork routes between the nodes' pod ranges; DNS serves cluster DNS. Both are
	// optional: nil when the recipe leaves the section out.
	PodNetwork *PodNetwork `yaml:"podNetwork,omitempty" json:"podNetwork,omitempty"`
	DNS        *DNS        `yaml:"dns,omitempty" json:"dns,omitempty"`
	// Images are container images of the operator's own, baked into the node beside
	// kubebake's (containerd nodes only) and imported at boot as kubebake.local/<name>:<tag>.
	Images []ContainerImage `yaml:"images,omitempty" json:"images,omitempty"`
	// Sysctls are written to /usr/lib/sysctl.d; values are strings as sysctl(8) takes them.
	Sysctls map[string]string `yaml:"sysctls" json:"sysctls"`
	// Modules are written to /usr/lib/modules-load.d.
	Modules []string `yaml:"modules" json:"modules"`
	Roles   []Role   `yaml:"roles" json:"roles"`
	Image   Image    `yaml:"image" json:"image"`
	// Mirrors rewrite artifact URLs by prefix (e.g. https://dl.k8s.io/ -> an internal mirror).
	Mirrors []URLRewrite `yaml:"mirrors,omitempty" json:"mirrors,omitempty"`
	// Security relaxes secure defaults by name (Relaxations); nil: every default holds.
	Security *Security `yaml:"security,omitempty" json:"security,omitempty"`

	// File is where the recipe came from, as shown in messages ("recipes/debian-12.yaml" for
	// an embedded recipe). Embedded says it was read from the binary, not from disk.
	File     string `yaml:"-" json:"-"`
	Embedded bool   `yaml:"-" json:"-"`
	// Positions maps field paths to the user's line:col so that lint findings and errors of
	// later stages can point at the YAML. Empty for recipes built in Go.
	Positions Positions `yaml:"-" json:"-"`
}

// Base is the distribution the root filesystem is built from.
type Base struct {
	Distro  string `yaml:"distro" json:"distro" kubebake:"required"`   // "debian"
	Release string `yaml:"release" json:"release" kubebake:"required"` // suite codename: "bookworm", "trixie"
	// Mirror is the archive URL; empty means "the Debian mirror this machine's apt uses".
	Mirror string `yaml:"mirror,omitempty" json:"mirror,omitempty"`
	// SecurityMirror is the archive of the "<release>-security" suites (Debian publishes
	// security fixes in an archive of its own); empty means the security archive of this
	// machine's apt sources.
	SecurityMirror string `yaml:"securityMirror,omitempty" json:"securityMirror,omitempty"`
	// Suites searched for packages, newest version wins; default [release, release-updates].
	// A suite named "<release>-security" comes from SecurityMirror.
	Suites     []string `yaml:"suites,omitempty" json:"suites,omitempty"`
	Components []string `yaml:"components,omitempty" json:"components,omitempty"` // default [main]
	Arch       string   `yaml:"arch,omitempty" json:"arch,omitempty"`             // default amd64
	Kernel     string   `yaml:"kernel,omitempty" json:"kernel,omitempty"`         // default linux-image-cloud-amd64
	// Packages are the node's distro packages on top of the boot baseline (systemd, kernel,
	// openssh-server, cloud-init): Kubernetes host tools (conntrack, socat, ebtables, iptables,
	// ethtool) and anything else the operator wants. Each is pinned by the lock; "name=version"
	// holds an exact Debian version across lock --update.
	Packages []string `yaml:"packages" json:"packages"`
}

// Kubernetes selects the Kubernetes release and which of its binaries go on the node.
type Kubernetes struct {
	// Version is exact ("v1.35.4") or a minor track ("1.35") that the lock resolves to its
	// newest patch. "latest", "stable" and majors alone are refused.
	Version    string      `yaml:"version" json:"version" kubebake:"required"`
	Source     Source      `yaml:"source" json:"source"`
	Components []Component `yaml:"components" json:"components" kubebake:"required"`
}

// Component is one Kubernetes binary. Version, when set, must equal Kubernetes.Version: lint
// refuses skew between kubelet, kubectl and the control plane.
type Component struct {
	Name    string `yaml:"name" json:"name" kubebake:"required"`
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
}

// Source says where a binary comes from.
//   - gomod: build Module's main package(s) at the pinned version from the Go module proxy.
//   - url:   download URL (a template with {version}, {name}, {arch}) and check its sha256.
//   - deb:   take the binary out of a Debian package from the recipe's mirror.
type Source struct {
	Type   string `yaml:"type" json:"type" kubebake:"required"`
	Module string `yaml:"module,omitempty" json:"module,omitempty"`
	URL    string `yaml:"url,omitempty" json:"url,omitempty"`
	// Package is the Debian package that carries the binaries (deb only), e.g.
	// containernetworking-plugins; in images[].source (gomod) the Go main package, relative
	// to the module (./cmd/agent, or . for its root) or in full.
	Package string `yaml:"package,omitempty" json:"package,omitempty"`
	// Member (url only) is the file to take out of a .tar.gz or .tgz download, a template like
	// url ("cri-dockerd/{name}"); empty: the download is the file itself.
	Member string `yaml:"member,omitempty" json:"member,omitempty"`
}

// Runtime is the container runtime: containerd (default) or docker. The kubelet reaches a
// CRI through containerd's own (containerd, and docker without CRIDockerd: docker then runs
// beside the kubelet on the same containerd) or through cri-dockerd (docker with CRIDockerd).
type Runtime struct {
	Name string `yaml:"name" json:"name"`
	// Packages are the Debian packages that provide the runtime and runc, pinned by the lock.
	Packages []string `yaml:"packages" json:"packages"`
	// SandboxImage is the pinned pod sandbox ("pause") image reference.
	SandboxImage string `yaml:"sandboxImage" json:"sandboxImage"`
	CgroupDriver string `yaml:"cgroupDriver,omitempty" json:"cgroupDriver,omitempty"` // default systemd
	// CRIDockerd (docker only) is where cri-dockerd comes from; without it the kubelet uses
	// containerd's CRI.
	CRIDockerd *CRIDockerd `yaml:"criDockerd,omitempty" json:"criDockerd,omitempty"`
}

// CRIDockerd is cri-dockerd, the CRI server in front of docker: an exact version and its
// source, e.g. the upstream release tarball (type url, member cri-dockerd/{name}).
type CRIDockerd struct {
	Version string `yaml:"version" json:"version" kubebake:"required"`
	Source  Source `yaml:"source" json:"source"`
}

// Etcd is the control plane's key-value store.
type Etcd struct {
	Version string `yaml:"version" json:"version" kubebake:"required"`
	Source  Source `yaml:"source" json:"source"`
}

// CNI selects the reference CNI plugins placed in /opt/cni/bin and the pod network config.
type CNI struct {
	Version string   `yaml:"version" json:"version" kubebake:"required"`
	Source  Source   `yaml:"source" json:"source"`
	Plugins []string `yaml:"plugins" json:"plugins"`
}

// Storage is the container storage driver: overlayfs (containerd) or overlay2 (docker).
// devicemapper and loopback storage are refused.
type Storage struct {
	Driver string `yaml:"driver" json:"driver"`
}

// Network holds cluster address ranges and IPv6 enablement.
type Network struct {
	PodCIDR     string `yaml:"podCIDR" json:"podCIDR"`
	ServiceCIDR string `yaml:"serviceCIDR" json:"serviceCIDR"`
	IPv6        bool   `yaml:"ipv6" json:"ipv6"`
	// NodeCIDRMaskSize is the prefix length of each node's pod range, cut from PodCIDR by
	// kube-controller-manager (default 24 for an IPv4 PodCIDR, 64 for IPv6).
	NodeCIDRMaskSize int `yaml:"nodeCIDRMaskSize" json:"nodeCIDRMaskSize"`
}

// PodNetwork is the pod network agent that runs on every node (flanneld, as
// /usr/bin/flanneld): it routes between the nodes' pod ranges.
type PodNetwork struct {
	Name    string `yaml:"name" json:"name" kubebake:"required"`       // "flannel"
	Backend string `yaml:"backend,omitempty" json:"backend,omitempty"` // host-gw (default) or vxlan
	Version string `yaml:"version" json:"version" kubebake:"required"` // exact or minor track ("0.28")
	Source  Source `yaml:"source" json:"source"`                       // default gomod, FlannelModule
}

// DNS is the cluster DNS server (CoreDNS, as /usr/bin/coredns).
type DNS struct {
	Name    string `yaml:"name" json:"name" kubebake:"required"`       // "coredns"
	Version string `yaml:"version" json:"version" kubebake:"required"` // exact or minor track ("1.15")
	Source  Source `yaml:"source" json:"source"`                       // default gomod, CoreDNSModule
}

// ContainerImage is an image a recipe bakes besides kubebake's own (pause, busybox, CoreDNS):
// an image archive kept beside the recipe, or a Go main package built like every gomod
// binary and made into a single-binary image. The lock pins it as image/<Name>.
type ContainerImage struct {
	// Name is a DNS label: the image is kubebake.local/<name>:<tag>.
	Name string `yaml:"name" json:"name" kubebake:"required"`
	// Archive is an OCI image layout or docker save tarball holding one linux/amd64 image,
	// relative to the recipe's folder (which it may not leave).
	Archive string `yaml:"archive,omitempty" json:"archive,omitempty"`
	// Version (exact or a minor track) and Source (type gomod, module and package) say which
	// main package to build instead.
	Version string  `yaml:"version,omitempty" json:"version,omitempty"`
	Source  *Source `yaml:"source,omitempty" json:"source,omitempty"`
}

// Role is a node role. A role's units get a drop-in
// ConditionPathExists=/etc/sysconfig/kubernetes-<name>.
type Role struct {
	Name  string   `yaml:"name" json:"name" kubebake:"required"`
	Units []string `yaml:"units" json:"units" kubebake:"required"`
}

// Image is the disk image the builder writes.
type Image struct {
	Size       string   `yaml:"size" json:"size"`                                 // e.g. "4GiB"
	Formats    []string `yaml:"formats" json:"formats"`                           // raw, qcow2, vhd, vmdk
	Bootloader string   `yaml:"bootloader,omitempty" json:"bootloader,omitempty"` // systemd-boot (default) or grub
}

// URLRewrite maps URLs starting with Prefix to Replacement + the rest.
type URLRewrite struct {
	Prefix      string `yaml:"prefix" json:"prefix" kubebake:"required"`
	Replacement string `yaml:"replacement" json:"replacement" kubebake:"required"`
}

// MarkerPath is the file whose existence selects a role at boot.
func MarkerPath(role string) string { return "/etc/sysconfig/kubernetes-" + role }
