package roles

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/template"

	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/recipes"
)

//go:embed templates
var templateFS embed.FS

// Well-known node paths (node-contract.md).
const (
	ScriptDir     = "/usr/lib/kubebake"
	ReleasePath   = "/etc/kubebake/release"
	SysctlPath    = "/usr/lib/sysctl.d/90-kubebake.conf"
	ModulesPath   = "/usr/lib/modules-load.d/kubebake.conf"
	CNIConfigPath = "/etc/cni/net.d/10-kubebake.conflist"
	CNIBinDir     = "/opt/cni/bin"
	DNSDomain     = "cluster.local"
	// ImagesDir holds the baked container images (OCI archives) kubebake-images.service
	// imports; AddonsDir the manifests kubebake-master-bootstrap applies.
	ImagesDir = ScriptDir + "/images"
	AddonsDir = ScriptDir + "/addons"
	// FlannelConfigPath is flannel's network config (the pod range and the backend).
	FlannelConfigPath = "/etc/kube-flannel/net-conf.json"
	// AuditPolicyPath is the API server's audit policy; AuditLogPath its log (rotated by the
	// API server); EncryptionConfigPath seals Secrets in etcd with a key the master makes at
	// its first boot (kubebake-master-pki).
	AuditPolicyPath      = "/etc/kubernetes/audit-policy.yaml"
	AuditLogPath         = "/var/log/kubernetes/audit/audit.log"
	EncryptionConfigPath = "/etc/kubernetes/pki/encryption-config.yaml"
	// AuthenticationConfigPath limits anonymous requests to the API server to the health
	// paths and cluster-info (docs/security.md).
	AuthenticationConfigPath = "/etc/kubernetes/authentication-config.yaml"
	// AdmissionConfigPath sets the PodSecurity admission defaults.
	AdmissionConfigPath = "/etc/kubernetes/admission-config.yaml"
	// KubeletConfigPath and KubeProxyConfigPath are the node agents' configurations.
	KubeletConfigPath   = "/etc/kubernetes/kubelet.yaml"
	KubeProxyConfigPath = "/etc/kubernetes/kube-proxy.yaml"
	// ResolvedConfigPath turns off systemd-resolved's LLMNR and mDNS responders, which
	// listen on every address.
	ResolvedConfigPath = "/usr/lib/systemd/resolved.conf.d/90-kubebake.conf"
)

