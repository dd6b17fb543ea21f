package main

// kubebake cluster up/status/kubectl/down: a local cluster of QEMU VMs from one image file.
// "up" starts a holder process in the background (the same binary, "up --foreground") that
// owns the VMs and their network; the state folder is how the other commands find it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/verify"
)

// upLogName is the holder's log in the state folder.
const upLogName = "up.log"

func clusterUpCmd() *cobra.Command {
	var (
		name, userData, accel, manifest, kubectl string
		minions, cpus, memory                    int
		timeout                                  time.Duration
		foreground                               bool
	)
	cmd := &cobra.Command{
		Use:   "up IMAGE|OUTDIR",
		Short: "Boot a local cluster (one master, --minions minions) from one image file",
		Long: `up boots one master and --minions minions from the same image file in QEMU, on a private
network between the VMs (a switch inside the kubebake process; nothing leaves the host), each
with its role's user-data from a fresh cluster bundle. It returns once every node is Ready and
CoreDNS runs, and prints the kubeconfig: its server is the master's API port forwarded to
127.0.0.1. The VMs keep running in a background kubebake process until "cluster down".

The cluster's state (kubeconfig, SSH keys, VM disks, the background process's log) is kept in
$KUBEBAKE_STATE/clusters/NAME (default ~/.local/state/kubebake/clusters/NAME), mode 0700.`,
		Example: `  kubebake cluster up out/debian-12
  kubebake cluster up out/debian-12 --name dev --minions 3 --userdata ignition
  kubebake cluster kubectl kubebake -- get nodes -o wide
  kubebake cluster down kubebake`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := verify.ClusterStateDir(name)
			if err != nil {
				return fmt.Errorf("--name: %w", err)
			}
			if minions < 1 {
				return fmt.Errorf("--minions %d: a cluster needs at least one minion", minions)
			}
			if userData != "" && userData != verify.UserDataCloudInit && userData != verify.UserDataIgnition {
				return fmt.Errorf("--userdata %q: use cloud-init or ignition (or leave it out: the master and minion-1 get cloud-init, minion-2 Ignition, ...)", userData)
			}
			if foreground {
				return holdCluster(cmd.Context(), cmd, dir, verify.UpOptions{
					Image: args[0], Manifest: manifest, Name: name, Minions: minions, UserData: userData,
					StateDir: dir, Accel: accel, CPUs: cpus, MemoryMiB: memory, Timeout: timeout, Kubectl: kubectl,
				})
			}
			return startHolder(cmd, dir, name)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", verify.DefaultClusterName, "cluster name; nodes are NAME-master, NAME-minion-1, ...")
	f.IntVar(&minions, "minions", verify.DefaultMinions, "minions that join the master")
	f.StringVar(&userData, "userdata", "", "cloud-init or ignition for every node (default: both kinds in one cluster)")
	f.StringVar(&accel, "accel", verify.AccelAuto, "QEMU accelerator: auto, kvm or tcg")
	f.StringVar(&manifest, "manifest", "", "the image's manifest.json (default: beside the image)")
	f.StringVar(&kubectl, "kubectl", "", "host kubectl (default: the image's, from the artifact cache, else kubectl on PATH)")
	f.IntVar(&cpus, "cpus", 0, "vCPUs per VM (default 2; minions 1 under TCG)")
	f.IntVar(&memory, "memory", 0, "MiB of memory per VM (default 2048)")
	f.DurationVar(&timeout, "timeout", 30*time.Minute, "time for every node to turn Ready")
	f.BoolVar(&foreground, "foreground", false, "hold the cluster in this process (Ctrl-C stops it) instead of in the background")
	return cmd
}

// startHolder runs "cluster up --foreground" in a new session with its output in the state
// folder's log, and waits until the state file says ready or failed (or the holder dies).
func startHolder(cmd *cobra.Command, dir, name string) error {
	if st, err := verify.ReadClusterState(dir); err == nil {
		if verify.IsClusterHolderAlive(st) {
			return fmt.Errorf("cluster %s is already up (%s, process %d): kubebake cluster down %s first, or choose another --name", name, st.Phase, st.PID, name)
		}
		// A holder that died left its folder: its VMs died with it.
		if err := verify.RemoveClusterState(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, upLogName)
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	args := append([]string{}, os.Args[1:]...)
	holder := exec.Command(self, append(args, "--foreground")...)
	holder.Stdout, holder.Stderr = logFile, logFile
	holder.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := holder.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- holder.Wait() }()
	out := cmd.ErrOrStderr()
	fmt.Fprintf(out, "cluster %s: starting (process %d; log %s)\n", name, holder.Process.Pid, logPath)
	start := time.Now()
	lastStage := ""
	for {
		select {
		case <-cmd.Context().Done():
			// Ctrl-C while waiting: the holder is in its own session, stop it too.
			holder.Process.Signal(syscall.SIGTERM)
			<-exited
			verify.RemoveClusterState(dir)
			return cmd.Context().Err()
		case err := <-exited:
			st, _ := verify.ReadClusterState(dir)
			msg := "the background process exited"
			if err != nil {
				msg += " (" + err.Error() + ")"
			}
			if st != nil && st.Error != "" {
				msg = st.Error
			}
			return fmt.Errorf("cluster %s did not come up: %s\n%s", name, msg, tailFile(logPath, 15))
		case <-time.After(2 * time.Second):
		}
		if stage := lastProgress(logPath); stage != "" && stage != lastStage {
			fmt.Fprintf(out, "cluster %s: %s (%s)\n", name, stage, time.Since(start).Round(time.Second))
			lastStage = stage
		}
		st, err := verify.ReadClusterState(dir)
		if err != nil || st.Phase != verify.PhaseReady {
			continue
		}
		holder.Process.Release()
		fmt.Fprintf(out, "cluster %s: ready in %s\n", name, time.Since(start).Round(time.Second))
		return printClusterUp(cmd, st)
	}
}

func printClusterUp(cmd *cobra.Command, st *verify.ClusterState) error {
	return printResult(cmd, st, func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "cluster %s is up: %d nodes from %s\n", st.Name, len(st.Nodes), st.Image)
		fmt.Fprintf(&b, "  kubectl --kubeconfig %s get nodes\n", shell.Quote(st.Kubeconfig))
		fmt.Fprintf(&b, "  kubebake cluster kubectl %s -- get pods -A    (the image's own kubectl: %s)\n", st.Name, st.Kubectl)
		for _, n := range st.Nodes {
			fmt.Fprintf(&b, "  %-24s %-7s %-11s %s\n", n.Name, n.Role, n.IP, n.SSH)
		}
		fmt.Fprintf(&b, "  kubebake cluster down %s    (stops the VMs and removes their disks)\n", st.Name)
		return b.String()
	})
}

