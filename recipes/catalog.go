package recipes

import (
	"maps"
	"slices"
	"sort"
)

// The catalog: names the rest of kubebake knows how to build, ship and check. Lint refuses
// names outside it, so a typo fails at lint time instead of as a unit that never starts.

// Kubernetes components that can go on a node, each a main package k8s.io/kubernetes/cmd/<name>.
var KubernetesComponents = []string{
	"kube-apiserver", "kube-controller-manager", "kube-proxy", "kube-scheduler",
	"kubeadm", "kubectl", "kubelet",
}

// CNIPlugins maps each reference plugin to its package folder under
// github.com/containernetworking/plugins.
var CNIPlugins = map[string]string{
	"bandwidth": "plugins/meta/bandwidth", "bridge": "plugins/main/bridge",
	"dhcp": "plugins/ipam/dhcp", "dummy": "plugins/main/dummy",
	"firewall": "plugins/meta/firewall", "host-device": "plugins/main/host-device",
	"host-local": "plugins/ipam/host-local", "ipvlan": "plugins/main/ipvlan",
	"loopback": "plugins/main/loopback", "macvlan": "plugins/main/macvlan",
	"portmap": "plugins/meta/portmap", "ptp": "plugins/main/ptp",
	"sbr": "plugins/meta/sbr", "static": "plugins/ipam/static",
	"tap": "plugins/main/tap", "tuning": "plugins/meta/tuning",
	"vlan": "plugins/main/vlan", "vrf": "plugins/meta/vrf",
}

// RequiredCNIPlugins are what kubelet and the default pod network need in /opt/cni/bin.
var RequiredCNIPlugins = []string{"loopback", "bridge", "host-local", "portmap"}

// Pod networks and cluster DNS servers kubebake builds, each from a main it provides
// (artifacts/gomain) against the upstream module: flannel's kube subnet manager with the
// host-gw and vxlan backends, and CoreDNS with the plugins a cluster DNS needs.
const (
	PodNetworkFlannel = "flannel"
	DNSCoreDNS        = "coredns"

	// host-gw routes each node's pod range via that node's address: no encapsulation, but
	// every node must be on one layer-2 network. vxlan tunnels between nodes across routers.
	FlannelBackendHostGW = "host-gw"
	FlannelBackendVXLAN  = "vxlan"

	// Binaries (lock names and file names in /usr/bin).
	FlanneldBinary = "flanneld"
	CoreDNSBinary  = "coredns"
)

// FlannelBackends are the backends kubebake's flanneld is built with.
var FlannelBackends = []string{FlannelBackendHostGW, FlannelBackendVXLAN}

// Container runtimes and their storage drivers. Only overlay storage is accepted: the
// devicemapper/loopback pitfall (DESIGN.md).
const (
	RuntimeContainerd = "containerd"
	RuntimeDocker     = "docker"
)

// The CRI servers a kubelet may talk to (CRIOf).
const (
	CRIServerContainerd = "containerd"
	CRIServerDockerd    = "cri-dockerd"
)

// CRIOf is the CRI server of a runtime: cri-dockerd for docker with a criDockerd source,
// else containerd's own (docker without cri-dockerd runs beside the kubelet on the same
// containerd).
func CRIOf(rt Runtime) string {
	if rt.Name == RuntimeDocker && rt.CRIDockerd != nil {
		return CRIServerDockerd
	}
	return CRIServerContainerd
}

// A runtime setup is a runtime and the CRI server its kubelet talks to: what the unit
// catalog depends on (SetupOf).
const (
	SetupContainerd       = "containerd"         // containerd and its CRI
	SetupDocker           = "docker"             // docker beside the kubelet, on containerd's CRI
	SetupDockerCRIDockerd = "docker+cri-dockerd" // docker behind cri-dockerd
)

// Setups are every runtime setup, for tests and messages.
var Setups = []string{SetupContainerd, SetupDocker, SetupDockerCRIDockerd}

// SetupOf is a runtime's setup. A runtime other than docker reads as containerd (the
// default), as in StorageDriverFor.
func SetupOf(rt Runtime) string {
	switch {
	case rt.Name != RuntimeDocker:
		return SetupContainerd
	case CRIOf(rt) == CRIServerDockerd:
		return SetupDockerCRIDockerd
	}
	return SetupDocker
}