// TLSCipherSuites are the TLS 1.2 suites the API server and the kubelet accept (TLS 1.3's
// are not configurable, and all strong): forward secret, AEAD only; no CBC, no SHA-1 MAC.
var TLSCipherSuites = []string{
	"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}

// Render computes the node layer of a recipe pinned by a lock. It does no I/O: artifacts are
// named, not read (WriteTar reads them). A nil lock renders for display only: artifacts have
// no digest, versions are the recipe's, and WriteTar refuses the result.
func Render(r *recipes.Recipe, l *recipes.Lock) (*Layer, error) {
	if r == nil {
		return nil, fmt.Errorf("roles.Render: no recipe")
	}
	if l != nil && l.Recipe != "" && r.Name != "" && l.Recipe != r.Name {
		return nil, fmt.Errorf("the lock is for recipe %q, not %q; run \"kubebake lock\" for this recipe", l.Recipe, r.Name)
	}
	plan, err := planUnits(r)
	if err != nil {
		return nil, err
	}
	data, err := newTemplateData(r, l)
	if err != nil {
		return nil, err
	}
	arts := artifactIndex(l)
	b := newBuilder()

	// Binaries.
	bins := map[string]bool{}
	addBin := func(path, artifact, field string) error {
		f := File{Path: path, Type: TypeFile, Mode: 0o755, Artifact: artifact}
		if l != nil {
			a, ok := arts[artifact]
			if !ok {
				return fieldErr(r, field, fmt.Sprintf("the lock has no artifact %q; run \"kubebake lock\" to pin it", artifact))
			}
			f.SHA256, f.Size = a.SHA256, a.Size
		}
		b.add(f)
		bins[artifact] = true
		return nil
	}
	for i, c := range r.Kubernetes.Components {
		if !isKnown(c.Name, recipes.KubernetesComponents) {
			return nil, fieldErr(r, fmt.Sprintf("kubernetes.components[%d].name", i), fmt.Sprintf("unknown component %q; known: %s", c.Name, strings.Join(recipes.KubernetesComponents, ", ")))
		}
		if err := addBin("/usr/bin/"+c.Name, c.Name, fmt.Sprintf("kubernetes.components[%d]", i)); err != nil {
			return nil, err
		}
	}
	if r.Etcd.Version != "" {
		if err := addBin("/usr/bin/etcd", "etcd", "etcd"); err != nil {
			return nil, err
		}
		if _, ok := arts["etcdctl"]; ok {
			if err := addBin("/usr/bin/etcdctl", "etcdctl", "etcd"); err != nil {
				return nil, err
			}
		}
	}
	for i, p := range r.CNI.Plugins {
		if _, ok := recipes.CNIPlugins[p]; !ok {
			return nil, fieldErr(r, fmt.Sprintf("cni.plugins[%d]", i), fmt.Sprintf("unknown CNI plugin %q", p))
		}
		if err := addBin(CNIBinDir+"/"+p, "cni/"+p, fmt.Sprintf("cni.plugins[%d]", i)); err != nil {
			return nil, err
		}
	}
	for _, p := range recipes.RequiredCNIPlugins {
		if !bins["cni/"+p] {
			return nil, fieldErr(r, "cni.plugins", fmt.Sprintf("lacks %s: the kubelet's loopback and the pod network %s need %s", p, CNIConfigPath, strings.Join(recipes.RequiredCNIPlugins, ", ")))
		}
	}
	if data.CRI == recipes.CRIServerDockerd {
		if err := addBin("/usr/bin/cri-dockerd", "cri-dockerd", "runtime.criDockerd"); err != nil {
			return nil, err
		}
	}
	if r.PodNetwork != nil {
		if err := addBin("/usr/bin/flanneld", "flanneld", "podNetwork"); err != nil {
			return nil, err
		}
	}
	// Baked container images, each an OCI archive the lock pins; the recipe's own among them.
	if l != nil && data.Images {
		for i, img := range r.Images {
			if a, ok := arts[recipes.ImageArtifact(img.Name)]; !ok || a.Kind != recipes.KindImage {
				return nil, fieldErr(r, fmt.Sprintf("images[%d]", i), fmt.Sprintf("the lock has no image %s; run \"kubebake lock\" to pin it", recipes.ImageArtifact(img.Name)))
			}
		}
	}
	for _, img := range data.ImageArchives {
		f := File{Path: ImagesDir + "/" + img.File, Type: TypeFile, Mode: 0o644, Artifact: img.artifact}
		if l != nil {
			f.SHA256, f.Size = img.sha256, img.size
		}
		b.add(f)
	}
	ign := File{Path: IgnitionPath, Type: TypeFile, Mode: 0o755, Artifact: IgnitionArtifact}
	if a, ok := arts[IgnitionArtifact]; ok {
		ign.SHA256, ign.Size = a.SHA256, a.Size
	}
	b.add(ign)

	// Every unit that may run needs its binaries.
	for _, u := range plan.units {
		if len(u.Roles) == 0 {
			continue
		}
		for _, bin := range plan.defs[u.Name].Bins {
			if !bins[bin] {
				field := "kubernetes.components"
				switch bin {
				case "etcd":
					field = "etcd"
				case "cri-dockerd":
					field = "runtime.name"
				case "flanneld":
					field = "podNetwork"
				}
				return nil, fieldErr(r, field, fmt.Sprintf("unit %s (roles %s) runs %s, which the recipe does not install", u.Name, strings.Join(u.Roles, ", "), bin))
			}
		}
	}

	// Units, role drop-ins and enablement links.
	for _, u := range plan.units {
		d := plan.defs[u.Name]
		if !d.Foreign {
			content, err := data.execute("units/" + u.Name)
			if err != nil {
				return nil, err
			}
			b.file(UnitDir+"/"+u.Name, 0o644, content)
		}
		if len(u.Roles) > 0 {
			b.file(DropInPath(u.Name), 0o644, roleDropIn(u))
		}
		if Sandbox(u.Name) != nil && !r.Relaxed(recipes.RelaxSandbox) {
			b.file(SandboxDropInPath(u.Name), 0o644, sandboxDropIn(u.Name))
			if u.Name == "etcd.service" {
				b.file(EtcdSysusersPath, 0o644, []byte(etcdSysusers))
			}
		}
		if !u.Enabled {
			continue
		}
		wantedBy := RolesTarget
		if len(u.Roles) == 0 {
			wantedBy = "multi-user.target"
		}
		b.symlink(EnableDir+"/"+wantedBy+".wants/"+u.Name, UnitDir+"/"+u.Name)
	}

	// Scripts and their files. Only what the planned units use.
	has := func(name string) bool { u, ok := plan.unit(name); return ok && len(u.Roles) > 0 }
	master := has(MasterPKIUnit) || has("kubebake-master-bootstrap.service")
	minion := has("kubebake-minion-join.service")
	if err := data.addTemplate(b, "scripts/growroot", ScriptDir+"/growroot", 0o755); err != nil {
		return nil, err
	}
	if master || minion || has(NodeEnvUnit) {
		if err := data.addTemplate(b, "scripts/lib.sh", ScriptDir+"/lib.sh", 0o644); err != nil {
			return nil, err
		}
	}
	if master {
		for _, s := range []string{"master-pki", "master-bootstrap", "csr-approver"} {
			if err := data.addTemplate(b, "scripts/"+s, ScriptDir+"/"+s, 0o755); err != nil {
				return nil, err
			}
		}
		if err := data.addTemplate(b, "config/master-rbac.yaml", ScriptDir+"/master-rbac.yaml", 0o644); err != nil {
			return nil, err
		}
		if err := data.addTemplate(b, "config/audit-policy.yaml", AuditPolicyPath, 0o644); err != nil {
			return nil, err
		}
		b.file(AuthenticationConfigPath, 0o644, []byte(authenticationConfig))
		b.file(AdmissionConfigPath, 0o644, admissionConfig(r))
	}
	if minion {
		for _, s := range []string{"minion-join", "join-cleanup"} {
			if err := data.addTemplate(b, "scripts/"+s, ScriptDir+"/"+s, 0o755); err != nil {
				return nil, err
			}
		}
	}
	// Scripts of the units the layer holds (a unit file without its script would fail).
	for unit, script := range map[string]string{
		NodeEnvUnit: "node-env", FlannelUnit: "cni-config", ImagesUnit: "import-images",
		recipes.DockerImagesUnit: "docker-images",
	} {
		if _, ok := plan.unit(unit); ok {
			if err := data.addTemplate(b, "scripts/"+script, ScriptDir+"/"+script, 0o755); err != nil {
				return nil, err
			}
		}
	}
	if master && data.DNSImage != "" {
		if err := data.addTemplate(b, "addons/coredns.yaml", AddonsDir+"/coredns.yaml", 0o644); err != nil {
			return nil, err
		}
	}

	// Runtime, kubelet, kube-proxy and pod network configuration.
	if data.CRI == recipes.CRIServerContainerd {
		if err := data.addTemplate(b, "config/containerd.toml", "/etc/containerd/config.toml", 0o644); err != nil {
			return nil, err
		}
	}
	if data.Runtime == recipes.RuntimeDocker {
		b.file("/etc/docker/daemon.json", 0o644, dockerDaemonJSON(data))
	}
	if bins["kubelet"] {
		if err := data.addTemplate(b, "config/kubelet.yaml", KubeletConfigPath, 0o600); err != nil {
			return nil, err
		}
		b.dir("/etc/kubernetes/manifests", 0o755)
	}
	if bins["kube-proxy"] {
		if err := data.addTemplate(b, "config/kube-proxy.yaml", KubeProxyConfigPath, 0o600); err != nil {
			return nil, err
		}
	}
	if r.PodNetwork != nil {
		// The node's CNI config names its own pod range, known only once flannel has its
		// lease: kubebake-cni-config writes it at boot. A baked config would hand every node
		// the whole pod CIDR.
		b.file(FlannelConfigPath, 0o644, flannelConfig(data))
	} else {
		b.file(CNIConfigPath, 0o644, cniConfig(data))
	}

	// Kernel settings, role marker directory, release file.
	sysctl, err := sysctlFile(r)
	if err != nil {
		return nil, err
	}
	b.file(SysctlPath, 0o644, sysctl)
	modules, err := modulesFile(r)
	if err != nil {
		return nil, err
	}
	b.file(ModulesPath, 0o644, modules)
	b.file(CloudConfigPath, 0o644, []byte(cloudConfig))
	b.file(SSHDConfigPath, 0o644, []byte(sshdConfig))
	b.file(ResolvedConfigPath, 0o644, []byte(resolvedConfig))
	b.file(FallbackNetworkPath, 0o644, []byte(fallbackNetwork))
	for _, link := range fallbackNetworkLinks {
		b.symlink(EnableDir+"/"+link[0], UnitDir+"/"+link[1])
	}
	b.dir("/etc/sysconfig", 0o755)
	b.dir("/etc/kubebake", 0o755)
	release, err := releaseFile(r, l, data)
	if err != nil {
		return nil, err
	}
	b.file(ReleasePath, 0o644, release)

	return b.build()
}

// CloudConfigPath holds the image's cloud-init settings (system config, not user-data).
const CloudConfigPath = "/etc/cloud/cloud.cfg.d/90-kubebake.cfg"

// cloudConfig: node images carry no locales package, so cloud-init's default en_US.UTF-8
// makes its locale module (and cloud-config.service) fail; C.UTF-8 is built into glibc and
// cloud-init's Debian code knows it needs no locale-gen.
const cloudConfig = `# kubebake node image: cloud-init system settings.
locale: C.UTF-8
`

// SSHDConfigPath hardens sshd: keys only. sshd takes the first value it reads and Debian's
// sshd_config includes sshd_config.d/*.conf first, in name order, so "01-" comes before
// cloud-init's 50-cloud-init.conf. Root may log in with a key (user-data installs root's by
// default); never with a password.
const SSHDConfigPath = "/etc/ssh/sshd_config.d/01-kubebake.conf"

const sshdConfig = `# kubebake node image: SSH with keys only.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PermitEmptyPasswords no
`

const resolvedConfig = `# kubebake node image: systemd-resolved answers no LLMNR or multicast DNS queries (a
# responder on every address, for names no cluster node needs).
[Resolve]
LLMNR=no
MulticastDNS=no
`

// authenticationConfig: anonymous requests reach only the health checks and cluster-info
// (a joining node reads it before it trusts the master, and checks it by the join token's
// signature); /version, /api and the rest ask for credentials. Everything else about
// authentication stays in the API server's flags.
const authenticationConfig = `# kubebake node layer: the API server's anonymous access (--authentication-config).
apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /livez
  - path: /readyz
  - path: /healthz
  - path: /api/v1/namespaces/kube-public/configmaps/cluster-info
`

// admissionConfig: a namespace without its own pod-security labels enforces the baseline
// Pod Security Standard (no privileged containers, host namespaces, host paths or added
// capabilities); restricted violations are recorded in the audit log. kube-system, where
// cluster add-ons run, is exempt; a namespace opts out with its own
// pod-security.kubernetes.io/enforce label. A recipe that relaxes pod-security-baseline
// enforces privileged (nothing) instead; the audit and warnings stay.
func admissionConfig(r *recipes.Recipe) []byte {
	enforce := "baseline"
	if r.Relaxed(recipes.RelaxPodSecurity) {
		enforce = "privileged"
	}
	return []byte(strings.Replace(admissionConfigTemplate, "enforce: baseline", "enforce: "+enforce, 1))
}

const admissionConfigTemplate = `# kubebake node layer: admission plugin settings (--admission-control-config-file).
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: baseline
      enforce-version: latest
      audit: restricted
      audit-version: latest
      warn: baseline
      warn-version: latest
    exemptions:
      namespaces: [kube-system]
`

// FallbackNetworkPath configures every ethernet NIC by DHCP with systemd-networkd when nothing
// else does: a boot configured by Ignition alone has no cloud-init datasource, so no netplan
// config, and without an address kubeadm, SSH and the API server have nothing to bind to.
// cloud-init's netplan files (/run/systemd/network/10-netplan-*) sort first and win.
const FallbackNetworkPath = "/usr/lib/systemd/network/90-kubebake-dhcp.network"

const fallbackNetwork = `# kubebake node image: DHCP on every ethernet NIC unless cloud-init's netplan config
# (10-netplan-*, sorted first) configured it.
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=yes
`

// fallbackNetworkLinks enable systemd-networkd (and wait-online, which the Ignition applier
// orders after, so that it can reach EC2's IMDS): {link under EnableDir, unit}.
var fallbackNetworkLinks = [][2]string{
	{"multi-user.target.wants/systemd-networkd.service", "systemd-networkd.service"},
	{"sockets.target.wants/systemd-networkd.socket", "systemd-networkd.socket"},
	{"network-online.target.wants/systemd-networkd-wait-online.service", "systemd-networkd-wait-online.service"},
}

// roleDropIn is /usr/lib/systemd/system/<unit>.d/10-role.conf: the unit runs only where a
// marker of one of its roles exists, and only after every marker writer has run.
func roleDropIn(u Unit) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# kubebake node layer: %s runs only on nodes with role %s, after %s\n", u.Name, strings.Join(u.Roles, " or "), RolesTarget)
	b.WriteString("# (the role markers are written by cloud-init or Ignition before that target).\n")
	b.WriteString("[Unit]\n")
	for _, role := range u.Roles {
		if len(u.Roles) == 1 {
			fmt.Fprintf(&b, "ConditionPathExists=%s\n", recipes.MarkerPath(role))
		} else {
			fmt.Fprintf(&b, "ConditionPathExists=|%s\n", recipes.MarkerPath(role))
		}
	}
	fmt.Fprintf(&b, "After=%s\n", RolesTarget)
	return []byte(b.String())
}

