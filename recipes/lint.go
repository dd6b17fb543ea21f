package recipes

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kubebake/kubebake/artifacts/oci"
	"github.com/kubebake/kubebake/internal/redact"
)

// Severity of a finding: errors make lint (and build) fail, warnings are advice.
type Severity string

const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Finding is one lint result: where (the user's line:col, from the recipe's Positions), which
// field, what is wrong, and why it breaks clusters.
type Finding struct {
	File string `json:"file"`
	Pos
	Field    string   `json:"field"`
	Message  string   `json:"message"`
	Why      string   `json:"why"`
	Severity Severity `json:"severity"`
}

// String is one line: `file:line:col: field: message (why)`.
func (f Finding) String() string {
	var b strings.Builder
	if loc := location(f.File, f.Pos); loc != "" {
		b.WriteString(loc)
		b.WriteString(": ")
	}
	if f.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	if f.Field != "" {
		b.WriteString(f.Field)
		b.WriteString(": ")
	}
	b.WriteString(f.Message)
	if f.Why != "" {
		b.WriteString(" (")
		b.WriteString(f.Why)
		b.WriteString(")")
	}
	return oneLine(b.String())
}

// LintError turns the error findings into an error (one per line, warnings left out), or nil
// when there are none. Build refuses a recipe with it.
func LintError(fs []Finding) error {
	var lines []string
	for _, f := range fs {
		if f.Severity != SeverityWarning {
			lines = append(lines, f.String())
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return &LintErrors{Findings: fs, text: strings.Join(lines, "\n")}
}

// LintErrors is the error LintError returns; Findings holds every finding, warnings too.
type LintErrors struct {
	Findings []Finding
	text     string
}

func (e *LintErrors) Error() string { return e.text }

// Lint checks a parsed, defaulted recipe for the pitfalls that make clusters fail (DESIGN.md)
// and for names kubebake does not know. Findings are sorted by position. It reads no file
// but the image archives images: names (relative to the recipe's folder), and of those only
// what says which image they hold.
func Lint(r *Recipe) []Finding {
	l := &linter{r: r}
	l.name()
	l.base()
	l.kubernetes()
	l.runtime()
	l.etcd()
	l.cni()
	l.storage()
	l.network()
	l.podNetwork()
	l.dns()
	l.images()
	l.sysctls()
	l.modules()
	l.roles()
	l.image()
	l.mirrors()
	l.security()
	sort.SliceStable(l.fs, func(i, j int) bool {
		a, b := l.fs[i], l.fs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return l.fs
}

type linter struct {
	r  *Recipe
	fs []Finding
}

// at reports a problem with the value at path (or its parent when the field is absent).
func (l *linter) at(path, msg, why string) {
	l.add(l.r.Positions.Of(path), SeverityError, path, msg, why)
}

// atKey reports a problem with a whole section, at its key.
func (l *linter) atKey(path, msg, why string) {
	l.add(l.r.Positions.KeyOf(path), SeverityError, path, msg, why)
}

func (l *linter) warn(path, msg, why string) {
	l.add(l.r.Positions.Of(path), SeverityWarning, path, msg, why)
}

func (l *linter) add(p Pos, sev Severity, path, msg, why string) {
	l.fs = append(l.fs, Finding{File: l.r.File, Pos: p, Field: path, Message: msg, Why: why, Severity: sev})
}

var (
	nameRE       = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)
	debPkgRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	debVersionRE = regexp.MustCompile(`^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$`)
	suiteRE      = regexp.MustCompile(`^[a-z]+(-[a-z]+)*$`)
	goModRE      = regexp.MustCompile(`^[a-z0-9.-]+\.[a-z]+(/[A-Za-z0-9._~-]+)*$`)
	imageTagRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

const (
	whyUnpinned = "an unpinned version makes two builds of one recipe differ, so nodes of one cluster drift apart"
	whyDup      = "a repeated entry is a copy-paste slip that hides what was meant"
)

func (l *linter) name() {
	if !nameRE.MatchString(l.r.Name) {
		l.at("name", fmt.Sprintf("%q is not a valid name: use lower-case letters, digits, '.' and '-', at most 63", l.r.Name),
			"the name becomes file names, the image name and cloud image names")
	}
}

// duplicates reports every repeated string in a list, at the repeat.
func (l *linter) duplicates(path string, items []string, what string) {
	seen := map[string]int{}
	for i, s := range items {
		if j, ok := seen[s]; ok {
			l.at(indexPath(path, i), fmt.Sprintf("duplicate %s %q (also item %d)", what, s, j), whyDup)
			continue
		}
		seen[s] = i
	}
}

func (l *linter) base() {
	b := l.r.Base
	if b.Distro != "debian" {
		l.at("base.distro", fmt.Sprintf("distro %q is not supported: use debian", b.Distro),
			"the root filesystem is built with mmdebstrap from a Debian archive")
	}
	switch {
	case b.Release == "":
		l.at("base.release", "is empty: name a Debian suite codename such as bookworm or trixie", "the release decides every package version")
	case !suiteRE.MatchString(b.Release):
		l.at("base.release", fmt.Sprintf("%q is not a suite codename (bookworm, trixie)", b.Release), "the release decides every package version")
	case b.Release != "bookworm" && b.Release != "trixie":
		l.warn("base.release", fmt.Sprintf("release %q is untested; bookworm and trixie are", b.Release), "package names and versions differ between releases")
	}
	if b.Arch != "amd64" && b.Arch != "arm64" {
		l.at("base.arch", fmt.Sprintf("arch %q is not supported: use amd64 or arm64", b.Arch), "every binary and package is built or fetched for this architecture")
	}
	if len(b.Components) == 0 {
		l.atKey("base.components", "is empty: use [main]", "no archive component means no packages")
	}
	for i, c := range b.Components {
		if !slices.Contains([]string{"main", "contrib", "non-free", "non-free-firmware"}, c) {
			l.at(indexPath("base.components", i), fmt.Sprintf("unknown archive component %q: use main, contrib, non-free or non-free-firmware", c), "apt finds no packages in a component that does not exist")
		}
	}
	l.duplicates("base.components", b.Components, "component")
	if len(b.Suites) == 0 {
		l.atKey("base.suites", fmt.Sprintf("is empty: use [%s, %s-updates]", b.Release, b.Release), "no suite means no packages")
	}
	for i, s := range b.Suites {
		if b.Release != "" && s != b.Release && !strings.HasPrefix(s, b.Release+"-") {
			l.at(indexPath("base.suites", i), fmt.Sprintf("suite %q is not of release %q", s, b.Release),
				"packages from two releases make a system that is neither and break on upgrade")
		}
	}
	l.duplicates("base.suites", b.Suites, "suite")
	if !strings.HasPrefix(b.Kernel, "linux-image-") {
		l.at("base.kernel", fmt.Sprintf("%q is not a kernel package: use %s", b.Kernel, DefaultKernel(b.Arch)), "without a kernel package the image does not boot")
	}
	if b.Mirror != "" {
		u, ok := archiveURL(b.Mirror)
		switch {
		case !ok:
			// The URL may carry a password: the message shows it without its credentials.
			l.at("base.mirror", fmt.Sprintf("%q is not an http(s) or file URL of a Debian archive; leave it out to use this machine's apt mirror", redact.URL(b.Mirror)), "packages are fetched from it")
		case u.User != nil:
			l.warn("base.mirror", "carries credentials (user:password@): they are used at build time only, through apt's auth.conf, and never written into the image, its manifest or a log",
				"the image's /etc/apt/sources.list names the mirror without them: a node that updates from it needs its own credentials")
		}
	}
	if b.SecurityMirror != "" {
		u, ok := archiveURL(b.SecurityMirror)
		switch {
		case !ok:
			l.at("base.securityMirror", fmt.Sprintf("%q is not an http(s) or file URL of a Debian security archive; leave it out to use this machine's apt security archive", redact.URL(b.SecurityMirror)), "the -security suites are fetched from it")
		case u.User != nil:
			l.at("base.securityMirror", "carries credentials (user:password@), which kubebake passes to base.mirror only; use a security archive that needs none", "the -security suites are fetched from it")
		}
	}
	l.packages("base.packages", b.Packages)
	have := map[string]bool{}
	for _, p := range b.Packages {
		name, _, _ := strings.Cut(p, "=")
		have[name] = true
	}
	for _, p := range sortedKeys(RequiredPackages) {
		if !have[p] {
			l.atKey("base.packages", "missing "+p, RequiredPackages[p])
		}
	}
	for _, p := range sortedKeys(RecommendedPackages) {
		if !have[p] {
			l.add(l.r.Positions.KeyOf("base.packages"), SeverityWarning, "base.packages", "missing "+p+" (recommended)", RecommendedPackages[p])
		}
	}
}

// packages checks a list of Debian packages: "name", or "name=version" for an exact Debian
// version (the lock pins every package anyway; a pin holds it across `lock --update`).
func (l *linter) packages(path string, pkgs []string) {
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		name, ver, pinned := strings.Cut(p, "=")
		names[i] = name
		switch {
		case !debPkgRE.MatchString(name):
			l.at(indexPath(path, i), fmt.Sprintf("%q is not a Debian package name", p), "apt cannot resolve it")
		case pinned && !debVersionRE.MatchString(ver):
			l.at(indexPath(path, i), fmt.Sprintf("%q: %q is not an exact Debian version such as 1.6.20~ds1-1+deb12u1", p, ver), whyUnpinned)
		}
	}
	l.duplicates(path, names, "package")
}

// version checks a version constraint field; exact and track are examples for the fix.
func (l *linter) version(path, v, exact, track string) {
	if _, err := ParseConstraint(v); err != nil {
		l.at(path, "version "+err.Error()+": write an exact version ("+exact+") or a minor track (\""+track+"\")", whyUnpinned)
	}
}

// source checks a binary source.
func (l *linter) source(path string, s Source, example string) {
	switch s.Type {
	case SourceGoMod:
		if s.Module == "" {
			l.at(path+".module", "gomod needs a module, e.g. "+example, "there is nothing to build")
		} else if !goModRE.MatchString(s.Module) {
			l.at(path+".module", fmt.Sprintf("%q is not a Go module path", s.Module), "the module proxy cannot resolve it")
		}
	case SourceURL:
		u, err := url.Parse(s.URL)
		switch {
		case s.URL == "":
			l.at(path+".url", "url source needs a url template with {version}, {name} and {arch}", "there is nothing to download")
		case err != nil || (u.Scheme != "https" && u.Scheme != "http"):
			l.at(path+".url", fmt.Sprintf("%q is not an http(s) URL", s.URL), "there is nothing to download")
		case !strings.Contains(s.URL, "{version}"):
			l.at(path+".url", "url has no {version}: it names one release whatever the recipe's version says", whyUnpinned)
		}
	case SourceDeb:
		if !debPkgRE.MatchString(s.Package) {
			l.at(path+".package", "deb source needs the Debian package that carries the binaries", "there is nothing to unpack")
		}
	default:
		l.at(path+".type", fmt.Sprintf("unknown source type %q: use gomod, url or deb", s.Type), "kubebake cannot fetch it")
		return
	}
	if s.Type != SourceGoMod && s.Module != "" {
		l.at(path+".module", "module is only for type gomod", "a setting that is ignored misleads the reader")
	}
	if s.Type != SourceURL && s.URL != "" {
		l.at(path+".url", "url is only for type url", "a setting that is ignored misleads the reader")
	}
	if s.Type != SourceDeb && s.Package != "" {
		l.at(path+".package", "package is only for type deb", "a setting that is ignored misleads the reader")
	}
}

func (l *linter) kubernetes() {
	k := l.r.Kubernetes
	l.version("kubernetes.version", k.Version, "v1.35.4", "1.35")
	want, _ := NormalizeVersion(k.Version)
	l.source("kubernetes.source", k.Source, KubernetesModule)
	if len(k.Components) == 0 {
		l.atKey("kubernetes.components", "is empty: list kubelet, kubeadm, kubectl, kube-proxy and the control plane", "a node without kubelet never joins a cluster")
	}
	seen := map[string]int{}
	for i, c := range k.Components {
		p := indexPath("kubernetes.components", i)
		if !slices.Contains(KubernetesComponents, c.Name) {
			l.at(p+".name", fmt.Sprintf("unknown component %q: %s", c.Name, suggestName(c.Name, KubernetesComponents)), "kubebake cannot build or run it")
		}
		if j, ok := seen[c.Name]; ok {
			l.at(p+".name", fmt.Sprintf("duplicate component %q (also item %d)", c.Name, j), whyDup)
		}
		seen[c.Name] = i
		if c.Version == "" {
			continue
		}
		got, err := NormalizeVersion(c.Version)
		switch {
		case err != nil:
			l.version(p+".version", c.Version, "v1.35.4", "1.35")
		case want != "" && got != want:
			l.at(p+".version", fmt.Sprintf("%s %s differs from kubernetes.version %s: remove it or make it equal", c.Name, got, want),
				"kubelet, kubectl and the control plane must be at one version; skewed components fail in ways the version skew policy does not cover")
		}
	}
}

func (l *linter) runtime() {
	rt := l.r.Runtime
	switch rt.Name {
	case RuntimeContainerd, RuntimeDocker:
	default:
		l.at("runtime.name", fmt.Sprintf("unknown runtime %q: use containerd or docker", rt.Name), "kubelet needs a CRI runtime it can talk to")
		return
	}
	l.criDockerd()
	if len(rt.Packages) == 0 {
		l.atKey("runtime.packages", "is empty: list the runtime's Debian packages and runc", "without them no container starts")
	} else {
		need := map[string][]string{RuntimeContainerd: {"containerd", "containerd.io"}, RuntimeDocker: {"docker.io", "docker-ce"}}[rt.Name]
		if !slices.ContainsFunc(rt.Packages, func(p string) bool { return slices.Contains(need, p) }) {
			l.atKey("runtime.packages", fmt.Sprintf("missing the %s package (%s)", rt.Name, need[0]), "without it no container starts")
		}
		if !slices.Contains(rt.Packages, "runc") && !slices.Contains(rt.Packages, "containerd.io") {
			l.atKey("runtime.packages", "missing runc", "the runtime starts every container through runc, and the lock must pin its version")
		}
	}
	l.packages("runtime.packages", rt.Packages)
	switch img := rt.SandboxImage; {
	case img == "" && CRIOf(rt) == CRIServerDockerd:
		l.atKey("runtime.sandboxImage", "is empty: name a pinned pause image, e.g. "+ExampleSandboxImage, "only nodes on containerd's CRI get a baked pause image; cri-dockerd would fall back to its own, which kubelet then garbage-collects or pulls from the network")
	case img == "":
		// containerd: the pause image baked into the node image (nothing to pull).
	default:
		if !pinnedImage(img) {
			l.at("runtime.sandboxImage", fmt.Sprintf("%q is not pinned: give a tag other than latest, or a digest, e.g. %s", img, ExampleSandboxImage), whyUnpinned)
		}
	}
	if rt.CgroupDriver != DefaultCgroupDriver {
		l.at("runtime.cgroupDriver", fmt.Sprintf("cgroup driver %q is refused: use systemd", rt.CgroupDriver),
			"systemd is PID 1 and owns the cgroup tree; a second manager (cgroupfs) makes kubelet and the runtime disagree under resource pressure")
	}
}

// pinnedImage reports whether an image reference names a fixed tag or a digest.
func pinnedImage(ref string) bool {
	if name, digest, ok := strings.Cut(ref, "@"); ok {
		return name != "" && strings.HasPrefix(digest, "sha256:") && len(digest) == 71
	}
	slash := strings.LastIndexByte(ref, '/')
	colon := strings.LastIndexByte(ref, ':')
	if colon <= slash {
		return false
	}
	tag := ref[colon+1:]
	return tag != "latest" && imageTagRE.MatchString(tag)
}

func (l *linter) etcd() {
	l.version("etcd.version", l.r.Etcd.Version, "v3.6.16", "3.6")
	l.source("etcd.source", l.r.Etcd.Source, EtcdModule)
}

func (l *linter) cni() {
	c := l.r.CNI
	l.version("cni.version", c.Version, "v1.9.1", "1.9")
	l.source("cni.source", c.Source, CNIModule)
	for i, p := range c.Plugins {
		if _, ok := CNIPlugins[p]; !ok {
			l.at(indexPath("cni.plugins", i), fmt.Sprintf("unknown CNI plugin %q: %s", p, suggestName(p, sortedKeys(CNIPlugins))), "kubebake cannot build it")
		}
	}
	l.duplicates("cni.plugins", c.Plugins, "plugin")
	for _, p := range RequiredCNIPlugins {
		if !slices.Contains(c.Plugins, p) {
			l.atKey("cni.plugins", "missing "+p, "kubelet and the pod network call the "+p+" plugin from /opt/cni/bin; without it pods stay in ContainerCreating")
		}
	}
}

func (l *linter) storage() {
	d := l.r.Storage.Driver
	want := StorageDriverFor(l.r.Runtime.Name)
	lower := strings.ToLower(d)
	switch {
	case lower == "devicemapper" || strings.Contains(lower, "devmapper") || strings.Contains(lower, "device-mapper"):
		l.at("storage.driver", fmt.Sprintf("%q is refused: use %s", d, want),
			"devicemapper on loopback files is slow, leaks space and corrupts images under load; it is deprecated and removed from current runtimes")
	case strings.Contains(lower, "loop"):
		l.at("storage.driver", fmt.Sprintf("%q is refused: loopback-backed storage, use %s", d, want),
			"storage on loopback files is slow and fills the root disk behind the kubelet's back, so image garbage collection never triggers")
	case d == "overlayfs" || d == "overlay2":
		if d != want {
			l.at("storage.driver", fmt.Sprintf("%q is the other runtime's name for overlay: %s calls it %s", d, l.r.Runtime.Name, want),
				"the runtime does not know the other's driver name and fails to start")
		}
	default:
		l.at("storage.driver", fmt.Sprintf("%q is refused: only overlay storage is supported, use %s", d, want),
			"kubelet's image garbage collection and the runtime's snapshotter are only tested on overlay")
	}
}

func (l *linter) network() {
	n := l.r.Network
	why := "kubelet, kube-proxy and the CNI config derive pod and Service addresses from it"
	var prefixes []netip.Prefix
	for _, f := range []struct{ path, v string }{{"network.podCIDR", n.PodCIDR}, {"network.serviceCIDR", n.ServiceCIDR}} {
		p, err := netip.ParsePrefix(f.v)
		switch {
		case f.v == "":
			l.at(f.path, "is empty: write a CIDR such as "+map[string]string{"network.podCIDR": DefaultPodCIDR, "network.serviceCIDR": DefaultServiceCIDR}[f.path], why)
			continue
		case err != nil:
			l.at(f.path, fmt.Sprintf("%q is not a CIDR such as 10.244.0.0/16", f.v), why)
			continue
		case p.Masked() != p:
			l.at(f.path, fmt.Sprintf("%q has host bits set: did you mean %s?", f.v, p.Masked()), why)
		case p.Addr().Is6() && !n.IPv6:
			l.at(f.path, fmt.Sprintf("%q is an IPv6 range but network.ipv6 is false", f.v), "IPv6 forwarding and ip6tables are only set up when ipv6 is true")
		}
		prefixes = append(prefixes, p.Masked())
	}
	if len(prefixes) == 2 && prefixes[0].Overlaps(prefixes[1]) {
		l.at("network.serviceCIDR", fmt.Sprintf("%s overlaps network.podCIDR %s", n.ServiceCIDR, n.PodCIDR),
			"Service virtual IPs and pod IPs must not collide, or traffic goes to the wrong place")
	}
	l.nodeCIDRMaskSize()
	if n.IPv6 {
		if l.r.Sysctls[IPv6ForwardingSysctl] != "1" {
			l.atKey("sysctls", IPv6ForwardingSysctl+" must be \"1\" when network.ipv6 is true",
				"without IPv6 forwarding the node drops IPv6 pod traffic it should route")
		}
		if !slices.Contains(l.r.Base.Packages, "iptables") {
			l.atKey("base.packages", "network.ipv6 is true but iptables (which carries ip6tables) is missing",
				"kube-proxy programs IPv6 Services with ip6tables")
		}
	}
}

// nodeCIDRMaskSize checks the size of each node's pod range against network.podCIDR.
func (l *linter) nodeCIDRMaskSize() {
	n := l.r.Network
	pod, err := netip.ParsePrefix(n.PodCIDR)
	if err != nil {
		return // reported at network.podCIDR
	}
	const path = "network.nodeCIDRMaskSize"
	bits, size := pod.Addr().BitLen(), n.NodeCIDRMaskSize
	family, hostMax := "IPv4", 30 // a /30 holds 2 pod addresses besides network and gateway
	if bits == 128 {
		family, hostMax = "IPv6", 126
	}
	why := "kube-controller-manager cuts network.podCIDR into one range of this size per node and flannel routes between them; a node that gets no range never runs a pod"
	switch {
	case size < 1 || size > bits:
		l.at(path, fmt.Sprintf("%d is not an %s prefix length: use %d", size, family, DefaultNodeCIDRMaskSize(n.PodCIDR)), why)
	case size <= pod.Bits():
		l.at(path, fmt.Sprintf("/%d is not longer than network.podCIDR %s: it leaves room for one node at most; use at least /%d (2 nodes), typically /%d",
			size, n.PodCIDR, pod.Bits()+1, max(DefaultNodeCIDRMaskSize(n.PodCIDR), pod.Bits()+1)), why)
	case size > hostMax:
		l.at(path, fmt.Sprintf("/%d leaves no addresses for pods on a node: use at most /%d, typically /%d", size, hostMax, DefaultNodeCIDRMaskSize(n.PodCIDR)),
			"each node's range holds its pods' addresses besides the network address and the bridge gateway")
	case bits == 128 && size-pod.Bits() > 16:
		l.at(path, fmt.Sprintf("/%d is more than 16 bits longer than network.podCIDR %s: use at most /%d", size, n.PodCIDR, pod.Bits()+16),
			"kube-controller-manager refuses IPv6 node ranges more than 16 bits longer than the cluster range, and no node gets a pod range")
	}
}

func (l *linter) podNetwork() {
	pn := l.r.PodNetwork
	if pn == nil {
		if len(l.r.Roles) > 1 {
			l.add(l.r.Positions.KeyOf("roles"), SeverityWarning, "podNetwork", fmt.Sprintf("%d roles but no podNetwork: pods on different nodes cannot reach each other", len(l.r.Roles)),
				"nothing routes between the nodes' pod ranges; add podNetwork: {name: flannel, version: \"0.28\"}")
		}
		return
	}
	if pn.Name != PodNetworkFlannel {
		l.at("podNetwork.name", fmt.Sprintf("unknown pod network %q: use flannel, the only one kubebake builds", pn.Name), "kubebake cannot build or run it")
	}
	if !slices.Contains(FlannelBackends, pn.Backend) {
		l.at("podNetwork.backend", fmt.Sprintf("unknown flannel backend %q: use host-gw (nodes on one network) or vxlan (nodes across routers)", pn.Backend),
			"kubebake's flanneld is built with these two backends only; another fails at startup")
	}
	l.version("podNetwork.version", pn.Version, "v0.28.10", "0.28")
	l.source("podNetwork.source", pn.Source, FlannelModule)
	l.providedMainModule("podNetwork.source.module", pn.Source, FlannelModule, FlanneldBinary)
}

func (l *linter) dns() {
	d := l.r.DNS
	if d == nil {
		return
	}
	if d.Name != DNSCoreDNS {
		l.at("dns.name", fmt.Sprintf("unknown DNS server %q: use coredns, the only one kubebake builds", d.Name), "kubebake cannot build or run it")
	}
	l.version("dns.version", d.Version, "v1.15.0", "1.15")
	l.source("dns.source", d.Source, CoreDNSModule)
	l.providedMainModule("dns.source.module", d.Source, CoreDNSModule, CoreDNSBinary)
}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

const whyImageName = "the name becomes the image kubebake.local/<name>, its lock entry image/<name> and the file <name>.tar"

// images checks the recipe's own container images: a name of their own, and an archive that
// holds one importable image, or a gomod main package at a pinned version.
func (l *linter) images() {
	seen := map[string]int{}
	for i, img := range l.r.Images {
		p := indexPath("images", i)
		if !l.r.bakesImages() {
			l.atKey(p, "docker through cri-dockerd imports no baked images: remove images, or leave runtime.criDockerd out (docker beside the kubelet on containerd's CRI)",
				"only nodes on containerd's CRI import the images baked into the node image at boot")
			continue
		}
		switch {
		case !dnsLabelRE.MatchString(img.Name):
			l.at(p+".name", fmt.Sprintf("%q is not a DNS label: use lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit (e.g. my-agent)", img.Name), whyImageName)
		case slices.Contains(BuiltinImages, img.Name):
			l.at(p+".name", fmt.Sprintf("%q is the name of an image kubebake bakes itself (%s): choose another", img.Name, strings.Join(BuiltinImages, ", ")), whyImageName)
		}
		if j, ok := seen[img.Name]; ok {
			l.at(p+".name", fmt.Sprintf("duplicate image %q (also item %d)", img.Name, j), whyImageName)
		}
		seen[img.Name] = i
		switch {
		case img.Archive != "" && img.Source != nil:
			l.at(p+".source", "give archive or source, not both: an archive is the image, a source builds one", "kubebake would not know which image to bake")
		case img.Archive == "" && img.Source == nil:
			l.atKey(p, "needs archive: (an image archive beside the recipe, e.g. images/"+img.Name+".tar) or source: (type gomod, module, package)", "there is no image to bake")
		case img.Archive != "":
			l.imageArchive(p, img)
		default:
			l.imageSource(p, img)
		}
	}
}

func (l *linter) imageArchive(p string, img ContainerImage) {
	if img.Version != "" {
		l.at(p+".version", "version is for source: images only; an archive's tag comes from the archive: remove it", "a setting that is ignored misleads the reader")
	}
	const why = "the lock reads the image from it and the node imports it at boot"
	file, err := ImageArchivePath(RecipeDir(l.r), img.Archive)
	if errors.Is(err, fs.ErrNotExist) {
		l.at(p+".archive", fmt.Sprintf("%v; save the image there: docker save -o %s IMAGE, or crane pull --format oci IMAGE %[2]s", err, img.Archive), why)
		return
	}
	if err != nil {
		l.at(p+".archive", err.Error(), why)
		return
	}
	if _, err := oci.InspectArchive(file); err != nil {
		l.at(p+".archive", err.Error(), why)
	}
}

func (l *linter) imageSource(p string, img ContainerImage) {
	s := *img.Source
	if s.Type != SourceGoMod {
		l.at(p+".source.type", fmt.Sprintf("images are built from type gomod only, not %q: build the main package with gomod, or save the image and name the file in archive:", s.Type), "kubebake cannot build an image from it")
		return
	}
	const why = "there is nothing to build"
	switch {
	case s.Module == "":
		l.at(p+".source.module", "gomod needs the module that holds the main package, e.g. example.com/agent", why)
	case !goModRE.MatchString(s.Module):
		l.at(p+".source.module", fmt.Sprintf("%q is not a Go module path", s.Module), "the module proxy cannot resolve it")
	}
	pkg := GoMainPackage(s.Module, s.Package)
	switch {
	case s.Package == "":
		l.at(p+".source.package", "needs the main package: relative to the module (./cmd/agent, or . for the module's root) or in full", why)
	case strings.Contains(s.Package, "..") || strings.HasPrefix(s.Package, "/"):
		l.at(p+".source.package", fmt.Sprintf("%q is not a package of module %s: write ./cmd/agent, or . for the module's root", s.Package, s.Module), why)
	case s.Module != "" && pkg != s.Module && !strings.HasPrefix(pkg, s.Module+"/"):
		l.at(p+".source.package", fmt.Sprintf("%q is not inside module %s: write it relative to the module (./cmd/agent)", s.Package, s.Module), "go build builds packages of the pinned module only")
	}
	if s.URL != "" {
		l.at(p+".source.url", "url is only for type url", "a setting that is ignored misleads the reader")
	}
	l.version(p+".version", img.Version, "v0.3.1", "0.3")
}

// providedMainModule refuses a gomod module other than the one kubebake's main for binary
// is written against.
func (l *linter) providedMainModule(path string, s Source, module, binary string) {
	if s.Type == SourceGoMod && s.Module != "" && s.Module != module {
		l.at(path, fmt.Sprintf("kubebake builds %s from its own main written against %s: use that module", binary, module),
			"the main imports that module's packages; another module does not build")
	}
}

func (l *linter) sysctls() {
	s := l.r.Sysctls
	for _, k := range sortedKeys(RequiredSysctls) {
		v, ok := s[k]
		switch {
		case !ok:
			l.atKey("sysctls", k+" is not set: add "+strconv.Quote(k)+": \"1\"", RequiredSysctls[k])
		case v != "1":
			l.at(keyPath("sysctls", k), fmt.Sprintf("%s is %q: set it to \"1\"", k, v), RequiredSysctls[k])
		}
	}
	rules := l.r.NodeSysctlRules()
	for _, k := range sortedKeys(rules) {
		if v, ok := s[k]; ok && v != rules[k].Value {
			l.at(keyPath("sysctls", k), fmt.Sprintf("%s is %q: every node has %q; remove it from the recipe%s", k, v, rules[k].Value, relaxHint(k)), rules[k].Why)
		}
	}
	for _, k := range sortedKeys(s) {
		if err := CheckSysctlKey(k); err != nil {
			l.at(keyPath("sysctls", k), err.Error(), "systemd-sysctl skips it at boot")
		} else if err := CheckSysctlValue(s[k]); err != nil {
			l.at(keyPath("sysctls", k), err.Error(),
				"each sysctl is one \"key = value\" line of /usr/lib/sysctl.d: an empty value is skipped at boot, a line break sets a sysctl nobody reviewed, and the node layer refuses both")
		}
	}
}

func (l *linter) modules() {
	for i, m := range l.r.Modules {
		if err := CheckModuleName(m); err != nil {
			l.at(indexPath("modules", i), err.Error(), "systemd-modules-load fails on it at boot")
		}
	}
	l.duplicates("modules", l.r.Modules, "module")
	for _, m := range sortedKeys(RequiredModules) {
		if !slices.Contains(l.r.Modules, m) {
			l.atKey("modules", "missing "+m, RequiredModules[m])
		}
	}
}

func (l *linter) roles() {
	setup := SetupOf(l.r.Runtime)
	known := KnownUnits(setup)
	catalog := Units(setup, true)
	defs := map[string]UnitDef{}
	for _, d := range catalog {
		defs[d.Name] = d
	}
	if len(l.r.Roles) == 0 {
		l.atKey("roles", "is empty: list roles or leave the section out for master and minion", "with no role no unit ever starts")
	}
	comps := map[string]bool{}
	for _, c := range l.r.Kubernetes.Components {
		comps[c.Name] = true
	}
	// Roles from SetDefaults: findings go to the components the user wrote instead.
	builtinRoles := l.r.Positions != nil && !l.r.Positions.Has("roles")
	reported := map[string]bool{}
	const whyBinary = "the unit fails to start: its binary is not in the image"
	// missing reports a component a unit of a role runs (via: the needed unit that runs it,
	// "" for the unit itself) that the recipe does not install, once per role.
	missing := func(role Role, unitPath, unit, c, via string, inRole map[string]bool) {
		if comps[c] || inRole[c] {
			return
		}
		inRole[c] = true
		runs := unit
		if via != "" {
			runs = fmt.Sprintf("%s (needed by %s)", via, unit)
		}
		switch {
		case builtinRoles:
			// The user never wrote the roles: point at what they wrote, once.
			if !reported[c] {
				l.atKey("kubernetes.components", fmt.Sprintf("missing %s, which %s of the built-in %s role runs", c, runs, role.Name), whyBinary)
			}
			reported[c] = true
		case via != "":
			l.at(unitPath, fmt.Sprintf("%s needs %s, which runs component %s, which kubernetes.components lacks", unit, via, c), whyBinary)
		default:
			l.at(unitPath, fmt.Sprintf("%s needs component %s, which kubernetes.components lacks", unit, c), whyBinary)
		}
	}
	seen := map[string]int{}
	for i, role := range l.r.Roles {
		p := indexPath("roles", i)
		if err := CheckRoleName(role.Name); err != nil {
			l.at(p+".name", err.Error(), "the role becomes the marker file "+MarkerPath("<role>")+" and the node label node-role.kubebake.dev/<role>")
		}
		if j, ok := seen[role.Name]; ok {
			l.at(p+".name", fmt.Sprintf("duplicate role %q (also item %d)", role.Name, j), "two roles with one marker: the second silently replaces the first")
		}
		seen[role.Name] = i
		if len(role.Units) == 0 {
			l.atKey(p+".units", "is empty", "a role with no units selects nothing: the node boots and does nothing")
		}
		var valid []int // indexes of the units the catalog knows
		for j, u := range role.Units {
			up := indexPath(p+".units", j)
			grammarErr := CheckUnitName(u)
			switch {
			case slices.Contains(known, u):
				valid = append(valid, j)
				if defs[u].PodNetwork && l.r.PodNetwork == nil {
					l.at(up, fmt.Sprintf("%s is the pod network agent, but the recipe has no podNetwork section", u),
						"flanneld is only built and installed for a podNetwork, so the unit is not in the image")
				}
			case len(SetupsOfUnit(u)) > 0:
				l.at(up, fmt.Sprintf("%s belongs to runtime %s, but this recipe's runtime is %s: use %s", u, strings.Join(SetupsOfUnit(u), " or "), DescribeSetup(setup), fmtList(RuntimeUnits(setup))),
					"the unit is not in the image, so the role never comes up")
			case grammarErr != nil:
				l.at(up, fmt.Sprintf("%v: %s", grammarErr, suggestName(u, known)), "kubebake ships no such unit, so the role never comes up")
			default:
				l.at(up, fmt.Sprintf("unknown unit %q: %s", u, suggestName(u, known)), "kubebake ships no such unit, so the role never comes up")
			}
		}
		// The components each unit runs itself, then those of the units it needs on its node
		// (the layer starts those wherever the unit may run).
		inRole := map[string]bool{}
		for _, j := range valid {
			u := role.Units[j]
			for _, c := range kubernetesBins(defs[u]) {
				missing(role, indexPath(p+".units", j), u, c, "", inRole)
			}
		}
		for _, j := range valid {
			u := role.Units[j]
			for _, need := range UnitNeedsClosure(catalog, u) {
				for _, c := range kubernetesBins(defs[need]) {
					missing(role, indexPath(p+".units", j), u, c, need, inRole)
				}
			}
		}
		l.duplicates(p+".units", role.Units, "unit")
	}
}

// kubernetesBins are the Kubernetes components among a unit's binaries: lint checks them
// against kubernetes.components (other binaries come with their own sections).
func kubernetesBins(d UnitDef) []string {
	var out []string
	for _, b := range d.Bins {
		if slices.Contains(KubernetesComponents, b) {
			out = append(out, b)
		}
	}
	return out
}

func (l *linter) image() {
	im := l.r.Image
	if size, err := ParseSize(im.Size); err != nil {
		l.at("image.size", err.Error(), "the builder cannot size the disk")
	} else if size < MinImageSize {
		l.at("image.size", fmt.Sprintf("%s is too small: use at least 2GiB", im.Size), "the root filesystem, Kubernetes binaries and images do not fit; kubelet evicts pods on a full disk")
	}
	if len(im.Formats) == 0 {
		l.atKey("image.formats", "is empty: use [raw, qcow2]", "the build would produce no image")
	}
	for i, f := range im.Formats {
		if !slices.Contains(ImageFormats, f) {
			l.at(indexPath("image.formats", i), fmt.Sprintf("unknown image format %q: use %s", f, fmtList(ImageFormats)), "the builder cannot write it")
		}
	}
	l.duplicates("image.formats", im.Formats, "format")
	if !slices.Contains(Bootloaders, im.Bootloader) {
		l.at("image.bootloader", fmt.Sprintf("unknown bootloader %q: use systemd-boot or grub", im.Bootloader), "the image does not boot")
	}
}

func (l *linter) mirrors() {
	seen := map[string]int{}
	for i, m := range l.r.Mirrors {
		p := indexPath("mirrors", i)
		for _, f := range []struct{ name, v string }{{"prefix", m.Prefix}, {"replacement", m.Replacement}} {
			if u, err := url.Parse(f.v); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") {
				l.at(p+"."+f.name, fmt.Sprintf("%q is not an http(s) or file URL", redact.URL(f.v)), "downloads would go to a wrong place")
			}
		}
		if j, ok := seen[m.Prefix]; ok {
			l.at(p+".prefix", fmt.Sprintf("duplicate prefix (also item %d)", j), "only the first rewrite would ever apply")
		}
		seen[m.Prefix] = i
	}
}

// suggestName proposes a close known name, or lists them.
func suggestName(got string, known []string) string {
	s := suggest(got, known)
	return strings.Replace(s, "known fields here: ", "known: ", 1)
}

// MinImageSize is the smallest disk lint accepts.
const MinImageSize = 2 << 30

// ParseSize reads a disk size: a number of bytes, or with a binary suffix K/KiB, M/MiB,
// G/GiB, T/TiB (powers of 1024, as qemu-img reads them). It must be a whole number of MiB,
// because partitions are aligned to 1 MiB.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToUpper(strings.TrimSpace(t[len(num):]))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q is not a size such as 4GiB", s)
	}
	shift := map[string]uint{"": 0, "B": 0, "K": 10, "KIB": 10, "M": 20, "MIB": 20, "G": 30, "GIB": 30, "T": 40, "TIB": 40}
	sh, ok := shift[unit]
	if !ok {
		return 0, fmt.Errorf("size %q has an unknown unit: use MiB, GiB or TiB", s)
	}
	if n > (1<<62)>>sh {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	size := n << sh
	if size%(1<<20) != 0 {
		return 0, fmt.Errorf("size %q is not a whole number of MiB", s)
	}
	return size, nil
}

// relaxHint names the relaxation that frees a node sysctl, for lint's message.
func relaxHint(key string) string {
	for _, name := range sortedKeys(Relaxations) {
		if slices.Contains(Relaxations[name].Sysctls, key) {
			return fmt.Sprintf(", or relax it (security.relax: [%s])", name)
		}
	}
	return ""
}

// security: every relaxation is known and listed once, and each is a warning that says what
// the image gives up.
func (l *linter) security() {
	if l.r.Security == nil {
		return
	}
	seen := map[string]bool{}
	for i, name := range l.r.Security.Relax {
		path := fmt.Sprintf("security.relax[%d]", i)
		rel, ok := Relaxations[name]
		switch {
		case !ok:
			l.at(path, fmt.Sprintf("unknown relaxation %q; known: %s", name, strings.Join(sortedKeys(Relaxations), ", ")), "each name turns off one secure default of the image, named in docs/security.md")
		case seen[name]:
			l.at(path, fmt.Sprintf("%q is listed twice", name), "each relaxation is listed once")
		default:
			l.warn(path, fmt.Sprintf("%s is relaxed, so this default no longer holds: %s", name, rel.Default), "what it gives up: "+rel.GivesUp)
		}
		seen[name] = true
	}
}

// archiveURL parses a Debian archive's URL: http(s) with a host, or file.
func archiveURL(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") || (u.Scheme != "file" && u.Host == "") {
		return nil, false
	}
	return u, true
}
