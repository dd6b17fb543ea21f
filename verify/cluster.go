package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/verify/vnet"
)

// RoleCluster is the Role of a cluster run's own Result: its checks are the smoke steps.
const RoleCluster = "cluster"

// ClusterOptions say which image to boot as a cluster (one master, N minions, all from the
// same image file) and how.
type ClusterOptions struct {
	// Image is an image file or a build output folder; Manifest as in Options.
	Image    string
	Manifest string
	// Minions is how many minions join the master (default 2).
	Minions int
	// UserData is the user-data kind per node, master first; nodes past its end get the
	// default: master and minion-1 cloud-init, minion-2 Ignition, then alternating.
	UserData []string
	// Name is the cluster's name; the nodes are NAME-master, NAME-minion-1, ... (default
	// "kubebake").
	Name string
	// Subnet is the cluster segment (default 10.88.0.0/24): the switch is .1, the master .10,
	// minion i .10+i.
	Subnet netip.Prefix
	// WorkDir holds overlays, seeds, serial logs, the switch's socket and the kubeconfig while
	// the cluster runs (default a temp folder).
	WorkDir string
	// ArtifactsDir receives, on any failure, every node's serial logs and journals in a
	// folder of its own, cluster-NAME (default <image dir>/verify).
	ArtifactsDir string
	Accel        string
	// CPUs and MemoryMiB per VM (default 2 and 2048; under TCG minions get 1 vCPU by default).
	CPUs      int
	MemoryMiB int
	// Node stage timeouts (zero: the cluster defaults, longer than a lone node's: three VMs
	// share the host). TimeoutSettle covers a minion's join, which waits for the master.
	TimeoutBoot   time.Duration
	TimeoutSSH    time.Duration
	TimeoutSettle time.Duration
	TimeoutChecks time.Duration
	// StepTimeouts override DefaultStepTimeouts by step name ("nodes", "reboot-master", ...).
	StepTimeouts map[string]time.Duration
	// Kubectl is the host's kubectl (default: the manifest's kubectl from the artifact cache,
	// else kubectl on PATH).
	Kubectl string
	// BusyboxImage is the baked image the smoke pods run (default: the busybox image the
	// manifest's lock names, else DefaultBusyboxImage).
	BusyboxImage string
	// Progress, when set, receives stage changes ("kubebake-minion-1", "boot"; "cluster",
	// "service").
	Progress func(node, stage string)
	// Keep leaves the cluster running after the steps and reports how to reach it.
	Keep     bool
	QEMU     string
	Firmware Firmware
}

// Cluster defaults.
const (
	DefaultClusterName  = "kubebake"
	DefaultMinions      = 2
	DefaultBusyboxImage = "kubebake.local/busybox:1.35.0"

	DefaultClusterTimeoutBoot   = 15 * time.Minute
	DefaultClusterTimeoutSSH    = 5 * time.Minute
	DefaultClusterTimeoutSettle = 30 * time.Minute
	DefaultClusterTimeoutChecks = 30 * time.Minute

	// clusterMinionNice is the host nice level of minion VMs under TCG.
	clusterMinionNice = 10
)

// DefaultClusterSubnet is the cluster segment's prefix.
var DefaultClusterSubnet = netip.MustParsePrefix("10.88.0.0/24")

// clusterJournalUnits are the units whose journals every node's failure artifacts hold.
var clusterJournalUnits = []string{
	"kubelet.service", "containerd.service", "flanneld.service", "kube-apiserver.service",
	"kubebake-master-bootstrap.service", "kubebake-minion-join.service", "kube-proxy.service",
	recipes.CSRApproverUnit, recipes.JoinCleanupUnit,
}

// apiPort is the API server's port on the master.
const apiPort = 6443

// clusterNode is one planned node: its role, names, user-data kind and segment address.
type clusterNode struct {
	Role     string
	Hostname string
	UserData string
	IP       netip.Addr
	MAC      net.HardwareAddr
}

// clusterPlan is the cluster segment: the switch's address and the nodes, master first.
type clusterPlan struct {
	ServerIP netip.Addr
	Nodes    []clusterNode
}

func (p clusterPlan) master() clusterNode { return p.Nodes[0] }

func (p clusterPlan) leases() []vnet.Lease {
	ls := make([]vnet.Lease, len(p.Nodes))
	for i, n := range p.Nodes {
		ls[i] = vnet.Lease{MAC: n.MAC, IP: n.IP, Hostname: n.Hostname}
	}
	return ls
}

