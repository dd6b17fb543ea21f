package recipes

import "net/netip"

// Default values, applied by SetDefaults after parsing so that `recipe show` prints them.
const (
	DefaultArch         = "amd64"
	DefaultImageSize    = "4GiB"
	DefaultBootloader   = "systemd-boot"
	DefaultCgroupDriver = "systemd"
	// DefaultSandboxImage is empty: containerd nodes use the pause image baked into the node
	// image (kubebake.local/pause:<busybox version>), since nodes pull nothing.
	DefaultSandboxImage = ""
	// ExampleSandboxImage is what a recipe may name instead, with a registry its nodes reach.
	ExampleSandboxImage = "registry.k8s.io/pause:3.10"
	DefaultPodCIDR      = "10.244.0.0/16"
	DefaultServiceCIDR  = "10.96.0.0/12"
	// Node pod range sizes: a /24 holds 254 pod addresses, more than kubelet's default
	// maxPods (110); /64 is the usual IPv6 subnet.
	DefaultNodeCIDRMaskSizeIPv4 = 24
	DefaultNodeCIDRMaskSizeIPv6 = 64
	DefaultFlannelBackend       = FlannelBackendHostGW

	KubernetesModule = "k8s.io/kubernetes"
	EtcdModule       = "go.etcd.io/etcd/server/v3"
	EtcdctlModule    = "go.etcd.io/etcd/etcdctl/v3"
	CNIModule        = "github.com/containernetworking/plugins"
	FlannelModule    = "github.com/flannel-io/flannel"
	CoreDNSModule    = "github.com/coredns/coredns"
)

// DefaultNodeCIDRMaskSize is the default size of each node's pod range for a pod CIDR: 64 when
// it is IPv6, else 24.
func DefaultNodeCIDRMaskSize(podCIDR string) int {
	if p, err := netip.ParsePrefix(podCIDR); err == nil && p.Addr().Is6() {
		return DefaultNodeCIDRMaskSizeIPv6
	}
	return DefaultNodeCIDRMaskSizeIPv4
}

// DefaultKernel is the Debian cloud kernel for an architecture: small, virtio built in.
func DefaultKernel(arch string) string { return "linux-image-cloud-" + arch }

// DefaultSysctls are the sysctls a node needs (RequiredSysctls, and IPv6 forwarding when
// IPv6 is on).
func DefaultSysctls(ipv6 bool) map[string]string {
	m := map[string]string{}
	for k := range RequiredSysctls {
		m[k] = "1"
	}
	if ipv6 {
		m[IPv6ForwardingSysctl] = "1"
	}
	return m
}

// DefaultModules are the kernel modules a node loads at boot.
func DefaultModules() []string { return []string{"overlay", "br_netfilter"} }

// DefaultRuntime is containerd with runc from Debian and the pinned pause image.
func DefaultRuntime() Runtime {
	return Runtime{
		Name:         RuntimeContainerd,
		Packages:     []string{"containerd", "runc"},
		SandboxImage: DefaultSandboxImage,
		CgroupDriver: DefaultCgroupDriver,
	}
}

// SetDefaults fills what the recipe left out. A field is filled only when it is empty and the
// user did not write it (per r.Positions), so it is idempotent and never overrides a choice.
//
// Sections that carry a safety property (sysctls, modules, roles) are defaulted only when
// absent as a whole: a section the user wrote is never silently completed, so that lint can
// point at what it lacks. base.packages and cni.plugins are never defaulted for the same
// reason: the embedded recipes show them in full.
func SetDefaults(r *Recipe) {
	unset := func(path string, zero bool) bool { return zero && !r.Positions.Has(path) }

	b := &r.Base
	if unset("base.arch", b.Arch == "") {
		b.Arch = DefaultArch
	}
	if unset("base.components", len(b.Components) == 0) {
		b.Components = []string{"main"}
	}
	if unset("base.suites", len(b.Suites) == 0) && b.Release != "" {
		b.Suites = []string{b.Release, b.Release + "-updates"}
	}
	if unset("base.kernel", b.Kernel == "") {
		b.Kernel = DefaultKernel(b.Arch)
	}

	if unset("runtime", isZeroRuntime(r.Runtime)) {
		r.Runtime = DefaultRuntime()
	}
	if unset("runtime.name", r.Runtime.Name == "") {
		r.Runtime.Name = RuntimeContainerd
	}
	if unset("runtime.cgroupDriver", r.Runtime.CgroupDriver == "") {
		r.Runtime.CgroupDriver = DefaultCgroupDriver
	}
	if unset("storage.driver", r.Storage.Driver == "") {
		r.Storage.Driver = StorageDriverFor(r.Runtime.Name)
	}

	defaultSource(r, "kubernetes.source", &r.Kubernetes.Source, KubernetesModule)
	defaultSource(r, "etcd.source", &r.Etcd.Source, EtcdModule)
	defaultSource(r, "cni.source", &r.CNI.Source, CNIModule)

	if unset("network.podCIDR", r.Network.PodCIDR == "") {
		r.Network.PodCIDR = DefaultPodCIDR
	}
	if unset("network.serviceCIDR", r.Network.ServiceCIDR == "") {
		r.Network.ServiceCIDR = DefaultServiceCIDR
	}
	if unset("network.nodeCIDRMaskSize", r.Network.NodeCIDRMaskSize == 0) {
		r.Network.NodeCIDRMaskSize = DefaultNodeCIDRMaskSize(r.Network.PodCIDR)
	}
	if pn := r.PodNetwork; pn != nil {
		if unset("podNetwork.backend", pn.Backend == "") {
			pn.Backend = DefaultFlannelBackend
		}
		defaultSource(r, "podNetwork.source", &pn.Source, FlannelModule)
	}
	if r.DNS != nil {
		defaultSource(r, "dns.source", &r.DNS.Source, CoreDNSModule)
	}
	if unset("sysctls", len(r.Sysctls) == 0) {
		r.Sysctls = DefaultSysctls(r.Network.IPv6)
	}
	if unset("modules", len(r.Modules) == 0) {
		r.Modules = DefaultModules()
	}
	if unset("roles", len(r.Roles) == 0) {
		r.Roles = BuiltinRoles(SetupOf(r.Runtime), r.PodNetwork != nil)
	}

	if unset("image.size", r.Image.Size == "") {
		r.Image.Size = DefaultImageSize
	}
	if unset("image.formats", len(r.Image.Formats) == 0) {
		r.Image.Formats = []string{"raw", "qcow2"}
	}
	if unset("image.bootloader", r.Image.Bootloader == "") {
		r.Image.Bootloader = DefaultBootloader
	}
}

// defaultSource fills an absent source with gomod at module, and the module of a gomod source
// that does not name one (there is only one sensible module).
func defaultSource(r *Recipe, path string, s *Source, module string) {
	if *s == (Source{}) && !r.Positions.Has(path) {
		*s = Source{Type: SourceGoMod, Module: module}
		return
	}
	if s.Type == SourceGoMod && s.Module == "" && !r.Positions.Has(path+".module") {
		s.Module = module
	}
}

func isZeroRuntime(rt Runtime) bool {
	return rt.Name == "" && len(rt.Packages) == 0 && rt.SandboxImage == "" && rt.CgroupDriver == ""
}
