package verify

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/verify/vnet"
)

// A local cluster (kubebake cluster up) is the cluster smoke test's boot without its checks:
// the same plan, switch and nodes, kept running by the process that started them until it is
// told to stop. Its state folder is how other commands (status, kubectl, down) find it.

// UpOptions say which image to boot as a local cluster and where its state lives.
type UpOptions struct {
	// Image is an image file or a build output folder; Manifest as in Options.
	Image    string
	Manifest string
	Name     string
	Minions  int
	// UserData is the kind every node gets: cloud-init or ignition; "" mixes them as the
	// smoke test does (master and minion-1 cloud-init, minion-2 Ignition, ...).
	UserData string
	// StateDir is the cluster's own folder (see ClusterStateDir): state.json, the admin
	// kubeconfig, SSH keys, the VMs' disks and serial logs.
	StateDir string
	Accel    string
	// CPUs and MemoryMiB per VM, as in ClusterOptions.
	CPUs      int
	MemoryMiB int
	// Timeout bounds the boot up to every node Ready (default 30 minutes).
	Timeout  time.Duration
	Kubectl  string
	Progress func(node, stage string)
	QEMU     string
	Firmware Firmware
}

// Phases of a local cluster in its state file.
const (
	PhaseStarting = "starting"
	PhaseReady    = "ready"
	PhaseFailed   = "failed"
)

// ClusterState is a local cluster's state.json: what status, kubectl and down need.
type ClusterState struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// PID is the process that holds the VMs and their network; they stop when it exits.
	PID     int       `json:"pid"`
	Phase   string    `json:"phase"`
	Error   string    `json:"error,omitempty"`
	Started time.Time `json:"started"`
	Ready   time.Time `json:"ready,omitzero"`
	// Kubeconfig is the admin kubeconfig on the host, its server the forwarded API port.
	Kubeconfig string      `json:"kubeconfig,omitempty"`
	Kubectl    string      `json:"kubectl,omitempty"`
	API        string      `json:"api,omitempty"`
	Nodes      []NodeState `json:"nodes"`
}

// NodeState is one node of a local cluster.
type NodeState struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	UserData string `json:"userData"`
	IP       string `json:"ip"`
	// SSH is the command that logs in as root (its key is in the state folder, 0600).
	SSH string `json:"ssh,omitempty"`
}

// StateFileName is the state file's name inside a cluster's state folder.
const StateFileName = "state.json"

// ClusterStateDir is where cluster NAME's state lives: $KUBEBAKE_STATE/clusters/NAME, else
// $XDG_STATE_HOME/kubebake/clusters/NAME, else ~/.local/state/kubebake/clusters/NAME.
func ClusterStateDir(name string) (string, error) {
	if err := cloudinit.ValidateClusterName(name); err != nil {
		return "", err
	}
	base := os.Getenv("KUBEBAKE_STATE")
	if base == "" {
		xdg := os.Getenv("XDG_STATE_HOME")
		if xdg == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("no state folder: set $KUBEBAKE_STATE (%w)", err)
			}
			xdg = filepath.Join(home, ".local", "state")
		}
		base = filepath.Join(xdg, "kubebake")
	}
	return filepath.Join(base, "clusters", name), nil
}

// ReadClusterState reads dir's state file; os.ErrNotExist when there is none.
func ReadClusterState(dir string) (*ClusterState, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFileName))
	if err != nil {
		return nil, err
	}
	var st ClusterState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFileName), err)
	}
	return &st, nil
}

func writeClusterState(dir string, st *ClusterState) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, StateFileName), append(data, '\n'), 0o600)
}

// LocalCluster is a running local cluster, held by this process.
type LocalCluster struct {
	c        *cluster
	sw       *vnet.Switch
	sockDir  string
	stateDir string
	mu       sync.Mutex
	state    ClusterState
	stopOnce sync.Once
}

// State is a copy of the cluster's state as last written.
func (lc *LocalCluster) State() ClusterState {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.state
}

func (lc *LocalCluster) update(f func(st *ClusterState)) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	f(&lc.state)
	return writeClusterState(lc.stateDir, &lc.state)
}