// holdCluster boots the cluster and keeps it until the context ends (SIGTERM from "down",
// or Ctrl-C), then stops the VMs and removes the state folder.
func holdCluster(ctx context.Context, cmd *cobra.Command, dir string, opts verify.UpOptions) error {
	if st, err := verify.ReadClusterState(dir); err == nil && st.PID != os.Getpid() && verify.IsClusterHolderAlive(st) {
		return fmt.Errorf("cluster %s is already up (process %d)", opts.Name, st.PID)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	opts.Progress = func(node, stage string) {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s %s: %s\n", progressMark, node, stage)
	}
	lc, err := verify.Up(ctx, opts)
	if err != nil {
		if errors.Is(err, context.Canceled) && lc != nil {
			lc.Stop()
		}
		return err
	}
	st := lc.State()
	if err := printClusterUp(cmd, &st); err != nil {
		lc.Stop()
		return err
	}
	<-ctx.Done()
	fmt.Fprintf(cmd.ErrOrStderr(), "cluster %s: stopping\n", opts.Name)
	if err := lc.Stop(); err != nil {
		return err
	}
	return nil
}

// progressMark starts the holder's progress lines, which "up" shows while it waits.
const progressMark = "cluster-progress"

// lastProgress is the holder's last progress line ("kubebake-master: boot").
func lastProgress(logPath string) string {
	data, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	last := ""
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, progressMark+" "); ok {
			last = rest
		}
	}
	return last
}

func tailFile(p string, n int) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "last lines of " + p + ":\n  " + strings.Join(lines, "\n  ")
}

// loadCluster reads cluster name's state, or says how to start it.
func loadCluster(name string) (string, *verify.ClusterState, error) {
	dir, err := verify.ClusterStateDir(name)
	if err != nil {
		return "", nil, err
	}
	st, err := verify.ReadClusterState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return dir, nil, fmt.Errorf("no cluster %s (nothing in %s): start one with kubebake cluster up IMAGE --name %s", name, dir, name)
	}
	return dir, st, err
}

func clusterStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a local cluster's nodes (role, Ready, address) and kube-system pods",
		Long: `status reads the cluster's state folder and asks its API server for the nodes and the
kube-system pods. With --output json it prints the state (kubeconfig and kubectl paths, SSH
commands) and the status together.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, st, err := loadCluster(args[0])
			if err != nil {
				return err
			}
			alive := verify.IsClusterHolderAlive(st)
			type result struct {
				*verify.ClusterState
				Running bool                  `json:"running"`
				Status  *verify.ClusterStatus `json:"status,omitempty"`
				Problem string                `json:"problem,omitempty"`
			}
			res := result{ClusterState: st, Running: alive}
			switch {
			case !alive:
				res.Problem = fmt.Sprintf("its process %d is gone, and its VMs with it: kubebake cluster down %s cleans up", st.PID, st.Name)
			case st.Phase != verify.PhaseReady:
				res.Problem = "still " + st.Phase
			default:
				ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
				defer cancel()
				if res.Status, err = verify.QueryClusterStatus(ctx, st); err != nil {
					res.Problem = "the API server did not answer: " + err.Error()
				}
			}
			if err := printResult(cmd, res, func() string { return clusterStatusText(st, res.Status, res.Problem) }); err != nil {
				return err
			}
			if res.Problem != "" {
				return fmt.Errorf("cluster %s is not healthy (see the problem above)", st.Name)
			}
			return nil
		},
	}
}

func clusterStatusText(st *verify.ClusterState, status *verify.ClusterStatus, problem string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster %s (%s, from %s)\n", st.Name, st.Phase, st.Image)
	fmt.Fprintf(&b, "kubeconfig: %s\nkubectl:    %s\n\n", st.Kubeconfig, st.Kubectl)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tREADY\tIP\tPOD CIDR\tUSER-DATA")
	for _, n := range st.Nodes {
		ready, cidr := "?", ""
		if status != nil {
			ready = "not registered"
			for _, s := range status.Nodes {
				if s.Name == n.Name {
					ready, cidr = fmt.Sprint(s.Ready), s.PodCIDR
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Role, ready, n.IP, cidr, n.UserData)
	}
	tw.Flush()
	if status != nil {
		b.WriteString("\n")
		tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KUBE-SYSTEM POD\tNODE\tPHASE\tIP")
		for _, p := range status.SystemPods {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Node, p.Phase, p.IP)
		}
		tw.Flush()
	}
	if problem != "" {
		fmt.Fprintf(&b, "\nproblem: %s\n", problem)
	}
	return b.String()
}

func clusterKubectlCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "kubectl NAME -- ARGS...",
		Short: "Run the image's own kubectl against a local cluster",
		Example: `  kubebake cluster kubectl kubebake -- get nodes -o wide
  kubebake cluster kubectl kubebake -- -n kube-system logs deploy/coredns`,
		Args:               cobra.MinimumNArgs(1),
		DisableFlagParsing: false,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, st, err := loadCluster(args[0])
			if err != nil {
				return err
			}
			if st.Kubeconfig == "" || st.Kubectl == "" {
				return fmt.Errorf("cluster %s has no kubeconfig yet (%s)", st.Name, st.Phase)
			}
			k := exec.CommandContext(cmd.Context(), st.Kubectl, append([]string{"--kubeconfig", st.Kubeconfig}, args[1:]...)...)
			k.Stdin, k.Stdout, k.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := k.Run(); err != nil {
				var exit *exec.ExitError
				if errors.As(err, &exit) {
					os.Exit(exit.ExitCode()) // kubectl said why on stderr
				}
				return err
			}
			return nil
		},
	}
}

func clusterDownCmd() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "down NAME",
		Short: "Stop a local cluster's VMs and remove their disks and its state folder",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, st, err := loadCluster(args[0])
			if err != nil {
				return err
			}
			if verify.IsClusterHolderAlive(st) {
				if err := stopHolder(st, wait); err != nil {
					return fmt.Errorf("cluster %s: %w", st.Name, err)
				}
			}
			if err := verify.RemoveClusterState(dir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s is down: its VMs are stopped and %s is removed\n", st.Name, dir)
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "time for the VMs to stop before they are killed")
	return cmd
}

// stopHolder asks the holder to stop (SIGTERM: it stops its VMs and removes their disks)
// and kills it after wait; its QEMU processes die with it (they have a parent-death signal).
func stopHolder(st *verify.ClusterState, wait time.Duration) error {
	p, err := os.FindProcess(st.PID)
	if err != nil {
		return err
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil // already gone
	}
	// Not Signal(0): a holder that exited may linger as a zombie; the check reads /proc.
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if !verify.IsClusterHolderAlive(st) {
			return nil
		}
	}
	p.Signal(syscall.SIGKILL)
	for range 50 {
		if !verify.IsClusterHolderAlive(st) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("process %d did not stop", st.PID)
}
