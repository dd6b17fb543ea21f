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

// Units of the built-in roles. roles/ renders exactly these (plus the runtime's own units
// from Debian packages), so this is also the set of unit names a role may list.
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

// FlannelUnit is the pod network agent's unit (recipes with a podNetwork).
const FlannelUnit = "flanneld.service"

// RuntimeUnits are the units that run a container runtime (docker needs cri-dockerd's unit
// to speak CRI).
func RuntimeUnits(runtime string) []string {
	if runtime == RuntimeDocker {
		return []string{"docker.service", "cri-docker.service"}
	}
	return []string{"containerd.service"}
}

// BuiltinRoles are the master and minion roles used when a recipe has no roles section:
// both run the node units (and flannel with a pod network); the master adds the control
// plane, the minion its join.
func BuiltinRoles(runtime string, podNetwork bool) []Role {
	node := append(RuntimeUnits(runtime), nodeUnits...)
	if podNetwork {
		node = append(node, FlannelUnit)
	}
	master := append(append([]string(nil), MasterUnits...), node...)
	minion := append(append([]string(nil), node...), minionUnits...)
	return []Role{{Name: RoleMaster, Units: master}, {Name: RoleMinion, Units: minion}}
}

// KnownUnits are the unit names roles may list for a runtime, sorted.
func KnownUnits(runtime string) []string {
	u := append(append(append(append([]string(nil), MasterUnits...), nodeUnits...), minionUnits...), RuntimeUnits(runtime)...)
	u = append(u, FlannelUnit)
	sort.Strings(u)
	return u
}

// allRuntimeUnits maps every runtime unit to its runtime, to explain a unit of the other one.
var allRuntimeUnits = map[string]string{
	"containerd.service": RuntimeContainerd, "docker.service": RuntimeDocker, "cri-docker.service": RuntimeDocker,
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