// Up boots a local cluster: the master, then the minions, all from opts.Image, on a private
// segment; it returns once every node is Ready and CoreDNS runs, with the admin kubeconfig
// written into the state folder. The VMs run until Stop (or until this process exits: QEMU
// dies with its parent). On an error the VMs are stopped and the state file says "failed".
func Up(ctx context.Context, opts UpOptions) (*LocalCluster, error) {
	if opts.StateDir == "" {
		return nil, errors.New("no state folder for the cluster")
	}
	if opts.UserData != "" && opts.UserData != UserDataCloudInit && opts.UserData != UserDataIgnition {
		return nil, fmt.Errorf("--userdata %q: use cloud-init or ignition (or leave it out for both)", opts.UserData)
	}
	copts := ClusterOptions{
		Image: opts.Image, Manifest: opts.Manifest, Name: cmp.Or(opts.Name, DefaultClusterName),
		Minions: cmp.Or(opts.Minions, DefaultMinions), Accel: opts.Accel, CPUs: opts.CPUs,
		MemoryMiB: opts.MemoryMiB, Kubectl: opts.Kubectl, Progress: opts.Progress, QEMU: opts.QEMU,
		Firmware: opts.Firmware, Subnet: DefaultClusterSubnet,
		WorkDir:      filepath.Join(opts.StateDir, "vms"),
		ArtifactsDir: opts.StateDir,
	}
	if opts.UserData != "" {
		for range copts.Minions + 1 {
			copts.UserData = append(copts.UserData, opts.UserData)
		}
	}
	if err := os.MkdirAll(copts.WorkDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(opts.StateDir, 0o700); err != nil {
		return nil, err
	}
	c, err := newCluster(ctx, copts)
	if err != nil {
		return nil, err
	}
	lc := &LocalCluster{c: c, stateDir: opts.StateDir}
	lc.state = ClusterState{Name: copts.Name, Image: c.target.Image, PID: os.Getpid(), Phase: PhaseStarting, Started: time.Now().UTC()}
	for _, pn := range c.plan.Nodes {
		lc.state.Nodes = append(lc.state.Nodes, NodeState{Name: pn.Hostname, Role: pn.Role, UserData: pn.UserData, IP: pn.IP.String()})
	}
	if err := lc.update(func(*ClusterState) {}); err != nil {
		return nil, err
	}
	if lc.sw, lc.sockDir, err = startSwitch(ctx, copts.WorkDir, copts.Subnet, c.plan); err != nil {
		return lc, lc.fail(err)
	}
	c.attachSwitch(lc.sw)
	// The VMs live as long as ctx; only the wait for them is bounded (a context that ends
	// would stop them with it).
	bctx, cancel := context.WithTimeout(ctx, cmp.Or(opts.Timeout, 30*time.Minute))
	defer cancel()
	if err := lc.boot(ctx, bctx); err != nil {
		if bctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w (the cluster did not come up within %s)", err, cmp.Or(opts.Timeout, 30*time.Minute))
		}
		return lc, lc.fail(err)
	}
	return lc, nil
}

// boot starts every VM (for as long as vmCtx lasts), logs in, fetches the admin kubeconfig
// and waits for the nodes, all within ctx.
func (lc *LocalCluster) boot(vmCtx, ctx context.Context) error {
	c := lc.c
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	// The master first: the minions' joins wait for it anyway, and under emulation they
	// would only slow its start. A node's boot has its own timeouts (boot, SSH).
	if errs[0] = c.master().boot(vmCtx); errs[0] != nil {
		return fmt.Errorf("%s: %w", c.master().hostname, errs[0])
	}
	for i, n := range c.minions() {
		wg.Go(func() { errs[i+1] = n.boot(vmCtx) })
	}
	wg.Wait()
	for i, n := range c.nodes {
		if errs[i] != nil {
			return fmt.Errorf("%s: %w", n.hostname, errs[i])
		}
		if err := lc.writeKey(i, n); err != nil {
			return err
		}
	}
	if c.opts.Progress != nil {
		c.opts.Progress(RoleCluster, "api-access")
	}
	if _, err := c.stepAPIAccess(ctx); err != nil {
		return err
	}
	kubeconfig := filepath.Join(lc.stateDir, "admin.conf")
	if err := os.Rename(c.kubectl.kubeconfig, kubeconfig); err != nil {
		return err
	}
	c.kubectl.kubeconfig = kubeconfig
	if err := lc.update(func(st *ClusterState) {
		st.Kubeconfig, st.Kubectl, st.API = kubeconfig, c.kubectl.bin, c.master().machine.HostAddr(apiPort)
	}); err != nil {
		return err
	}
	if c.opts.Progress != nil {
		c.opts.Progress(RoleCluster, "nodes")
	}
	if _, err := c.stepNodes(ctx); err != nil {
		return err
	}
	// SSH sessions were only for the kubeconfig; the state file says how to log in.
	for _, n := range c.nodes {
		if n.session != nil {
			n.session.Close()
			n.session = nil
		}
	}
	return lc.update(func(st *ClusterState) { st.Phase, st.Ready = PhaseReady, time.Now().UTC() })
}

