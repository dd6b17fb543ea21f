package recipes

import (
	"fmt"
	"strings"
	"testing"
)

// mutate applies text replacements to the embedded debian-12 recipe; each old string must occur.
func mutate(t *testing.T, edits ...[2]string) string {
	t.Helper()
	data, err := EmbeddedFile("debian-12.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, e := range edits {
		if !strings.Contains(s, e[0]) {
			t.Fatalf("edit %q: not in the recipe", e[0])
		}
		s = strings.Replace(s, e[0], e[1], 1)
	}
	return s
}

// posOf finds where a needle is in src: "¦" in the needle marks the expected column
// (at the needle's start when absent).
func posOf(t *testing.T, src, needle string) Pos {
	t.Helper()
	mark := strings.Index(needle, "¦")
	plain := strings.Replace(needle, "¦", "", 1)
	if mark < 0 {
		mark = 0
	}
	i := strings.Index(src, plain)
	if i < 0 {
		t.Fatalf("needle %q not in source", plain)
	}
	i += mark
	line := strings.Count(src[:i], "\n") + 1
	col := i - strings.LastIndexByte(src[:i], '\n')
	return Pos{Line: line, Col: col}
}

func e(old, new string) [2]string { return [2]string{old, new} }

const (
	kubeletLine = "    - name: kubelet\n"
)