// templateData is what the embedded templates see.
type templateData struct {
	Recipe            string
	KubernetesVersion string
	// JoinTokenGroup and JoinTokenNodeLabel: recipes' names for join tokens.
	JoinTokenGroup, JoinTokenNodeLabel string
	Runtime                            string
	CRI                                string // recipes.CRIOf: the kubelet's CRI server
	RuntimeUnit                        string
	CRISocket                          string
	CgroupDriver                       string
	SystemdCgroup                      bool
	SandboxImage                       string
	Snapshotter                        string
	StorageDriver                      string
	PodCIDR                            string // as in the recipe: one prefix, or two (dual stack) joined by ","
	ServiceCIDR                        string
	PodPrefixes                        []netip.Prefix
	ClusterDNS                         []string
	DNSDomain                          string
	// NodeCIDRMaskFlags are kube-controller-manager's per-node pod range sizes.
	NodeCIDRMaskFlags []string
	FlannelBackend    string
	// Images says the layer bakes container images (kubebake-images.service imports them
	// before the kubelet starts); DNSImage is the baked CoreDNS image, "" without one.
	Images       bool
	DNSImage     string
	DNSServiceIP string
	// ImageArchives are the lock's image archives under ImagesDir, by artifact name, with the
	// name each imports its image as: what kubebake-import-images imports and checks.
	ImageArchives []ImageArchive
	// TLSCipherSuites: the API server's and the kubelet's TLS 1.2 suites.
	TLSCipherSuites []string
	// EtcdSysusers declares etcd's user (EtcdSysusersPath).
	EtcdSysusers string
	// Profiling turns /debug/pprof on in the control plane (security.relax: profiling).
	Profiling bool
}