// defaultUserData is the kind node i (0: master) gets: cloud-init for the master and
// minion-1, Ignition for minion-2, then alternating, so both kinds join the same cluster.
func defaultUserData(i int) string {
	if i == 0 || i%2 == 1 {
		return UserDataCloudInit
	}
	return UserDataIgnition
}

// planCluster assigns names, addresses and MACs: the switch is the subnet's first address,
// the master the tenth, minion i the tenth plus i.
func planCluster(name string, subnet netip.Prefix, minions int, userData []string) (clusterPlan, error) {
	if err := cloudinit.ValidateClusterName(name); err != nil {
		return clusterPlan{}, err
	}
	if minions < 1 {
		return clusterPlan{}, fmt.Errorf("--minions %d: a cluster needs at least one minion", minions)
	}
	if longest := fmt.Sprintf("%s-minion-%d", name, minions); len(longest) > 63 {
		return clusterPlan{}, fmt.Errorf("node name %q is longer than 63 characters: use a shorter cluster name", longest)
	}
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Masked() != subnet {
		return clusterPlan{}, fmt.Errorf("cluster subnet %s: give an IPv4 network address with its prefix length, e.g. 10.88.0.0/24", subnet)
	}
	if len(userData) > minions+1 {
		return clusterPlan{}, fmt.Errorf("%d user-data kinds for %d nodes", len(userData), minions+1)
	}
	addr := func(offset int) (netip.Addr, error) {
		a := subnet.Addr()
		for range offset {
			a = a.Next()
		}
		// The last address is the broadcast address.
		if !subnet.Contains(a) || !subnet.Contains(a.Next()) {
			return netip.Addr{}, fmt.Errorf("subnet %s has no room for %d minions (the master is .10, minion i .10+i): use a larger subnet or fewer minions", subnet, minions)
		}
		return a, nil
	}
	server, err := addr(1)
	if err != nil {
		return clusterPlan{}, err
	}
	plan := clusterPlan{ServerIP: server}
	for i := 0; i <= minions; i++ {
		n := clusterNode{Role: RoleMaster, Hostname: name + "-master", UserData: defaultUserData(i)}
		if i > 0 {
			n.Role, n.Hostname = RoleMinion, fmt.Sprintf("%s-minion-%d", name, i)
		}
		if i < len(userData) && userData[i] != "" {
			n.UserData = userData[i]
		}
		if n.UserData != UserDataCloudInit && n.UserData != UserDataIgnition {
			return clusterPlan{}, fmt.Errorf("user-data %q for %s: use cloud-init or ignition", n.UserData, n.Hostname)
		}
		if n.IP, err = addr(10 + i); err != nil {
			return clusterPlan{}, err
		}
		// The cluster NIC is the VM's second (index 1; the user-mode NIC is 0).
		n.MAC = vnet.MAC(n.Hostname, 1)
		plan.Nodes = append(plan.Nodes, n)
	}
	return plan, nil
}

// rewriteKubeconfig points every cluster of a kubeconfig at server and sets the name the API
// server's certificate is checked against (the certificate has no SAN for 127.0.0.1).
func rewriteKubeconfig(data []byte, server, tlsServerName string) ([]byte, error) {
	var kc map[string]any
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %w", err)
	}
	clusters, _ := kc["clusters"].([]any)
	if len(clusters) == 0 {
		return nil, errors.New("the kubeconfig lists no cluster")
	}
	for _, c := range clusters {
		entry, _ := c.(map[string]any)
		cl, _ := entry["cluster"].(map[string]any)
		if cl == nil {
			return nil, fmt.Errorf("kubeconfig cluster entry %v has no cluster settings", entry["name"])
		}
		cl["server"] = server
		cl["tls-server-name"] = tlsServerName
	}
	return yaml.Marshal(kc)
}