// TestLintPitfalls: one bad recipe per pitfall, each refused with its own message at the
// right field and the user's line:col.
func TestLintPitfalls(t *testing.T) {
	cases := []struct {
		name  string
		edits [][2]string
		field string
		msg   string // substring of the message
		at    string // needle: where the finding must point
		n     int    // error findings expected (default 1)
	}{
		// Storage: overlay only, matched to the runtime.
		{"devicemapper", [][2]string{e("driver: overlayfs", "driver: devicemapper")}, "storage.driver", `"devicemapper" is refused: use overlayfs`, "driver: ¦devicemapper", 0},
		{"loopback", [][2]string{e("driver: overlayfs", "driver: loop-lvm")}, "storage.driver", "loopback-backed storage", "driver: ¦loop-lvm", 0},
		{"other driver", [][2]string{e("driver: overlayfs", "driver: vfs")}, "storage.driver", "only overlay storage is supported", "driver: ¦vfs", 0},
		{"overlay2 with containerd", [][2]string{e("driver: overlayfs", "driver: overlay2")}, "storage.driver", "containerd calls it overlayfs", "driver: ¦overlay2", 0},
		{"overlayfs with docker", [][2]string{
			e("name: containerd", "name: docker"), e("packages: [containerd, runc]", "packages: [docker.io, runc]\n  sandboxImage: registry.k8s.io/pause:3.10"),
			e("ordinary pods).\n      - containerd.service\n", "ordinary pods).\n      - containerd.service\n      - docker.service\n"),
			e("name: minion\n    units:\n      - containerd.service\n", "name: minion\n    units:\n      - containerd.service\n      - docker.service\n"),
		}, "storage.driver", "docker calls it overlay2", "driver: ¦overlayfs", 0},

		// runtime.criDockerd: docker only, an exact version, upstream's tarball over https.
		{"criDockerd with containerd", [][2]string{e("  cgroupDriver: systemd\n", "  cgroupDriver: systemd\n"+criDockerdBlock)}, "runtime.criDockerd", `is only for runtime.name docker, not "containerd": remove runtime.criDockerd, or set runtime.name to docker`, "  ¦criDockerd:", 0},
		{"criDockerd track", dockerEdits(strings.Replace(criDockerdBlock, `"0.3.16"`, `"0.3"`, 1)), "runtime.criDockerd.version", `"0.3" is a minor track: write an exact release such as 0.3.16`, `version: ¦"0.3"`, 0},
		{"criDockerd latest", dockerEdits(strings.Replace(criDockerdBlock, `"0.3.16"`, `latest`, 1)), "runtime.criDockerd.version", `"latest" floats`, `version: ¦latest`, 0},
		{"criDockerd from Debian", dockerEdits(strings.Replace(criDockerdBlock, "type: url", "type: deb\n      package: cri-dockerd", 1)), "runtime.criDockerd.source.type", `source type "deb" is refused: use url`, "type: ¦deb", 0},
		{"criDockerd from the module proxy", dockerEdits(strings.Replace(criDockerdBlock, "type: url", "type: gomod\n      module: github.com/Mirantis/cri-dockerd", 1)), "runtime.criDockerd.source.type", `source type "gomod" is refused: use url`, "type: ¦gomod\n      module: github.com/Mirantis", 0},
		{"criDockerd without a url", dockerEdits(strings.Replace(criDockerdBlock, "      url: "+criDockerdURL+"\n", "", 1)), "runtime.criDockerd.source.url", "url source needs a url template", "    ¦source:\n      type: url", 0},
		{"criDockerd over http", dockerEdits(strings.Replace(criDockerdBlock, "https://", "http://", 1)), "runtime.criDockerd.source.url", "is http: use https", "url: ¦http://github", 0},
		{"criDockerd tarball without member", dockerEdits(strings.Replace(criDockerdBlock, "      member: cri-dockerd/{name}\n", "", 1)), "runtime.criDockerd.source.member", "the url names a tarball: set member to the binary inside it", "    ¦source:\n      type: url", 0},
		{"criDockerd member outside the archive", dockerEdits(strings.Replace(criDockerdBlock, "member: cri-dockerd/{name}", "member: ../{name}", 1)), "runtime.criDockerd.source.member", `"../{name}" leaves the archive`, "member: ¦../", 0},

		// Sysctls and modules.
		{"no bridge-nf-call-iptables", [][2]string{e("  net.bridge.bridge-nf-call-iptables: \"1\"\n", "")}, "sysctls", "net.bridge.bridge-nf-call-iptables is not set", "\n¦sysctls:", 0},
		{"no bridge-nf-call-ip6tables", [][2]string{e("  net.bridge.bridge-nf-call-ip6tables: \"1\"\n", "")}, "sysctls", "net.bridge.bridge-nf-call-ip6tables is not set", "\n¦sysctls:", 0},
		{"no ip_forward", [][2]string{e("  net.ipv4.ip_forward: \"1\"\n", "")}, "sysctls", "net.ipv4.ip_forward is not set", "\n¦sysctls:", 0},
		{"ip_forward 0", [][2]string{e(`net.ipv4.ip_forward: "1"`, `net.ipv4.ip_forward: 0`)}, `sysctls["net.ipv4.ip_forward"]`, `net.ipv4.ip_forward is "0": set it to "1"`, "ip_forward: ¦0", 0},
		{"bridge-nf-call off", [][2]string{e(`bridge-nf-call-iptables: "1"`, `bridge-nf-call-iptables: "0"`)}, `sysctls["net.bridge.bridge-nf-call-iptables"]`, `is "0"`, `iptables: ¦"0"`, 0},
		{"empty sysctls section is not completed", [][2]string{e("sysctls:\n  net.bridge.bridge-nf-call-iptables: \"1\"\n  net.bridge.bridge-nf-call-ip6tables: \"1\"\n  net.ipv4.ip_forward: \"1\"\n", "sysctls: {}\n")}, "sysctls", "is not set", "¦sysctls: {}", 3},
		{"bridge-nf-call-ip6tables off", [][2]string{e(`bridge-nf-call-ip6tables: "1"`, `bridge-nf-call-ip6tables: "0"`)}, `sysctls["net.bridge.bridge-nf-call-ip6tables"]`, `is "0"`, `ip6tables: ¦"0"`, 0},
		{"ip_forward not one", [][2]string{e(`net.ipv4.ip_forward: "1"`, `net.ipv4.ip_forward: "2"`)}, `sysctls["net.ipv4.ip_forward"]`, `net.ipv4.ip_forward is "2": set it to "1"`, `ip_forward: ¦"2"`, 0},
		// A value with a line break writes a second setting into the sysctl.d file: the node
		// layer refuses it, so lint must too (one grammar, recipes.CheckSysctlValue).
		{"sysctl value with a newline", [][2]string{e("  net.ipv4.ip_forward: \"1\"\n", "  net.ipv4.ip_forward: \"1\"\n  vm.max_map_count: \"262144\\nkernel.core_pattern = |/tmp/x\"\n")},
			`sysctls["vm.max_map_count"]`, "is not one line", `max_map_count: ¦"262144`, 0},
		{"sysctl glob", [][2]string{e("  net.ipv4.ip_forward: \"1\"\n", "  net.ipv4.ip_forward: \"1\"\n  net.ipv4.conf.*.rp_filter: \"1\"\n")},
			`sysctls["net.ipv4.conf.*.rp_filter"]`, `"net.ipv4.conf.*.rp_filter" is not a sysctl name`, `rp_filter: ¦"1"`, 0},
		{"kernel.panic the kubelet refuses", [][2]string{e("  net.ipv4.ip_forward: \"1\"\n", "  net.ipv4.ip_forward: \"1\"\n  kernel.panic: \"0\"\n")},
			`sysctls["kernel.panic"]`, `kernel.panic is "0": every node has "10"; remove it from the recipe`, `panic: ¦"0"`, 0},
		{"sysctl without a value", [][2]string{e("  net.ipv4.ip_forward: \"1\"\n", "  net.ipv4.ip_forward: \"1\"\n  vm.swappiness: \"\"\n")},
			`sysctls["vm.swappiness"]`, "has no value", `swappiness: ¦""`, 0},
		{"no overlay module", [][2]string{e("  - overlay\n", "")}, "modules", "missing overlay", "\n¦modules:", 0},
		{"bad module name", [][2]string{e("  - br_netfilter\n", "  - br_netfilter\n  - nf conntrack\n")}, "modules[2]", `"nf conntrack" is not a kernel module name`, "- ¦nf conntrack", 0},
		{"no br_netfilter module", [][2]string{e("  - br_netfilter\n", "")}, "modules", "missing br_netfilter", "\n¦modules:", 0},

		// Host tools.
		{"no conntrack", [][2]string{e("    - conntrack\n", "")}, "base.packages", "missing conntrack", "  ¦packages:", 0},
		{"no socat", [][2]string{e("    - socat\n", "")}, "base.packages", "missing socat", "  ¦packages:", 0},
		{"no ebtables", [][2]string{e("    - ebtables\n", "")}, "base.packages", "missing ebtables", "  ¦packages:", 0},
		{"no iptables", [][2]string{e("    - iptables\n", "")}, "base.packages", "missing iptables", "  ¦packages:", 0},

		// Versions: unpinned and skewed.
		{"kubernetes latest", [][2]string{e(`version: "1.35"`, `version: latest`)}, "kubernetes.version", `"latest" floats`, "version: ¦latest", 0},
		{"kubernetes stable", [][2]string{e(`version: "1.35"`, `version: stable`)}, "kubernetes.version", `"stable" floats`, "version: ¦stable", 0},
		{"kubernetes empty", [][2]string{e(`version: "1.35"`, `version: ""`)}, "kubernetes.version", "version is empty", `version: ¦""`, 0},
		{"kubernetes major only", [][2]string{e(`version: "1.35"`, `version: "1"`)}, "kubernetes.version", "major version only", `version: ¦"1"`, 0},
		{"kubernetes star", [][2]string{e(`version: "1.35"`, `version: "*"`)}, "kubernetes.version", "wildcard", `version: ¦"*"`, 0},
		{"kubernetes 1.x", [][2]string{e(`version: "1.35"`, `version: 1.x`)}, "kubernetes.version", "wildcard", `version: ¦1.x`, 0},
		{"kubernetes range", [][2]string{e(`version: "1.35"`, `version: ">=1.35"`)}, "kubernetes.version", "ranges are not supported", `version: ¦">=1.35"`, 0},
		{"component skew", [][2]string{e(kubeletLine, kubeletLine+"      version: v1.34.2\n")}, "kubernetes.components[0].version", "kubelet v1.34.2 differs from kubernetes.version 1.35", "version: ¦v1.34.2", 0},
		{"component unpinned", [][2]string{e(kubeletLine, kubeletLine+"      version: latest\n")}, "kubernetes.components[0].version", `"latest" floats`, "      version: ¦latest", 0},
		{"etcd unpinned", [][2]string{e(`version: "3.6"`, `version: latest`)}, "etcd.version", `"latest" floats`, "version: ¦latest", 0},
		{"cni unpinned", [][2]string{e(`version: "1.9"`, `version: "*"`)}, "cni.version", "wildcard", `version: ¦"*"`, 0},
		{"sandbox image unpinned", [][2]string{e("packages: [containerd, runc]\n", "packages: [containerd, runc]\n  sandboxImage: registry.k8s.io/pause\n")}, "runtime.sandboxImage", "is not pinned", "sandboxImage: ¦registry", 0},
		{"sandbox image latest", [][2]string{e("packages: [containerd, runc]\n", "packages: [containerd, runc]\n  sandboxImage: registry.k8s.io/pause:latest\n")}, "runtime.sandboxImage", "is not pinned", "sandboxImage: ¦registry", 0},
		{"url without version", [][2]string{e("    type: gomod\n    module: k8s.io/kubernetes\n", "    type: url\n    url: https://dl.k8s.io/release/stable/bin/linux/{arch}/{name}\n")}, "kubernetes.source.url", "url has no {version}", "url: ¦https", 0},

		// IPv6.
		{"ipv6 without forwarding", [][2]string{e("ipv6: false", "ipv6: true")}, "sysctls", "net.ipv6.conf.all.forwarding must be \"1\" when network.ipv6 is true", "\n¦sysctls:", 0},
		{"ipv6 without ip6tables", [][2]string{e("ipv6: false", "ipv6: true"), e("  net.ipv4.ip_forward: \"1\"\n", "  net.ipv4.ip_forward: \"1\"\n  net.ipv6.conf.all.forwarding: \"1\"\n"), e("    - iptables\n", "")}, "base.packages", "network.ipv6 is true but iptables (which carries ip6tables) is missing", "  ¦packages:", 2},

		// Roles and units.
		{"unknown unit", [][2]string{e("      - kubelet.service\n", "      - kubelett.service\n")}, "roles[0].units[6]", `unknown unit "kubelett.service": did you mean "kubelet.service"?`, "- ¦kubelett", 0},
		{"unit of the other runtime", [][2]string{e("      - containerd.service\n", "      - docker.service\n")}, "roles[0].units[5]", "docker.service belongs to runtime docker or docker+cri-dockerd, but this recipe's runtime is containerd: use containerd.service", "- ¦docker.service", 0},
		{"unit without its binary", [][2]string{e("    - name: kube-proxy\n", "")}, "roles[0].units[7]", "kube-proxy.service needs component kube-proxy", "- ¦kube-proxy.service", 2}, // master and minion
		{"duplicate role", [][2]string{e("  - name: minion\n", "  - name: master\n")}, "roles[1].name", `duplicate role "master"`, "  - name: ¦master\n    units:\n      - containerd", 0},
		{"bad role name", [][2]string{e("  - name: minion\n", "  - name: Minion_1\n")}, "roles[1].name", `"Minion_1" is not a role name`, "name: ¦Minion_1", 0},
		{"role name too long", [][2]string{e("  - name: minion\n", "  - name: minion-of-a-rather-long-role-name\n")}, "roles[1].name", `"minion-of-a-rather-long-role-name" is not a role name`, "name: ¦minion-of-a-rather", 0},
		{"unit without its suffix", [][2]string{e("      - kubelet.service\n", "      - kubelet\n")}, "roles[0].units[6]", `"kubelet" is not a systemd unit name`, "- ¦kubelet\n", 0},
		{"dependency listed in a role", [][2]string{e("      - kubelet.service\n", "      - kubebake-images.service\n")}, "roles[0].units[6]", `unknown unit "kubebake-images.service"`, "- ¦kubebake-images", 0},
		{"flanneld without a podNetwork", [][2]string{e(podNetworkSection(t), "")}, "roles[0].units[8]", "flanneld.service is the pod network agent, but the recipe has no podNetwork section", "- ¦flanneld.service", 2}, // master and minion
		// The control plane units need kubebake-master-pki.service, which runs kubeadm: the
		// layer refuses them without kubeadm even when the role lists no unit running it.
		{"control plane without kubeadm", [][2]string{e("    - name: kubeadm\n", ""), e("      - kubebake-master-bootstrap.service\n", "")}, "roles[0].units[0]",
			"etcd.service needs kubebake-master-pki.service, which runs component kubeadm, which kubernetes.components lacks", "- ¦etcd.service", 0},
		{"role without units", [][2]string{e("\nimage:", "  - name: gpu\n    units: []\n\nimage:")}, "roles[2].units", "is empty", "    ¦units: []", 0},
		{"duplicate unit", [][2]string{e("      - kubelet.service\n", "      - kubelet.service\n      - kubelet.service\n")}, "roles[0].units[7]", `duplicate unit "kubelet.service"`, "kubelet.service\n      - ¦kubelet.service", 0},
		{"no roles", [][2]string{e(rolesSection(t), "roles: []\n")}, "roles", "is empty", "¦roles: []", 0},

		// Components, plugins, duplicates.
		{"unknown component", [][2]string{e(kubeletLine, kubeletLine+"    - name: kube-dns\n")}, "kubernetes.components[1].name", `unknown component "kube-dns"`, "name: ¦kube-dns", 0},
		{"duplicate component", [][2]string{e(kubeletLine, kubeletLine+kubeletLine)}, "kubernetes.components[1].name", `duplicate component "kubelet"`, kubeletLine + "    - name: ¦kubelet", 0},
		{"unknown cni plugin", [][2]string{e("plugins: [loopback, bridge, host-local, portmap]", "plugins: [loopback, bridge, host-local, portmap, flannel]")}, "cni.plugins[4]", `unknown CNI plugin "flannel"`, "¦flannel", 0},
		{"missing cni plugin", [][2]string{e("plugins: [loopback, bridge, host-local, portmap]", "plugins: [loopback, bridge, host-local]")}, "cni.plugins", "missing portmap", "  ¦plugins: [loopback", 0},
		{"duplicate cni plugin", [][2]string{e("plugins: [loopback, bridge, host-local, portmap]", "plugins: [loopback, bridge, host-local, portmap, bridge]")}, "cni.plugins[4]", `duplicate plugin "bridge"`, "portmap, ¦bridge", 0},
		{"duplicate package", [][2]string{e("    - ethtool\n", "    - ethtool\n    - socat\n")}, "base.packages[5]", `duplicate package "socat"`, "ethtool\n    - ¦socat", 0},
		{"duplicate module", [][2]string{e("  - br_netfilter\n", "  - br_netfilter\n  - overlay\n")}, "modules[2]", `duplicate module "overlay"`, "br_netfilter\n  - ¦overlay", 0},

		// Network.
		{"bad pod CIDR", [][2]string{e("podCIDR: 10.244.0.0/16", "podCIDR: 10.244.0.0/33")}, "network.podCIDR", `"10.244.0.0/33" is not a CIDR`, "podCIDR: ¦10.244", 0},
		{"CIDR with host bits", [][2]string{e("podCIDR: 10.244.0.0/16", "podCIDR: 10.244.0.1/16")}, "network.podCIDR", "did you mean 10.244.0.0/16?", "podCIDR: ¦10.244", 0},
		{"overlapping CIDRs", [][2]string{e("serviceCIDR: 10.96.0.0/12", "serviceCIDR: 10.240.0.0/12")}, "network.serviceCIDR", "overlaps network.podCIDR", "serviceCIDR: ¦10.240", 0},

		// Node pod ranges.
		{"node range not longer than the pod CIDR", [][2]string{e("nodeCIDRMaskSize: 24", "nodeCIDRMaskSize: 16")}, "network.nodeCIDRMaskSize", "/16 is not longer than network.podCIDR 10.244.0.0/16: it leaves room for one node at most; use at least /17 (2 nodes), typically /24", "nodeCIDRMaskSize: ¦16", 0},
		{"node range shorter than the pod CIDR", [][2]string{e("nodeCIDRMaskSize: 24", "nodeCIDRMaskSize: 8")}, "network.nodeCIDRMaskSize", "/8 is not longer than network.podCIDR", "nodeCIDRMaskSize: ¦8", -1},
		{"node range without pod addresses", [][2]string{e("nodeCIDRMaskSize: 24", "nodeCIDRMaskSize: 31")}, "network.nodeCIDRMaskSize", "/31 leaves no addresses for pods on a node: use at most /30", "nodeCIDRMaskSize: ¦31", 0},
		{"node range not a prefix length", [][2]string{e("nodeCIDRMaskSize: 24", "nodeCIDRMaskSize: 40")}, "network.nodeCIDRMaskSize", "40 is not an IPv4 prefix length: use 24", "nodeCIDRMaskSize: ¦40", 0},
		{"IPv6 node range too far from the pod CIDR", [][2]string{
			e("ipv6: false", "ipv6: true"), e("  net.ipv4.ip_forward: \"1\"\n", "  net.ipv4.ip_forward: \"1\"\n  net.ipv6.conf.all.forwarding: \"1\"\n"),
			e("podCIDR: 10.244.0.0/16", "podCIDR: fd00:10:244::/48"), e("serviceCIDR: 10.96.0.0/12", "serviceCIDR: fd00:10:96::/112"),
			e("nodeCIDRMaskSize: 24", "nodeCIDRMaskSize: 80"),
		}, "network.nodeCIDRMaskSize", "/80 is more than 16 bits longer than network.podCIDR fd00:10:244::/48: use at most /64", "nodeCIDRMaskSize: ¦80", 0},

		// Pod network and DNS.
		{"unknown pod network", [][2]string{e("name: flannel", "name: calico")}, "podNetwork.name", `unknown pod network "calico": use flannel`, "name: ¦calico", 0},
		{"unknown flannel backend", [][2]string{e("backend: host-gw", "backend: udp")}, "podNetwork.backend", `unknown flannel backend "udp": use host-gw`, "backend: ¦udp", 0},
		{"pod network unpinned", [][2]string{e(`version: "0.28"`, `version: latest`)}, "podNetwork.version", `"latest" floats`, "version: ¦latest", 0},
		{"flannel from another module", [][2]string{e("module: github.com/flannel-io/flannel", "module: github.com/example/flannel")}, "podNetwork.source.module", "kubebake builds flanneld from its own main written against github.com/flannel-io/flannel", "module: ¦github.com/example", 0},
		{"unknown DNS server", [][2]string{e("name: coredns", "name: kube-dns")}, "dns.name", `unknown DNS server "kube-dns": use coredns`, "name: ¦kube-dns", 0},
		{"dns unpinned", [][2]string{e(`version: "1.15"`, `version: "1"`)}, "dns.version", "major version only", `version: ¦"1"`, 0},
		{"coredns from another module", [][2]string{e("module: github.com/coredns/coredns", "module: github.com/example/coredns")}, "dns.source.module", "kubebake builds coredns from its own main written against github.com/coredns/coredns", "module: ¦github.com/example", 0},
		{"dns source without a module path", [][2]string{e("module: github.com/coredns/coredns", "module: coredns")}, "dns.source.module", `"coredns" is not a Go module path`, "module: ¦coredns", -1},

		// Image.
		{"unknown image format", [][2]string{e("formats: [raw, qcow2]", "formats: [raw, vdi]")}, "image.formats[1]", `unknown image format "vdi": use raw, qcow2, vhd and vmdk`, "¦vdi", 0},
		{"duplicate image format", [][2]string{e("formats: [raw, qcow2]", "formats: [raw, raw]")}, "image.formats[1]", `duplicate format "raw"`, "raw, ¦raw", 0},
		{"image too small", [][2]string{e("size: 4GiB", "size: 1GiB")}, "image.size", "too small", "size: ¦1GiB", 0},
		{"image size nonsense", [][2]string{e("size: 4GiB", "size: 4 gigs")}, "image.size", "unknown unit", "size: ¦4 gigs", 0},
		{"unknown bootloader", [][2]string{e("bootloader: systemd-boot", "bootloader: lilo")}, "image.bootloader", `unknown bootloader "lilo"`, "bootloader: ¦lilo", 0},

		// Other names.
		{"cgroupfs", [][2]string{e("cgroupDriver: systemd", "cgroupDriver: cgroupfs")}, "runtime.cgroupDriver", `cgroup driver "cgroupfs" is refused`, "cgroupDriver: ¦cgroupfs", 0},
		{"unknown runtime", [][2]string{e("name: containerd", "name: cri-o")}, "runtime.name", `unknown runtime "cri-o"`, "name: ¦cri-o", -1},
		{"no runc", [][2]string{e("packages: [containerd, runc]", "packages: [containerd]")}, "runtime.packages", "missing runc", "  ¦packages: [containerd]", 0},
		{"unknown source type", [][2]string{e("    type: gomod\n    module: go.etcd.io", "    type: git\n    module: go.etcd.io")}, "etcd.source.type", `unknown source type "git"`, "type: ¦git", 0},
		{"other distro", [][2]string{e("distro: debian", "distro: ubuntu")}, "base.distro", `distro "ubuntu" is not supported`, "distro: ¦ubuntu", 0},
		{"suite of another release", [][2]string{e("suites: [bookworm, bookworm-updates, bookworm-security]", "suites: [bookworm, trixie-updates, bookworm-security]")}, "base.suites[1]", `suite "trixie-updates" is not of release "bookworm"`, "¦trixie-updates", 0},
		{"security archive not a URL", [][2]string{e("  # securityMirror: leave it out", "  securityMirror: ftp://sec.test/debian-security\n  # securityMirror: leave it out")}, "base.securityMirror", `"ftp://sec.test/debian-security" is not an http(s) or file URL`, "securityMirror: ¦ftp", 0},
		{"security archive with credentials", [][2]string{e("  # securityMirror: leave it out", "  securityMirror: https://u:secret@sec.test/debian-security\n  # securityMirror: leave it out")}, "base.securityMirror", "carries credentials", "securityMirror: ¦https", 0},
		{"bad name", [][2]string{e("name: debian-12", "name: Debian_12")}, "name", `"Debian_12" is not a valid name`, "name: ¦Debian_12", 0},
		{"package pinned to nothing exact", [][2]string{e("    - kmod\n", "    - kmod=latest\n")}, "base.packages[6]", `"kmod=latest": "latest" is not an exact Debian version`, "- ¦kmod=latest", 0},
		{"package name with a space", [][2]string{e("    - kmod\n", "    - \"kmod tools\"\n")}, "base.packages[6]", `"kmod tools" is not a Debian package name`, "- ¦\"kmod tools", 0},
		{"package listed pinned and not", [][2]string{e("    - kmod\n", "    - kmod\n    - kmod=30+20221128-1\n")}, "base.packages[7]", `duplicate package "kmod"`, "- ¦kmod=30", 0},
	}
	seenMsg := map[string]string{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := mutate(t, c.edits...)
			r, err := Parse("bad.yaml", []byte(src))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			fs := Lint(r)
			var errs []Finding
			for _, f := range fs {
				if f.Severity == SeverityError {
					errs = append(errs, f)
				}
			}
			want := c.n
			if want == 0 {
				want = 1
			}
			if want > 0 && len(errs) != want {
				t.Errorf("got %d errors, want %d:\n%s", len(errs), want, findingsText(fs))
			}
			if LintError(fs) == nil {
				t.Fatal("LintError is nil")
			}
			wantPos := posOf(t, src, c.at)
			for _, f := range errs {
				if f.Field == c.field && strings.Contains(f.Message, c.msg) {
					if f.Pos != wantPos {
						t.Errorf("%s: at %s, want %s", f, f.Pos, wantPos)
					}
					if f.Why == "" || f.File != "bad.yaml" {
						t.Errorf("%s: no why or file", f)
					}
					key := f.Field + ": " + f.Message
					if prev, dup := seenMsg[key]; dup && prev != c.name && c.n == 0 {
						t.Errorf("%q also comes from %q: each pitfall needs its own message", key, prev)
					}
					seenMsg[key] = c.name
					return
				}
			}
			t.Errorf("no finding on %s containing %q:\n%s", c.field, c.msg, findingsText(fs))
		})
	}
}