// ExplainRuntime says, in a line, how a recipe's kubelet reaches its container runtime and
// why: what lint reports for each recipe.
func ExplainRuntime(rt Runtime) string {
	switch SetupOf(rt) {
	case SetupDocker:
		return "docker beside the kubelet on containerd's CRI: the kubelet runs pods through containerd, docker runs on the same containerd (pods do not appear in docker ps); give runtime.criDockerd to put the kubelet on docker through cri-dockerd"
	case SetupDockerCRIDockerd:
		return "docker through cri-dockerd (runtime.criDockerd): the kubelet runs pods as docker containers"
	}
	return "containerd: the kubelet runs pods through containerd's CRI"
}

// DescribeSetup says which runtime setup a recipe has, and from which fields.
func DescribeSetup(setup string) string {
	switch setup {
	case SetupDocker:
		return "docker on containerd's CRI (runtime.name docker, no runtime.criDockerd)"
	case SetupDockerCRIDockerd:
		return "docker+cri-dockerd (runtime.name docker with runtime.criDockerd)"
	}
	return "containerd"
}

// setupParts splits a setup into its runtime and CRI server; an unknown one reads as
// containerd.
func setupParts(setup string) (runtime, cri string) {
	switch setup {
	case SetupDocker:
		return RuntimeDocker, CRIServerContainerd
	case SetupDockerCRIDockerd:
		return RuntimeDocker, CRIServerDockerd
	}
	return RuntimeContainerd, CRIServerContainerd
}

// StorageDriverFor is the one storage driver accepted for a runtime.
func StorageDriverFor(runtime string) string {
	if runtime == RuntimeDocker {
		return "overlay2"
	}
	return "overlayfs"
}

// Role names built in. Custom roles may use any name that is a valid marker file name.
const (
	RoleMaster = "master"
	RoleMinion = "minion"
)

// Unit names kubebake itself defines besides the role units (the node layer's plumbing).
const (
	// RolesTarget is the unit the role units hang off: it is reached only after every writer
	// of the role marker has run (the marker race, DESIGN.md).
	RolesTarget   = "kubebake-roles.target"
	IgnitionUnit  = "kubebake-ignition.service"
	MasterPKIUnit = "kubebake-master-pki.service"
	// SSHKeygenUnit makes the SSH host keys the image leaves out when cloud-init did not
	// (a boot configured by Ignition alone); Debian's ssh.service does not make them.
	SSHKeygenUnit = "kubebake-ssh-keygen.service"
	// GrowRootUnit grows the root partition to the disk when cloud-init did not.
	GrowRootUnit = "kubebake-growroot.service"
	// NodeEnvUnit works out the node's address and kubelet flags; ImagesUnit imports the
	// baked container images into containerd; DockerImagesUnit loads them into docker too
	// (docker beside the kubelet keeps images of its own).
	NodeEnvUnit      = "kubebake-node-env.service"
	ImagesUnit       = "kubebake-images.service"
	DockerImagesUnit = "kubebake-docker-images.service"
	// CSRApproverUnit (master) approves a kubelet's first certificate only for the node name
	// its join token is bound to; JoinCleanupUnit (minion) removes the join credentials once
	// the kubelet has its own.
	CSRApproverUnit = "kubebake-csr-approver.service"
	JoinCleanupUnit = "kubebake-join-cleanup.service"
)

// Join tokens (docs/security.md): the group every join token authenticates with, which may
// ask for a node client certificate that kubebake-csr-approver alone decides, and the label
// on a token's Secret that binds it to one node name. The node layer's scripts and
// "kubebake cluster token" both use these.
const (
	JoinTokenGroup     = "system:bootstrappers:kubebake:nodes"
	JoinTokenNodeLabel = "kubebake.dev/node-name"
)

// FlannelUnit is the pod network agent's unit (recipes with a podNetwork).
const FlannelUnit = "flanneld.service"

// UnitDef is one systemd unit kubebake knows how to run: the one catalog lint checks roles
// against and roles/ renders the node layer from.
type UnitDef struct {
	Name string
	// Foreign units come from a Debian package (containerd.service): the layer carries only
	// their role drop-in and enablement link.
	Foreign bool
	// Runtime limits the unit to one container runtime ("" for any), CRI to one CRI server
	// (CRIOf; "" for any).
	Runtime string
	CRI     string
	// PodNetwork units exist only when the recipe has a podNetwork section.
	PodNetwork bool
	// Bins are the node binaries (lock artifact names) its ExecStart needs.
	Bins []string
	// Needs are units that must run on the same node (Requires= or Wants= in the unit).
	Needs []string
	// Listable units may appear in a recipe role; the others are dependencies or shared.
	Listable bool
}