// ImageArchive is a container image archive of the lock, installed under ImagesDir.
type ImageArchive struct {
	File string // image/pause -> pause.tar
	Ref  string // the name the archive gives its image: kubebake.local/pause:1.35.0

	artifact, sha256 string
	size             int64
}

var imageRefRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@-]*$`)

func newTemplateData(r *recipes.Recipe, l *recipes.Lock) (*templateData, error) {
	d := &templateData{Recipe: r.Name, Runtime: r.Runtime.Name, DNSDomain: DNSDomain,
		JoinTokenGroup: recipes.JoinTokenGroup, JoinTokenNodeLabel: recipes.JoinTokenNodeLabel,
		TLSCipherSuites: TLSCipherSuites, EtcdSysusers: EtcdSysusersPath,
		Profiling: r.Relaxed(recipes.RelaxProfiling)}
	if d.Runtime == "" {
		d.Runtime = recipes.RuntimeContainerd
	}
	d.CRI = recipes.CRIOf(r.Runtime)
	d.RuntimeUnit = recipes.CRIUnit(recipes.SetupOf(r.Runtime))

	d.KubernetesVersion = r.Kubernetes.Version
	if l != nil {
		for _, c := range []string{"kubeadm", "kubelet", "kube-apiserver"} {
			if a, ok := artifactIndex(l)[c]; ok {
				d.KubernetesVersion = a.Version
				break
			}
		}
	}
	if d.KubernetesVersion == "" {
		return nil, fieldErr(r, "kubernetes.version", "empty")
	}
	if !strings.HasPrefix(d.KubernetesVersion, "v") {
		d.KubernetesVersion = "v" + d.KubernetesVersion
	}
	if !regexp.MustCompile(`^v[0-9]+\.[0-9]+(\.[0-9]+)?([-+][0-9A-Za-z.-]+)?$`).MatchString(d.KubernetesVersion) {
		return nil, fieldErr(r, "kubernetes.version", fmt.Sprintf("%q is not a Kubernetes version", d.KubernetesVersion))
	}

	d.CgroupDriver = r.Runtime.CgroupDriver
	if d.CgroupDriver == "" {
		d.CgroupDriver = "systemd"
	}
	switch d.CgroupDriver {
	case "systemd":
		d.SystemdCgroup = true
	case "cgroupfs":
	default:
		return nil, fieldErr(r, "runtime.cgroupDriver", fmt.Sprintf("unknown cgroup driver %q; use systemd (or cgroupfs)", d.CgroupDriver))
	}

	want := recipes.StorageDriverFor(d.Runtime)
	d.StorageDriver = r.Storage.Driver
	if d.StorageDriver == "" {
		d.StorageDriver = want
	}
	if d.StorageDriver != want {
		return nil, fieldErr(r, "storage.driver", fmt.Sprintf("%q with runtime %s: only %s is accepted (devicemapper and loopback storage corrupt nodes)", d.StorageDriver, d.Runtime, want))
	}
	// containerd's snapshotter: overlayfs, also under docker beside it (docker's own
	// storage driver, overlay2, is StorageDriver).
	d.Snapshotter = recipes.StorageDriverFor(recipes.RuntimeContainerd)

	switch d.CRI {
	case recipes.CRIServerDockerd:
		d.CRISocket = "unix:///run/cri-dockerd.sock"
	default:
		d.CRISocket = "unix:///run/containerd/containerd.sock"
	}
	d.SandboxImage = r.Runtime.SandboxImage
	if d.SandboxImage == "" {
		// The pause image baked into the node (nodes pull nothing); a display render without
		// a lock names the image by its kind.
		d.SandboxImage = "kubebake.local/pause"
		if a, ok := artifactIndex(l)["image/pause"]; ok {
			d.SandboxImage = a.Ref
		}
	}
	if !imageRefRE.MatchString(d.SandboxImage) {
		return nil, fieldErr(r, "runtime.sandboxImage", fmt.Sprintf("%q is not an image reference", d.SandboxImage))
	}

	pods, err := parseCIDRs(r, "network.podCIDR", r.Network.PodCIDR, recipes.DefaultPodCIDR)
	if err != nil {
		return nil, err
	}
	services, err := parseCIDRs(r, "network.serviceCIDR", r.Network.ServiceCIDR, recipes.DefaultServiceCIDR)
	if err != nil {
		return nil, err
	}
	d.PodPrefixes = pods
	d.PodCIDR = joinPrefixes(pods)
	d.ServiceCIDR = joinPrefixes(services)
	// The cluster DNS service is the 10th address of the (first) service range, as kubeadm.
	dns := services[0].Addr()
	for range 10 {
		dns = dns.Next()
	}
	if !services[0].Contains(dns) {
		return nil, fieldErr(r, "network.serviceCIDR", fmt.Sprintf("%s is too small for a DNS service address", services[0]))
	}
	d.ClusterDNS = []string{dns.String()}
	d.DNSServiceIP = dns.String()

	d.NodeCIDRMaskFlags = nodeCIDRMaskFlags(pods, r.Network.NodeCIDRMaskSize)
	if r.PodNetwork != nil {
		d.FlannelBackend = r.PodNetwork.Backend
		if d.FlannelBackend == "" {
			d.FlannelBackend = recipes.DefaultFlannelBackend
		}
	}
	for _, a := range artifactIndex(l) {
		if a.Kind != recipes.KindImage {
			continue
		}
		name := strings.TrimPrefix(a.Name, "image/")
		if !imageRefRE.MatchString(a.Ref) {
			return nil, fmt.Errorf("lock entry %s: %q is not an image reference; run \"kubebake lock\"", a.Name, a.Ref)
		}
		d.ImageArchives = append(d.ImageArchives, ImageArchive{File: name + ".tar", Ref: a.Ref, artifact: a.Name, sha256: a.SHA256, size: a.Size})
		if name == "coredns" {
			d.DNSImage = a.Ref
		}
	}
	sort.Slice(d.ImageArchives, func(i, j int) bool { return d.ImageArchives[i].artifact < d.ImageArchives[j].artifact })
	d.Images = d.CRI == recipes.CRIServerContainerd
	return d, nil
}

// nodeCIDRMaskFlags sizes each node's pod range: one flag for a single family, one per
// family for dual stack (kube-controller-manager refuses the plain flag there). The default is
// kubeadm's: /24 for IPv4, /64 for IPv6.
func nodeCIDRMaskFlags(pods []netip.Prefix, size int) []string {
	def := func(p netip.Prefix) int {
		if size != 0 && (len(pods) == 1 || p.Addr().Is4() == (size <= 32)) {
			return size
		}
		if p.Addr().Is4() {
			return 24
		}
		return 64
	}
	if len(pods) == 1 {
		return []string{fmt.Sprintf("--node-cidr-mask-size=%d", def(pods[0]))}
	}
	var flags []string
	for _, p := range pods {
		fam := "ipv6"
		if p.Addr().Is4() {
			fam = "ipv4"
		}
		flags = append(flags, fmt.Sprintf("--node-cidr-mask-size-%s=%d", fam, def(p)))
	}
	return flags
}

// flannelConfig is flannel's net-conf.json: the cluster's pod range (each node's lease is its
// node.spec.podCIDR under the kube subnet manager) and the backend.
func flannelConfig(d *templateData) []byte {
	conf := map[string]any{"Backend": map[string]any{"Type": d.FlannelBackend}}
	for _, p := range d.PodPrefixes {
		if p.Addr().Is4() {
			conf["Network"] = p.String()
		} else {
			conf["EnableIPv6"] = true
			conf["IPv6Network"] = p.String()
		}
	}
	if _, ok := conf["Network"]; !ok {
		conf["EnableIPv4"] = false
	}
	return marshalJSON(conf)
}

func parseCIDRs(r *recipes.Recipe, field, s, def string) ([]netip.Prefix, error) {
	if s == "" {
		s = def
	}
	var out []netip.Prefix
	fams := map[bool]bool{}
	for _, part := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return nil, fieldErr(r, field, fmt.Sprintf("%q is not a CIDR: %v", part, err))
		}
		if p != p.Masked() {
			return nil, fieldErr(r, field, fmt.Sprintf("%s has host bits set; use %s", p, p.Masked()))
		}
		if fams[p.Addr().Is4()] {
			return nil, fieldErr(r, field, fmt.Sprintf("%q has two ranges of one address family", s))
		}
		fams[p.Addr().Is4()] = true
		out = append(out, p)
	}
	return out, nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (d *templateData) execute(name string) ([]byte, error) {
	src, err := templateFS.ReadFile("templates/" + name)
	if err != nil {
		return nil, fmt.Errorf("roles: no template %s: %w", name, err)
	}
	t, err := template.New(name).Option("missingkey=error").Funcs(templateFuncs).Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("roles: template %s: %w", name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("roles: template %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// templateFuncs put values into the scripts' shell: {{sh .X}} is one quoted word
// (shell.Quote), {{heredoc .X}} a value inside an unquoted here-document, where the script's
// own $variables expand (shell.HeredocEscape). Every value a script template interpolates goes
// through one of them, so a value can never become shell syntax; one that cannot be passed at
// all (a NUL byte, a line break in a here-document) fails the render.
var templateFuncs = template.FuncMap{
	"sh":      shell.QuoteErr,
	"heredoc": shell.HeredocEscape,
	"join":    strings.Join,
}

func (d *templateData) addTemplate(b *builder, name, path string, mode fs.FileMode) error {
	content, err := d.execute(name)
	if err != nil {
		return err
	}
	b.file(path, mode, content)
	return nil
}

// cniConfig is the pod network: a bridge with host-local addresses from the recipe's pod
// ranges, masquerading, and portmap for hostPort. The kubelet's runtime sets up loopback.
func cniConfig(d *templateData) []byte {
	type obj = map[string]any
	var ranges []any
	var routes []any
	for _, p := range d.PodPrefixes {
		ranges = append(ranges, []any{obj{"subnet": p.String()}})
		dst := "0.0.0.0/0"
		if p.Addr().Is6() {
			dst = "::/0"
		}
		routes = append(routes, obj{"dst": dst})
	}
	conf := obj{
		"cniVersion": "1.0.0",
		"name":       "kubebake",
		"plugins": []any{
			obj{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam": obj{
					"type":   "host-local",
					"ranges": ranges,
					"routes": routes,
				},
			},
			obj{"type": "portmap", "capabilities": obj{"portMappings": true}},
		},
	}
	return marshalJSON(conf)
}

// dockerDaemonJSON: overlay2 storage (never devicemapper/loopback), the kubelet's cgroup
// driver, bounded json-file logs (a chatty container must not fill the disk), and
// live-restore (restarting or upgrading docker leaves containers running). docker uses the
// system's containerd because its unit says so (--containerd=/run/containerd/containerd.sock,
// Debian's and docker-ce's alike): dockerd refuses a setting given both as a flag and here.
func dockerDaemonJSON(d *templateData) []byte {
	return marshalJSON(map[string]any{
		"exec-opts":      []string{"native.cgroupdriver=" + d.CgroupDriver},
		"storage-driver": d.StorageDriver,
		"log-driver":     "json-file",
		"log-opts":       map[string]string{"max-size": "10m", "max-file": "3"},
		"live-restore":   true,
	})
}

// marshalJSON is indented JSON with sorted keys (encoding/json sorts map keys).
func marshalJSON(v any) []byte {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err) // only maps, slices and strings: cannot fail
	}
	return append(out, '\n')
}

func sysctlFile(r *recipes.Recipe) ([]byte, error) {
	sysctls := NodeSysctls(r)
	rules := r.NodeSysctlRules()
	keys := make([]string, 0, len(sysctls))
	for k := range sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# kubebake node layer: the recipe's sysctls and the ones every node has\n")
	b.WriteString("# (recipes.NodeKernelSysctls). Applied by systemd-sysctl at boot and again whenever\n")
	b.WriteString("# br_netfilter loads, so the bridge-nf-call settings hold after every reboot.\n")
	for _, k := range keys {
		v := sysctls[k]
		field := fmt.Sprintf("sysctls[%q]", k)
		if rule, ok := rules[k]; ok && strings.TrimSpace(v) != rule.Value {
			return nil, fieldErr(r, field, fmt.Sprintf("%q: every node has %q (%s); remove it from the recipe", v, rule.Value, rule.Why))
		}
		if err := recipes.CheckSysctlKey(k); err != nil {
			return nil, fieldErr(r, field, err.Error())
		}
		if err := recipes.CheckSysctlValue(v); err != nil {
			return nil, fieldErr(r, field, err.Error())
		}
		fmt.Fprintf(&b, "%s = %s\n", k, strings.TrimSpace(v))
	}
	b.WriteString("# Every interface, those present at boot and those made later (recipes.NodeInterfaceSysctls).\n")
	for _, name := range slices.Sorted(maps.Keys(recipes.NodeInterfaceSysctls)) {
		fmt.Fprintf(&b, "%s = %s\n", recipes.InterfaceSysctlGlob(name), recipes.NodeInterfaceSysctls[name].Value)
	}
	return []byte(b.String()), nil
}

// NodeSysctls are a recipe's sysctls with the node sysctls it does not relax
// (Recipe.NodeSysctlRules) added where it lacks one.
func NodeSysctls(r *recipes.Recipe) map[string]string {
	rules := r.NodeSysctlRules()
	m := make(map[string]string, len(r.Sysctls)+len(rules))
	for k, rule := range rules {
		m[k] = rule.Value
	}
	for k, v := range r.Sysctls {
		m[k] = v
	}
	return m
}

func modulesFile(r *recipes.Recipe) ([]byte, error) {
	var b strings.Builder
	b.WriteString("# kubebake node layer: kernel modules the node loads at boot (before systemd-sysctl).\n")
	seen := map[string]bool{}
	for i, m := range r.Modules {
		if err := recipes.CheckModuleName(m); err != nil {
			return nil, fieldErr(r, fmt.Sprintf("modules[%d]", i), err.Error())
		}
		if seen[m] {
			continue
		}
		seen[m] = true
		b.WriteString(m + "\n")
	}
	return []byte(b.String()), nil
}

// releaseFile is /etc/kubebake/release: what the node is, as KEY=value lines.
func releaseFile(r *recipes.Recipe, l *recipes.Lock, d *templateData) ([]byte, error) {
	kv := [][2]string{
		{"KUBEBAKE_RECIPE", r.Name},
		{"KUBEBAKE_LOCK_SHA256", "unlocked"},
		{"KUBEBAKE_INPUTS_DIGEST", ""},
		{"KUBEBAKE_SOURCE_DATE_EPOCH", ""},
		{"KUBERNETES_VERSION", d.KubernetesVersion},
		{"ETCD_VERSION", r.Etcd.Version},
		{"CNI_VERSION", r.CNI.Version},
		{"CONTAINER_RUNTIME", d.Runtime},
	}
	arts := artifactIndex(l)
	if l != nil {
		kv[1][1] = recipes.LockHash(l)
		kv[2][1] = l.InputsDigest
		kv[3][1] = fmt.Sprint(l.SourceDateEpoch)
		if a, ok := arts["etcd"]; ok {
			kv[5][1] = a.Version
		}
		if a, ok := arts["cni/bridge"]; ok {
			kv[6][1] = a.Version
		}
	}
	// Runtime packages from Debian, with the versions the lock pinned.
	pkgs := append([]string(nil), r.Runtime.Packages...)
	sort.Strings(pkgs)
	for _, p := range pkgs {
		v := ""
		if a, ok := arts["deb/"+p]; ok {
			v = a.Version
		}
		kv = append(kv, [2]string{envName(p) + "_VERSION", v})
	}
	if d.CRI == recipes.CRIServerDockerd {
		v := ""
		if a, ok := arts["cri-dockerd"]; ok {
			v = a.Version
		}
		kv = append(kv, [2]string{"CRI_DOCKERD_VERSION", v})
	}
	var b strings.Builder
	for _, p := range kv {
		// The file can be sourced: each value is one quoted word (an empty one stays bare, as
		// KEY= assigns the empty string). A key is [A-Z0-9_]; one that starts with a digit
		// would make the line a command, so it gets a leading _.
		k, v := p[0], p[1]
		if k != "" && k[0] >= '0' && k[0] <= '9' {
			k = "_" + k
		}
		if v != "" {
			q, err := shell.QuoteErr(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", ReleasePath, k, err)
			}
			v = q
		}
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	return []byte(b.String()), nil
}

func envName(s string) string {
	return strings.ToUpper(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(s, "_"))
}

func artifactIndex(l *recipes.Lock) map[string]recipes.LockedArtifact {
	m := map[string]recipes.LockedArtifact{}
	if l == nil {
		return m
	}
	for _, a := range l.Artifacts {
		m[a.Name] = a
	}
	return m
}

func isKnown(s string, list []string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