// criDockerdBlock is a good runtime.criDockerd, indented for the runtime: section.
const (
	criDockerdURL   = "https://github.com/Mirantis/cri-dockerd/releases/download/v{version}/cri-dockerd-{version}.{arch}.tgz"
	criDockerdBlock = "  criDockerd:\n    version: \"0.3.16\"\n    source:\n      type: url\n      url: " + criDockerdURL + "\n      member: cri-dockerd/{name}\n"
)

// dockerEdits turn the embedded debian-12 recipe into a docker one with the given
// runtime.criDockerd block.
func dockerEdits(criDockerd string) [][2]string {
	return [][2]string{
		e("name: containerd", "name: docker"), e("packages: [containerd, runc]", "packages: [docker.io, containerd, runc]\n  sandboxImage: registry.k8s.io/pause:3.10"),
		e("  cgroupDriver: systemd\n", "  cgroupDriver: systemd\n"+criDockerd),
		e("driver: overlayfs", "driver: overlay2"),
		e("      - containerd.service\n", "      - docker.service\n      - cri-docker.service\n"),
		e("      - containerd.service\n", "      - docker.service\n      - cri-docker.service\n"), // master and minion
	}
}

// A docker recipe with a good runtime.criDockerd passes lint without a finding about it.
func TestLintCRIDockerdClean(t *testing.T) {
	r, err := Parse("docker.yaml", []byte(mutate(t, dockerEdits(criDockerdBlock)...)))
	if err != nil {
		t.Fatal(err)
	}
	if fs := Lint(r); len(fs) != 0 {
		t.Errorf("findings:\n%s", findingsText(fs))
	}
	if got := CRIOf(r.Runtime); got != CRIServerDockerd {
		t.Errorf("CRIOf = %s", got)
	}
}