// unitCatalog is every unit kubebake may put into a layer, for every runtime.
func unitCatalog() []UnitDef {
	return []UnitDef{
		{Name: "etcd.service", Bins: []string{"etcd"}, Needs: []string{MasterPKIUnit}, Listable: true},
		{Name: "kube-apiserver.service", Bins: []string{"kube-apiserver"}, Needs: []string{MasterPKIUnit, "etcd.service"}, Listable: true},
		{Name: "kube-controller-manager.service", Bins: []string{"kube-controller-manager"}, Needs: []string{MasterPKIUnit}, Listable: true},
		{Name: "kube-scheduler.service", Bins: []string{"kube-scheduler"}, Needs: []string{MasterPKIUnit}, Listable: true},
		{Name: "kubebake-master-bootstrap.service", Bins: []string{"kubeadm", "kubectl"}, Needs: []string{MasterPKIUnit, "kube-apiserver.service", CSRApproverUnit}, Listable: true},
		{Name: MasterPKIUnit, Bins: []string{"kubeadm"}},
		{Name: CSRApproverUnit, Bins: []string{"kubectl"}, Needs: []string{MasterPKIUnit, "kube-apiserver.service"}},
		// kubelet: the join (or the master's own credentials), the node's address, the CRI,
		// and under containerd the baked images (completed per runtime in Units).
		{Name: "kubelet.service", Bins: []string{"kubelet"}, Needs: []string{"kubebake-minion-join.service", NodeEnvUnit}, Listable: true},
		{Name: "kube-proxy.service", Bins: []string{"kube-proxy"}, Needs: []string{"kubelet.service"}, Listable: true},
		{Name: "kubebake-minion-join.service", Needs: []string{JoinCleanupUnit}, Listable: true},
		{Name: JoinCleanupUnit},
		{Name: FlannelUnit, PodNetwork: true, Bins: []string{FlanneldBinary}, Needs: []string{"kubelet.service", NodeEnvUnit}, Listable: true},
		{Name: NodeEnvUnit},
		{Name: ImagesUnit, CRI: CRIServerContainerd, Needs: []string{"containerd.service"}},
		{Name: "containerd.service", Foreign: true, CRI: CRIServerContainerd, Listable: true},
		// docker on containerd's CRI: docker needs containerd, and loads the baked images too,
		// so that docker run of a baked image works offline.
		{Name: "docker.service", Foreign: true, Runtime: RuntimeDocker, CRI: CRIServerContainerd, Needs: []string{DockerImagesUnit}, Listable: true},
		{Name: DockerImagesUnit, Runtime: RuntimeDocker, CRI: CRIServerContainerd, Needs: []string{ImagesUnit}},
		// docker behind cri-dockerd.
		{Name: "docker.service", Foreign: true, Runtime: RuntimeDocker, CRI: CRIServerDockerd, Listable: true},
		{Name: "cri-docker.service", Runtime: RuntimeDocker, CRI: CRIServerDockerd, Bins: []string{"cri-dockerd"}, Needs: []string{"docker.service"}, Listable: true},
		{Name: IgnitionUnit},
		{Name: RolesTarget},
		{Name: SSHKeygenUnit},
		{Name: GrowRootUnit},
	}
}

// Units is the unit catalog for a runtime setup (SetupOf), with the pod network agent or
// not, in catalog order. Each call returns fresh slices.
func Units(setup string, podNetwork bool) []UnitDef {
	runtime, cri := setupParts(setup)
	var out []UnitDef
	for _, d := range unitCatalog() {
		if d.PodNetwork && !podNetwork {
			continue
		}
		if d.Runtime != "" && d.Runtime != runtime || d.CRI != "" && d.CRI != cri {
			continue
		}
		if d.Name == "kubelet.service" {
			d.Needs = append(d.Needs, CRIUnit(setup))
			if cri == CRIServerContainerd {
				d.Needs = append(d.Needs, ImagesUnit)
			}
		}
		out = append(out, d)
	}
	return out
}

// CRIUnit is the unit that serves the kubelet's CRI socket in a runtime setup.
func CRIUnit(setup string) string {
	if _, cri := setupParts(setup); cri == CRIServerDockerd {
		return "cri-docker.service"
	}
	return "containerd.service"
}