// writeKey saves node i's SSH key (0600) and records how to log in.
func (lc *LocalCluster) writeKey(i int, n *node) error {
	pemKey, err := n.key.PrivateKeyPEM()
	if err != nil {
		return err
	}
	keyFile := filepath.Join(lc.stateDir, n.hostname+"-id_ed25519")
	if err := atomicfile.WriteFile(keyFile, pemKey, 0o600); err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(n.machine.SSHAddr)
	return lc.update(func(st *ClusterState) {
		st.Nodes[i].SSH = sshCommand(keyFile, port)
	})
}

// fail stops the VMs and records err in the state file; it returns err.
func (lc *LocalCluster) fail(err error) error {
	// The serial consoles say why a node did not come up; keep them beside the log.
	for _, n := range lc.c.nodes {
		if n.machine != nil {
			n.machine.Stop()
			os.Rename(n.machine.SerialLog, filepath.Join(lc.stateDir, filepath.Base(n.machine.SerialLog)))
		}
	}
	lc.stopVMs()
	if werr := lc.update(func(st *ClusterState) { st.Phase, st.Error = PhaseFailed, err.Error() }); werr != nil {
		slog.Warn("cannot record the failure in the state file", "err", werr)
	}
	return err
}

func (lc *LocalCluster) stopVMs() {
	lc.stopOnce.Do(func() {
		for _, n := range lc.c.nodes {
			if n.session != nil {
				n.session.Close()
			}
			if n.machine != nil {
				n.machine.Stop()
			}
		}
		if lc.sw != nil {
			lc.sw.Close()
		}
		if lc.sockDir != "" {
			os.RemoveAll(lc.sockDir)
		}
		os.RemoveAll(lc.c.opts.WorkDir)
	})
}

// Stop powers the VMs off, removes their disks and the state folder with its credentials.
func (lc *LocalCluster) Stop() error {
	lc.stopVMs()
	return RemoveClusterState(lc.stateDir)
}

// RemoveClusterState removes a cluster's state folder; it refuses a folder without a state
// file, so that a wrong --state path cannot remove anything else.
func RemoveClusterState(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, StateFileName)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.RemoveAll(dir)
}

// IsClusterHolderAlive says whether the process recorded in st still runs as kubebake (a
// reused PID of another program does not count).
func IsClusterHolderAlive(st *ClusterState) bool {
	if st == nil || st.PID <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(st.PID), "cmdline"))
	if err != nil {
		return false
	}
	return strings.Contains(string(cmdline), "kubebake")
}

// ClusterStatus is what the API says of a local cluster.
type ClusterStatus struct {
	Nodes []NodeStatus `json:"nodes"`
	// SystemPods are kube-system's pods.
	SystemPods []PodStatus `json:"systemPods"`
}

// NodeStatus is one registered node.
type NodeStatus struct {
	Name    string `json:"name"`
	Ready   bool   `json:"ready"`
	IP      string `json:"ip"`
	PodCIDR string `json:"podCIDR,omitempty"`
}

// PodStatus is one pod.
type PodStatus struct {
	Name  string `json:"name"`
	Node  string `json:"node"`
	Phase string `json:"phase"`
	IP    string `json:"ip,omitempty"`
}

// QueryClusterStatus asks the cluster's API server (through st's kubeconfig and kubectl)
// for its nodes and kube-system pods.
func QueryClusterStatus(ctx context.Context, st *ClusterState) (*ClusterStatus, error) {
	if st.Kubeconfig == "" || st.Kubectl == "" {
		return nil, fmt.Errorf("cluster %s has no kubeconfig yet (phase %s)", st.Name, st.Phase)
	}
	c := &cluster{kubectl: &kubectlClient{bin: st.Kubectl, kubeconfig: st.Kubeconfig}}
	var nodes k8sList[struct {
		k8sNode
		Spec struct {
			PodCIDR string `json:"podCIDR"`
		}
	}]
	if err := c.getJSON(ctx, &nodes, "get", "nodes"); err != nil {
		return nil, err
	}
	var pods k8sList[k8sPod]
	if err := c.getJSON(ctx, &pods, "get", "pods", "-n", "kube-system"); err != nil {
		return nil, err
	}
	status := &ClusterStatus{}
	for _, n := range nodes.Items {
		ns := NodeStatus{Name: n.Metadata.Name, PodCIDR: n.Spec.PodCIDR,
			Ready: condition(n.Status.Conditions, "Ready").Status == "True"}
		for _, a := range n.Status.Addresses {
			if a.Type == "InternalIP" && ns.IP == "" {
				ns.IP = a.Address
			}
		}
		status.Nodes = append(status.Nodes, ns)
	}
	for _, p := range pods.Items {
		status.SystemPods = append(status.SystemPods, PodStatus{Name: p.Metadata.Name, Node: p.Spec.NodeName, Phase: p.Status.Phase, IP: p.Status.PodIP})
	}
	return status, nil
}