// findKubectl picks the host's kubectl: the one given, else the image's own kubectl (by its
// sha256 in the manifest) from the artifact cache, copied executable into workDir (blobs are
// read-only, 0444), else kubectl on PATH. how says which, for the report.
func findKubectl(explicit string, m *Manifest, cacheDir, workDir string) (bin, how string, err error) {
	if explicit != "" {
		p, err := exec.LookPath(explicit)
		if err != nil {
			return "", "", fmt.Errorf("kubectl %s: %w", explicit, err)
		}
		return p, "given: " + p, nil
	}
	var sum string
	if m != nil {
		for _, f := range m.Files {
			if path.Base(f.Path) == "kubectl" && artifacts.ValidSHA256(f.SHA256) {
				sum = f.SHA256
			}
		}
	}
	if sum != "" && cacheDir != "" {
		if st, err := os.Stat(cacheDir); err == nil && st.IsDir() {
			if c, err := artifacts.OpenCache(cacheDir); err == nil {
				if blob, ok, _ := c.Lookup(sum); ok {
					dst := filepath.Join(workDir, "kubectl")
					if err := copyExecutable(blob, dst); err != nil {
						return "", "", fmt.Errorf("copying the image's kubectl from the artifact cache: %w", err)
					}
					return dst, "the image's kubectl (sha256 " + sum[:12] + ") from the artifact cache", nil
				}
			}
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		return "", "", errors.New("no kubectl: the image's is not in the artifact cache ($KUBEBAKE_CACHE; run kubebake fetch) and none is on PATH; give one with --kubectl")
	}
	return p, "kubectl on PATH (" + p + "; its version may differ from the cluster's)", nil
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Write(dst, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// kubectlClient runs the host's kubectl against the cluster through the master's forward.
type kubectlClient struct {
	bin, kubeconfig string
}

// run runs kubectl with args (and stdin, when given) and returns its standard output.
func (k *kubectlClient) run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := run.Command(k.bin, append([]string{"--kubeconfig", k.kubeconfig, "--request-timeout=60s"}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.Output(ctx)
	return string(out), err
}

// RunCluster boots one master and Minions minions from the same image on a private segment
// (verify/vnet: a switch with DHCP by MAC), proves every node's role promises once it has
// settled, then runs the cluster smoke steps from the host. The report has one Result per
// node and one for the cluster ("cluster/<step>" checks). The error is for a run that could
// not take place; failed checks are in the report.
func RunCluster(ctx context.Context, opts ClusterOptions) (*Report, error) {
	opts.Name = cmp.Or(opts.Name, DefaultClusterName)
	tempWork := opts.WorkDir == ""
	if tempWork {
		var err error
		if opts.WorkDir, err = os.MkdirTemp("", "kubebake-cluster-"); err != nil {
			return nil, err
		}
	} else if err := privateDir(opts.WorkDir); err != nil {
		return nil, err
	}
	c, err := newCluster(ctx, opts)
	if err != nil {
		if tempWork {
			os.RemoveAll(opts.WorkDir)
		}
		return nil, err
	}
	opts, target, plan := c.opts, c.target, c.plan
	nodeOpts := c.master().opts
	sw, socketDir, err := startSwitch(ctx, opts.WorkDir, opts.Subnet, plan)
	if err != nil {
		if tempWork {
			os.RemoveAll(opts.WorkDir)
		}
		return nil, err
	}
	c.attachSwitch(sw)
	accel := c.accel

	rep := &Report{Image: target.Image, Manifest: target.Manifest, Started: time.Now().UTC()}
	c.bootAndProve(ctx)
	clusterRes := c.smoke(ctx, accel)

	for _, n := range c.nodes {
		rep.Results = append(rep.Results, n.res)
	}
	rep.Results = append(rep.Results, clusterRes)
	rep.Finish()
	rep.redactSecrets(nodeOpts.Bundle.Redactor(c.nodeNames()...))
	if !rep.Pass {
		c.saveArtifacts(ctx, rep)
		rep.ArtifactsDir = nodeOpts.ArtifactsDir
	}
	for i, n := range c.nodes {
		n.release(ctx)
		if n.kept {
			rep.kept = append(rep.kept, n.machine)
			rep.Results[i].SSH = n.res.SSH
		}
	}
	if rep.Kept() && c.kubectl != nil {
		kc := filepath.Join(nodeOpts.ArtifactsDir, opts.Name+"-admin.conf")
		if data, err := os.ReadFile(c.kubectl.kubeconfig); err == nil && atomicfile.WriteFile(kc, data, artifactFileMode) == nil {
			rep.Results[len(rep.Results)-1].SSH = "kubectl --kubeconfig " + kc + " get nodes -o wide"
		}
	}
	cleanup := func() {
		sw.Close()
		if socketDir != "" {
			os.RemoveAll(socketDir)
		}
		if tempWork {
			os.RemoveAll(opts.WorkDir)
		}
	}
	if rep.Kept() {
		rep.keptStops = append(rep.keptStops, cleanup)
	} else {
		cleanup()
		if !tempWork && c.kubectl != nil {
			os.Remove(c.kubectl.kubeconfig) // the admin credential of a cluster that is gone
			if filepath.Dir(c.kubectl.bin) == opts.WorkDir {
				os.Remove(c.kubectl.bin) // the copy from the artifact cache
			}
		}
	}
	return rep, ctx.Err()
}

// newCluster resolves the image, plans the nodes and makes them, as RunCluster does; the
// switch is not started.
func newCluster(ctx context.Context, opts ClusterOptions) (*cluster, error) {
	target, err := ResolveTarget(opts.Image, opts.Manifest)
	if err != nil {
		return nil, err
	}
	opts.Name = cmp.Or(opts.Name, DefaultClusterName)
	opts.Minions = cmp.Or(opts.Minions, DefaultMinions)
	if !opts.Subnet.IsValid() {
		opts.Subnet = DefaultClusterSubnet
	}
	plan, err := planCluster(opts.Name, opts.Subnet, opts.Minions, opts.UserData)
	if err != nil {
		return nil, err
	}
	timeouts, err := stepTimeouts(opts.StepTimeouts)
	if err != nil {
		return nil, err
	}
	nodeOpts := Options{
		Image: opts.Image, Manifest: opts.Manifest, Accel: opts.Accel, Keep: opts.Keep,
		TimeoutBoot:   cmp.Or(opts.TimeoutBoot, DefaultClusterTimeoutBoot),
		TimeoutSSH:    cmp.Or(opts.TimeoutSSH, DefaultClusterTimeoutSSH),
		TimeoutSettle: cmp.Or(opts.TimeoutSettle, DefaultClusterTimeoutSettle),
		TimeoutChecks: cmp.Or(opts.TimeoutChecks, DefaultClusterTimeoutChecks),
		QEMU:          opts.QEMU, Firmware: opts.Firmware, CPUs: opts.CPUs, MemoryMiB: opts.MemoryMiB,
		Progress: opts.Progress, WorkDir: opts.WorkDir,
	}
	if nodeOpts.Firmware.Code == "" {
		if nodeOpts.Firmware, err = FindFirmware(); err != nil {
			return nil, err
		}
	}
	var manifest *Manifest
	if target.Manifest != "" {
		if manifest, err = LoadManifest(target.Manifest); err != nil {
			return nil, err
		}
	}
	accel, verdict, err := ResolveAccel(ctx, opts.Accel, opts.QEMU, nodeOpts.Firmware)
	if err != nil {
		return nil, err
	}
	master := plan.master()
	endpoint := net.JoinHostPort(master.IP.String(), strconv.Itoa(apiPort))
	if nodeOpts.Bundle, err = cloudinit.NewBundle(opts.Name, cloudinit.BundleOptions{MasterEndpoint: endpoint}); err != nil {
		return nil, err
	}
	if opts.ArtifactsDir == "" {
		opts.ArtifactsDir = filepath.Join(filepath.Dir(target.Image), "verify")
	}
	nodeOpts.ArtifactsDir = filepath.Join(opts.ArtifactsDir, "cluster-"+opts.Name)
	slog.Info("cluster", "name", opts.Name, "image", target.Image, "accel", accel, "why", verdict, "master", endpoint, "minions", opts.Minions)

	c := &cluster{
		opts: opts, plan: plan, vmCtx: ctx, timeouts: timeouts, target: target, accel: accel,
		cacheDir: artifacts.DefaultCacheDir(),
	}
	for i, pn := range plan.Nodes {
		n := &node{
			opts: nodeOpts, target: target, manifest: manifest, accel: accel,
			role: pn.Role, userData: pn.UserData, hostname: pn.Hostname, inCluster: true,
		}
		if i == 0 {
			n.forwards = []Forward{{GuestPort: apiPort}}
			n.advertise = pn.IP.String()
			n.joinNodes = plan.names()[1:]
		} else if accel == AccelTCG {
			// Under emulation the host's cores are the limit, and every step goes through
			// the master's API server: a starved master stops answering (TLS handshakes
			// past 10 s, etcd applies over a second). Minions get one vCPU and a lower host
			// priority unless CPUs are given.
			if opts.CPUs == 0 {
				n.opts.CPUs = 1
			}
			n.nice = clusterMinionNice
		}
		c.nodes = append(c.nodes, n)
	}
	return c, nil
}

// attachSwitch gives every node its NIC on the segment.
func (c *cluster) attachSwitch(sw *vnet.Switch) {
	for i, n := range c.nodes {
		n.nics = []NIC{{Netdev: sw.Netdev("cluster"), MAC: c.plan.Nodes[i].MAC}}
	}
}

// startSwitch starts the cluster segment with a lease per node. Its socket goes in the work
// folder, or in a short temp folder when that path is too long for a unix socket; socketDir
// is that temp folder, to remove.
func startSwitch(ctx context.Context, workDir string, subnet netip.Prefix, plan clusterPlan) (sw *vnet.Switch, socketDir string, err error) {
	socket, err := filepath.Abs(filepath.Join(workDir, "vnet.sock"))
	if err != nil {
		return nil, "", err
	}
	if len(socket) > 100 { // sun_path holds 108 bytes
		if socketDir, err = os.MkdirTemp("", "kb-vnet-"); err != nil {
			return nil, "", err
		}
		socket = filepath.Join(socketDir, "vnet.sock")
	}
	sw, err = vnet.Start(ctx, vnet.Config{
		Socket: socket, Subnet: subnet, ServerIP: plan.ServerIP, Leases: plan.leases(),
	})
	if err != nil {
		if socketDir != "" {
			os.RemoveAll(socketDir)
		}
		return nil, "", fmt.Errorf("starting the cluster network: %w", err)
	}
	return sw, socketDir, nil
}

// cluster is one cluster run: its nodes (master first) and what the smoke steps learn.
type cluster struct {
	opts     ClusterOptions
	plan     clusterPlan
	target   Target
	accel    string
	nodes    []*node
	timeouts map[string]time.Duration
	cacheDir string
	// busybox is the smoke pods' image, settled once the master's manifest is known.
	busybox string
	// vmCtx is the run's context: a VM restarted by a step must outlive the step's deadline.
	vmCtx   context.Context
	kubectl *kubectlClient

	// Learned by the steps.
	webIP    string // the web Service's ClusterIP
	nodePort int    // the web-nodeport Service's port
}

func (c *cluster) master() *node { return c.nodes[0] }

func (c *cluster) minions() []*node { return c.nodes[1:] }

func (c *cluster) ip(n *node) string {
	for _, pn := range c.plan.Nodes {
		if pn.Hostname == n.hostname {
			return pn.IP.String()
		}
	}
	return ""
}

// bootAndProve boots the master, then the minions while the master settles; every node's
// role checks run once it has settled (a minion's once it has joined).
func (c *cluster) bootAndProve(ctx context.Context) {
	errs := make([]error, len(c.nodes))
	m := c.master()
	m.begin()
	errs[0] = m.boot(ctx)
	var wg sync.WaitGroup
	if errs[0] == nil {
		wg.Go(func() { errs[0] = m.prove(ctx) })
		for i, n := range c.minions() {
			wg.Go(func() {
				n.begin()
				err := n.boot(ctx)
				if err == nil {
					err = n.prove(ctx)
				}
				errs[i+1] = err
			})
		}
	} else {
		for i, n := range c.minions() {
			n.begin()
			errs[i+1] = &stageError{"start", "the minion boots once its master has", "not started: the master did not boot"}
		}
	}
	wg.Wait()
	for i, n := range c.nodes {
		n.conclude(errs[i])
	}
}

// saveArtifacts keeps every node's serial logs and the cluster units' journals, and what
// the API says of the cluster, in the cluster's 0700 artifacts folder.
func (c *cluster) saveArtifacts(ctx context.Context, rep *Report) {
	dir := c.master().opts.ArtifactsDir
	// The folder is this run's own: an older one left with other modes is made private.
	if err := privateDir(dir); err != nil {
		slog.Warn("cannot save failure logs", "dir", dir, "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { n.saveArtifacts(ctx, clusterJournalUnits) })
	}
	wg.Wait()
	for i, n := range c.nodes {
		rep.Results[i].Artifacts = n.res.Artifacts
	}
	if c.kubectl == nil || ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var b strings.Builder
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "services,endpointslices", "-A", "-o", "wide"},
		{"describe", "nodes"},
		{"describe", "pods", "-n", "default"},
		{"describe", "pods", "-n", "kube-system"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
	} {
		out, err := c.kubectl.run(ctx, "", args...)
		fmt.Fprintf(&b, "### kubectl %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(error: %v)\n", err)
		}
		b.WriteString("\n")
	}
	p := filepath.Join(dir, c.opts.Name+"-cluster-state.txt")
	if atomicfile.WriteFile(p, []byte(c.master().redactor().String(b.String())), artifactFileMode) == nil {
		last := &rep.Results[len(rep.Results)-1]
		last.Artifacts = append(last.Artifacts, p)
	}
}

// nodeNames are the names the nodes must register under, master first.
func (c *cluster) nodeNames() []string { return c.plan.names() }

func (p clusterPlan) names() []string {
	names := make([]string, len(p.Nodes))
	for i, n := range p.Nodes {
		names[i] = n.Hostname
	}
	return names
}

func (c *cluster) minionNames() []string {
	return slices.Clone(c.nodeNames()[1:])
}