// UnitNeedsClosure is every unit name must have on its node (its Needs, theirs, and so on),
// in a stable order, without name itself.
func UnitNeedsClosure(defs []UnitDef, name string) []string {
	byName := map[string]UnitDef{}
	for _, d := range defs {
		byName[d.Name] = d
	}
	var out []string
	seen := map[string]bool{name: true}
	var walk func(string)
	walk = func(n string) {
		for _, need := range byName[n].Needs {
			if !seen[need] {
				seen[need] = true
				out = append(out, need)
				walk(need)
			}
		}
	}
	walk(name)
	return out
}

// Units of the built-in roles, each listable in the catalog.
var (
	// MasterUnits are the control plane's.
	MasterUnits = []string{
		"etcd.service", "kube-apiserver.service", "kube-controller-manager.service",
		"kube-scheduler.service", "kubebake-master-bootstrap.service",
	}
	// nodeUnits run on every node of the pod network, the master included (it reaches pods
	// and Services like any node; its kubelet carries the control-plane taint). With the
	// runtime's units and, when the recipe has a podNetwork, FlannelUnit; see BuiltinRoles.
	nodeUnits = []string{"kubelet.service", "kube-proxy.service"}
	// minionUnits are the minion's own: the join.
	minionUnits = []string{"kubebake-minion-join.service"}
)

// RuntimeUnits are the listable units that run a setup's container runtime and CRI server
// (containerd; docker beside containerd; docker and cri-dockerd), from the catalog.
func RuntimeUnits(setup string) []string {
	var out []string
	for _, d := range Units(setup, false) {
		if d.Listable && (d.Runtime != "" || d.CRI != "") {
			out = append(out, d.Name)
		}
	}
	return out
}

// BuiltinRoles are the master and minion roles used when a recipe has no roles section:
// both run the node units (and flannel with a pod network); the master adds the control
// plane, the minion its join.
func BuiltinRoles(setup string, podNetwork bool) []Role {
	node := append(RuntimeUnits(setup), nodeUnits...)
	if podNetwork {
		node = append(node, FlannelUnit)
	}
	master := append(append([]string(nil), MasterUnits...), node...)
	minion := append(append([]string(nil), node...), minionUnits...)
	return []Role{{Name: RoleMaster, Units: master}, {Name: RoleMinion, Units: minion}}
}

// KnownUnits are the unit names roles may list in a runtime setup (the listable units of the
// catalog, the pod network agent's included), sorted.
func KnownUnits(setup string) []string {
	var u []string
	for _, d := range Units(setup, true) {
		if d.Listable {
			u = append(u, d.Name)
		}
	}
	sort.Strings(u)
	return u
}

// SetupsOfUnit are the runtime setups whose roles may list unit (none for a unit of every
// setup or none), to explain a unit of another setup.
func SetupsOfUnit(unit string) []string {
	var out []string
	for _, setup := range Setups {
		if slices.Contains(KnownUnits(setup), unit) {
			out = append(out, setup)
		}
	}
	if len(out) == len(Setups) {
		return nil
	}
	return out
}

// ImageFormats the builder can write.
var ImageFormats = []string{"raw", "qcow2", "vhd", "vmdk"}

// Bootloaders the builder can install.
var Bootloaders = []string{"systemd-boot", "grub"}

// RequiredPackages are the host tools kubelet, kube-proxy and CNI call; without them pods
// or services fail at run time, not at boot.
var RequiredPackages = map[string]string{
	"conntrack": "kube-proxy and kubeadm clear stale connection tracking entries with it; without it Service traffic (UDP and DNS above all) can stick to dead endpoints",
	"socat":     "kubeadm preflight looks for it and port-forwarding through runtimes that shell out to socat (cri-dockerd) fails without it",
	"ebtables":  "kubeadm preflight looks for it and bridge-based pod networks filter bridged frames with it",
	"iptables":  "kube-proxy and CNI portmap program Services and hostPorts with iptables; without it no Service works",
}

// RequiredHostTools are the commands kubelet, kube-proxy, kubeadm, CNI and the node layer's
// scripts run on every node, each with the Debian package that carries it: the packages of
// RequiredPackages, and iproute2 for ip, which the boot baseline brings (netplan.io depends
// on it). verify checks that each is on the services' PATH whatever the recipe says.
var RequiredHostTools = map[string]string{
	"conntrack": "conntrack",
	"socat":     "socat",
	"ebtables":  "ebtables",
	"iptables":  "iptables",
	"ip6tables": "iptables",
	"ip":        "iproute2",
}

// RecommendedPackages are not fatal when missing but kubeadm preflight warns.
var RecommendedPackages = map[string]string{
	"ethtool": "kubeadm preflight checks for ethtool and CNI plugins use it to set offloads",
}