// rolesSection is the roles: block of the embedded debian-12 recipe.
func rolesSection(t *testing.T) string {
	data, _ := EmbeddedFile("debian-12.yaml")
	s := string(data)
	i, j := strings.Index(s, "\nroles:\n"), strings.Index(s, "\nimage:")
	if i < 0 || j < i {
		t.Fatal("no roles section")
	}
	return s[i+1 : j]
}

func findingsText(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// ethtool is recommended, not required: a warning, and lint passes.
func TestLintWarningOnly(t *testing.T) {
	src := mutate(t, e("    - ethtool\n", ""))
	r, err := Parse("w.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	fs := Lint(r)
	if len(fs) != 1 || fs[0].Severity != SeverityWarning || !strings.Contains(fs[0].Message, "missing ethtool") {
		t.Fatalf("findings: %v", fs)
	}
	if err := LintError(fs); err != nil {
		t.Errorf("a warning fails lint: %v", err)
	}
	if got, want := fs[0].String(), "w.yaml:22:3: warning: base.packages: missing ethtool (recommended) ("; !strings.HasPrefix(got, want) {
		t.Errorf("got %s\nwant prefix %s", got, want)
	}
}

// A recipe built in Go (no positions) still lints, with field paths and no line numbers.
func TestLintWithoutPositions(t *testing.T) {
	r, err := Load("debian-13")
	if err != nil {
		t.Fatal(err)
	}
	r.Positions, r.File = nil, ""
	r.Storage.Driver = "devicemapper"
	fs := Lint(r)
	if len(fs) != 1 || fs[0].String() != `storage.driver: "devicemapper" is refused: use overlayfs (`+fs[0].Why+`)` {
		t.Errorf("findings: %v", fs)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4GiB": 4 << 30, "512MiB": 512 << 20, "2G": 2 << 30, "1TiB": 1 << 40, "1048576": 1 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "4.5GiB", "-1G", "4GB!", "1000", "99999999999T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// With the built-in roles (no roles section), a missing component is reported once, at the
// components the user wrote, not at roles nobody wrote.
func TestLintBuiltinRolesNeedComponents(t *testing.T) {
	src := strings.Replace(minimal, "{name: kubeadm}, ", "", 1)
	r, err := Parse("m.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	fs := Lint(r)
	want := "m.yaml:10:3: kubernetes.components: missing kubeadm, which kubebake-master-bootstrap.service of the built-in master role runs ("
	if len(fs) != 1 || !strings.HasPrefix(fs[0].String(), want) {
		t.Errorf("findings:\n%s\nwant one starting %s", findingsText(fs), want)
	}
}

// Several roles and no podNetwork: a warning (pods on two nodes cannot talk), at the roles the
// user wrote, or at the top of the document for the built-in roles.
func TestLintNoPodNetwork(t *testing.T) {
	// Without a podNetwork there is no flanneld either (lint refuses flanneld.service then,
	// as the layer does): drop it from both roles.
	src := mutate(t, e(podNetworkSection(t), ""), e("      - flanneld.service\n", ""), e("      - flanneld.service\n", ""))
	r, err := Parse("nopn.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	fs := Lint(r)
	if len(fs) != 1 || LintError(fs) != nil {
		t.Fatalf("findings: %v", fs)
	}
	want := fmt.Sprintf("nopn.yaml:%d:1: warning: podNetwork: 2 roles but no podNetwork: pods on different nodes cannot reach each other (", posOf(t, src, "\n¦roles:").Line)
	if got := fs[0].String(); !strings.HasPrefix(got, want) || !strings.Contains(got, "add podNetwork: {name: flannel") {
		t.Errorf("got  %s\nwant %s...", got, want)
	}

	// One role: nothing to route between.
	one := strings.Replace(mutate(t, e(podNetworkSection(t), "")), rolesSection(t), "roles:\n  - name: minion\n    units: [containerd.service, kubelet.service, kube-proxy.service, kubebake-minion-join.service]\n", 1)
	r, err = Parse("one.yaml", []byte(one))
	if err != nil {
		t.Fatal(err)
	}
	if fs := Lint(r); len(fs) != 0 {
		t.Errorf("one role: %v", fs)
	}

	// Built-in roles: at the document's start.
	mini := strings.Replace(minimal, "podNetwork: {name: flannel, version: \"0.28\"}\n", "", 1)
	r, err = Parse("mini.yaml", []byte(mini))
	if err != nil {
		t.Fatal(err)
	}
	if fs := Lint(r); len(fs) != 1 || !strings.HasPrefix(fs[0].String(), "mini.yaml:1:1: warning: podNetwork: 2 roles but no podNetwork") {
		t.Errorf("built-in roles: %v", fs)
	}
}

// podNetworkSection is the podNetwork: block of the embedded debian-12 recipe, with its comment.
func podNetworkSection(t *testing.T) string {
	data, _ := EmbeddedFile("debian-12.yaml")
	s := string(data)
	i, j := strings.Index(s, "\n# Routes between the nodes' pod ranges"), strings.Index(s, "\n# Cluster DNS")
	if i < 0 || j < i {
		t.Fatal("no podNetwork section")
	}
	return s[i+1 : j+1]
}

// TestLintLockedRecipePitfalls: each embedded recipe (each has a lock) edited to a known
// pitfall. Whatever the lock says (a relock must not launder a pitfall: lock and build lint
// first), lint refuses the recipe with an error, never just a warning, at the edited YAML.
func TestLintLockedRecipePitfalls(t *testing.T) {
	cases := []struct {
		name  string
		old   string
		new   string
		field string
		at    string // needle: where the error must point ("¦" marks the column)
	}{
		{"ip_forward 0", `net.ipv4.ip_forward: "1"`, `net.ipv4.ip_forward: "0"`, `sysctls["net.ipv4.ip_forward"]`, `ip_forward: ¦"0"`},
		{"ip_forward unset", "  net.ipv4.ip_forward: \"1\"\n", "", "sysctls", "\n¦sysctls:"},
		{"bridge-nf-call-iptables 0", `bridge-nf-call-iptables: "1"`, `bridge-nf-call-iptables: "0"`, `sysctls["net.bridge.bridge-nf-call-iptables"]`, `iptables: ¦"0"`},
		{"bridge-nf-call-iptables unset", "  net.bridge.bridge-nf-call-iptables: \"1\"\n", "", "sysctls", "\n¦sysctls:"},
		{"bridge-nf-call-ip6tables 0", `bridge-nf-call-ip6tables: "1"`, `bridge-nf-call-ip6tables: "0"`, `sysctls["net.bridge.bridge-nf-call-ip6tables"]`, `ip6tables: ¦"0"`},
		{"bridge-nf-call-ip6tables unset", "  net.bridge.bridge-nf-call-ip6tables: \"1\"\n", "", "sysctls", "\n¦sysctls:"},
		{"no overlay", "  - overlay\n", "", "modules", "\n¦modules:"},
		{"no br_netfilter", "  - br_netfilter\n", "", "modules", "\n¦modules:"},
		{"no modules", "modules:\n  - overlay\n  - br_netfilter\n", "modules: []\n", "modules", "\n¦modules: []"},
		{"devicemapper", "driver: overlayfs", "driver: devicemapper", "storage.driver", "driver: ¦devicemapper"},
		{"loopback", "driver: overlayfs", "driver: loopback", "storage.driver", "driver: ¦loopback"},
		{"sysctl injection", `net.ipv4.ip_forward: "1"`, `net.ipv4.ip_forward: "1\nkernel.core_pattern = |/tmp/x"`, `sysctls["net.ipv4.ip_forward"]`, `ip_forward: ¦"1\n`},
	}
	for _, name := range EmbeddedNames() {
		data, err := EmbeddedFile(name + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		orig, err := Parse(name+".yaml", data)
		if err != nil {
			t.Fatal(err)
		}
		if fs := Lint(orig); LintError(fs) != nil {
			t.Fatalf("%s does not lint clean: %v", name, fs)
		}
		for _, c := range cases {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				src := string(data)
				if strings.HasPrefix(c.old, "driver: ") {
					// The recipe's own overlay driver: overlayfs (containerd) or overlay2 (docker).
					c.old = "driver: " + orig.Storage.Driver
				}
				if !strings.Contains(src, c.old) {
					t.Fatalf("%q not in %s", c.old, name)
				}
				src = strings.Replace(src, c.old, c.new, 1)
				r, err := Parse(name+".yaml", []byte(src))
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				fs := Lint(r)
				if LintError(fs) == nil {
					t.Fatalf("lint passes:\n%s", findingsText(fs))
				}
				want := posOf(t, src, c.at)
				for _, f := range fs {
					if f.Field == c.field && f.Pos == want && f.File == name+".yaml" {
						if f.Severity != SeverityError {
							t.Errorf("%s: a %s, want an error", f, f.Severity)
						}
						return
					}
				}
				t.Errorf("no error on %s at %s:\n%s", c.field, want, findingsText(fs))
			})
		}
	}
}