// RequiredSysctls must be "1" on every node, set from /usr/lib/sysctl.d.
var RequiredSysctls = map[string]string{
	"net.bridge.bridge-nf-call-iptables":  "without it bridged pod traffic skips iptables, so Services and NetworkPolicies do not apply to pod-to-pod traffic on one node",
	"net.bridge.bridge-nf-call-ip6tables": "without it bridged IPv6 pod traffic skips ip6tables, so Services do not apply to it",
	"net.ipv4.ip_forward":                 "without it the node does not route pod traffic: pods cannot reach other nodes or Services",
}

// NodeKernelSysctls are set on every node whatever the recipe says (the node layer adds
// them; lint refuses a recipe that sets one to another value), with why. The kubelet runs
// with protectKernelDefaults: it refuses to start unless the kernel already has the values
// it would otherwise change behind the operator's back (vm.panic_on_oom 0 and the keyring
// limits it also checks are the kernel's defaults).
var NodeKernelSysctls = map[string]SysctlRule{
	"vm.overcommit_memory": {"1", "the kubelet (protectKernelDefaults) refuses to start without it: it sizes memory for containers expecting overcommit"},
	"kernel.panic":         {"10", "the kubelet (protectKernelDefaults) refuses to start without it: a panicked node reboots in 10 s and rejoins instead of hanging"},
	"kernel.panic_on_oops": {"1", "the kubelet (protectKernelDefaults) refuses to start without it: an oops leaves a kernel nobody can trust to isolate containers"},
	// A node routes pod traffic, but it is not the network's router: its redirects would
	// teach other hosts routes around it. See NodeInterfaceSysctls for the interfaces.
	"net.ipv4.conf.all.send_redirects":     {"0", "a node that forwards pod traffic would otherwise send ICMP redirects, which let hosts on its network learn routes from it"},
	"net.ipv4.conf.default.send_redirects": {"0", "interfaces made after boot (the pod bridge, veths, flannel's) start without ICMP redirects"},
	// Loose (2), not strict (1): the kernel uses the larger of "all" and an interface's value,
	// so this turns reverse-path filtering on everywhere; strict mode would drop the
	// legitimate asymmetric replies of a node with two networks (cloud NIC, cluster NIC).
	"net.ipv4.conf.all.rp_filter": {"2", "packets whose source address no route leads back to are dropped (spoofed sources), on every interface"},
}

// NodeInterfaceSysctls are set on every network interface of every node: the settings
// under net.ipv4.conf.<interface>, written as one systemd-sysctl glob line
// (net.ipv4.conf.*.NAME), which systemd also applies to each interface that appears later.
// An interface's send_redirects is on if "all" or its own value is, so "all" alone is not
// enough for the interfaces that exist before systemd-sysctl runs.
var NodeInterfaceSysctls = map[string]SysctlRule{
	"send_redirects": {"0", "the interfaces present at boot keep the kernel's send_redirects 1 otherwise, and an interface sends redirects if its own value or \"all\" says so"},
}

// InterfaceSysctlGlob is the systemd-sysctl key of an interface setting (NodeInterfaceSysctls).
func InterfaceSysctlGlob(name string) string { return "net.ipv4.conf.*." + name }

// SysctlRule is a sysctl's required value and why a node needs it.
type SysctlRule struct {
	Value string
	Why   string
}

// IPv6ForwardingSysctl must be "1" when network.ipv6 is true.
const IPv6ForwardingSysctl = "net.ipv6.conf.all.forwarding"

// RequiredModules must be in /usr/lib/modules-load.d so they load before systemd-sysctl runs.
var RequiredModules = map[string]string{
	"overlay":      "the overlay storage driver needs it; without it the runtime cannot unpack images",
	"br_netfilter": "the bridge-nf-call sysctls only exist once it is loaded; without it they silently fail to apply at boot",
}

// BootPackages are the Debian packages every image holds whatever the recipe says: what it
// takes to boot, get a network from cloud-init, and be reached over SSH. The kernel
// (base.kernel) comes on top; the bootloader is installed by the builder from the host.
func BootPackages() []string {
	return []string{
		"cloud-init", "dbus", "e2fsprogs", "initramfs-tools", "netplan.io",
		"openssh-server", "sudo", "systemd-resolved", "systemd-sysv", "udev",
	}
}

// sortedKeys returns a map's keys in order, for deterministic output.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
