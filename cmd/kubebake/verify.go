package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/verify"
)

func init() {
	var (
		role, userData, junit, accel, manifest, bundle, artifacts string
		keep, cluster                                             bool
		parallel, minions                                         int
		tBoot, tSSH, tSettle, tChecks                             time.Duration
		clusterName, subnet, kubectl, stepTimeouts                string
	)
	cmd := &cobra.Command{
		Use:   "verify IMAGE|OUTDIR",
		Short: "Boot an image once per role and prove each of its promises from inside",
		Long: `verify boots the image in QEMU once per role (and user-data kind) on a throwaway
copy-on-write overlay, gives it the role's user-data and an ephemeral SSH key, and runs the
checks the image's manifest implies: binaries and versions, sysctls and their source, kernel
modules loaded before systemd-sysctl, overlay storage, CNI plugins and host tools, the role's
units active and the other roles' units skipped, no failed units, the API server ready on a
master, a minion waiting for its master, and image hygiene (machine-id, SSH host keys,
secrets). The guest network is QEMU user-mode with restrict=on: nothing leaves the host.

With --cluster it boots one master and --minions minions from the same image on a private
segment (a switch with DHCP by MAC inside this process), proves each node's role checks, then
runs the cluster smoke steps from the host: api-access, nodes, pod-reach, service, dns,
replace, reboot-minion, reboot-master (each a check "cluster/<step>" with its own timeout).

  kubebake verify out/debian-12                      both roles, cloud-init
  kubebake verify out/debian-12 --userdata both --junit verify.xml
  kubebake verify out/debian-12/image.qcow2 --role master --keep
  kubebake verify --cluster out/debian-12 --minions 2 --junit cluster.xml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kinds, byRole, err := parseUserDataFlag(userData)
			if err != nil {
				return err
			}
			progress := func(node, stage string) {
				fmt.Fprintf(cmd.ErrOrStderr(), "verify: %s: %s\n", node, stage)
			}
			if cluster {
				for _, f := range []string{"role", "parallel", "bundle"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--%s does not apply to --cluster: it boots one master and --minions minions with a bundle of its own", f)
					}
				}
				opts := verify.ClusterOptions{
					Image: args[0], Manifest: manifest, Minions: minions, Name: clusterName, Accel: accel,
					ArtifactsDir: artifacts, Kubectl: kubectl, Keep: keep, Progress: progress,
				}
				if len(byRole) > 0 || len(kinds) > 1 && userData != "both" {
					return fmt.Errorf("--userdata %q: --cluster takes one kind for every node (cloud-init or ignition) or both (the default mix)", userData)
				}
				if minions < 1 {
					return fmt.Errorf("--minions %d: a cluster needs at least one minion", minions)
				}
				if opts.Subnet, err = netip.ParsePrefix(subnet); err != nil {
					return fmt.Errorf("--subnet %q: %v (e.g. 10.88.0.0/24)", subnet, err)
				}
				// One kind for every node, or (both, the default) the cluster's mix.
				if userData != "both" && cmd.Flags().Changed("userdata") {
					for range minions + 1 {
						opts.UserData = append(opts.UserData, userData)
					}
				}
				// The single-node defaults are too short for three VMs on one host: only what
				// was given overrides the cluster's own.
				if cmd.Flags().Changed("timeout-boot") {
					opts.TimeoutBoot = tBoot
				}
				if cmd.Flags().Changed("timeout-ssh") {
					opts.TimeoutSSH = tSSH
				}
				if cmd.Flags().Changed("timeout-settle") {
					opts.TimeoutSettle = tSettle
				}
				if cmd.Flags().Changed("timeout-checks") {
					opts.TimeoutChecks = tChecks
				}
				if opts.StepTimeouts, err = parseStepTimeouts(stepTimeouts); err != nil {
					return err
				}
				rep, err := verify.RunCluster(cmd.Context(), opts)
				return finishVerify(cmd, rep, err, junit)
			}
			for _, f := range []string{"minions", "cluster-name", "subnet", "kubectl", "step-timeout"} {
				if cmd.Flags().Changed(f) {
					return fmt.Errorf("--%s is for --cluster", f)
				}
			}
			opts := verify.Options{
				Image: args[0], Manifest: manifest, Accel: accel, Keep: keep, Parallel: parallel,
				TimeoutBoot: tBoot, TimeoutSSH: tSSH, TimeoutSettle: tSettle, TimeoutChecks: tChecks, ArtifactsDir: artifacts,
				Progress: progress,
			}
			switch role {
			case "all", "":
			default:
				opts.Roles = []string{role}
			}
			opts.UserData, opts.RoleUserData = kinds, byRole
			if bundle != "" {
				b, err := cloudinit.LoadBundle(bundle)
				if err != nil {
					return err
				}
				opts.Bundle = b
			}
			rep, err := verify.Run(cmd.Context(), opts)
			return finishVerify(cmd, rep, err, junit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "all", "role to verify: master, minion (or a recipe's custom role) or all")
	f.StringVar(&userData, "userdata", verify.UserDataCloudInit, "user-data kind: cloud-init, ignition or both, and ROLE=KIND for a role booted only with KIND, e.g. cloud-init,master=ignition (--cluster: every node one kind; default a mix)")
	f.StringVar(&junit, "junit", "", "also write a JUnit XML report to this file")
	f.StringVar(&accel, "accel", verify.AccelAuto, "QEMU accelerator: auto (KVM if it really boots, else TCG), kvm or tcg")
	f.StringVar(&manifest, "manifest", "", "the image's manifest.json (default: beside the image, else the copy inside it)")
	f.StringVar(&bundle, "bundle", "", "cluster bundle for the user-data (default: a throwaway one, master endpoint 10.0.2.15:6443)")
	f.StringVar(&artifacts, "artifacts", "", "where to save serial logs and journals of failures (default: IMAGEDIR/verify)")
	f.BoolVar(&keep, "keep", false, "leave the VMs running after the checks and print the ssh command; Ctrl-C stops them")
	f.IntVar(&parallel, "parallel", 0, "VMs at once (default: one per two cores under TCG, one per core under KVM)")
	f.DurationVar(&tBoot, "timeout-boot", verify.DefaultTimeoutBoot, "time for the guest's SSH server to answer (--cluster default: 15m)")
	f.DurationVar(&tSSH, "timeout-ssh", verify.DefaultTimeoutSSH, "time for the user-data's key to let root log in (--cluster default: 5m)")
	f.DurationVar(&tSettle, "timeout-settle", verify.DefaultTimeoutSettle, "time for boot to settle: no start jobs left, a master's API server ready (--cluster default: 30m); verify stops at once if the VM exits or a role unit fails")
	f.DurationVar(&tChecks, "timeout-checks", verify.DefaultTimeoutChecks, "time for every check to run, after settle (--cluster default: 30m)")
	f.BoolVar(&cluster, "cluster", false, "boot one master and --minions minions as a cluster and run the cluster smoke steps")
	f.IntVar(&minions, "minions", verify.DefaultMinions, "minions in the --cluster")
	f.StringVar(&clusterName, "cluster-name", verify.DefaultClusterName, "--cluster name; nodes are NAME-master, NAME-minion-1, ...")
	f.StringVar(&subnet, "subnet", verify.DefaultClusterSubnet.String(), "--cluster segment: the master is .10, minion i .10+i")
	f.StringVar(&kubectl, "kubectl", "", "host kubectl for --cluster (default: the image's, from the artifact cache, else kubectl on PATH)")
	f.StringVar(&stepTimeouts, "step-timeout", "", "--cluster step timeouts, e.g. nodes=20m,reboot-master=40m (steps: "+strings.Join(verify.SmokeSteps, ", ")+")")
	rootCmd.AddCommand(cmd)
}

// parseUserDataFlag reads --userdata: comma-separated kinds (cloud-init, ignition, or both
// for the two) that every role boots with, and ROLE=KIND for a role that boots once, with
// that kind only. No plain kind means cloud-init.
func parseUserDataFlag(in string) (kinds []string, byRole map[string]string, err error) {
	add := func(k string) {
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	for _, e := range strings.Split(in, ",") {
		e = strings.TrimSpace(e)
		role, kind, perRole := strings.Cut(e, "=")
		switch {
		case perRole && role != "" && (kind == verify.UserDataCloudInit || kind == verify.UserDataIgnition):
			if byRole == nil {
				byRole = map[string]string{}
			}
			if prev, ok := byRole[role]; ok && prev != kind {
				return nil, nil, fmt.Errorf("--userdata %q: role %s given twice (%s and %s)", in, role, prev, kind)
			}
			byRole[role] = kind
		case perRole:
			return nil, nil, fmt.Errorf("--userdata %q: %q is not ROLE=KIND with KIND cloud-init or ignition (e.g. master=ignition)", in, e)
		case e == "both":
			add(verify.UserDataCloudInit)
			add(verify.UserDataIgnition)
		case e == verify.UserDataCloudInit, e == verify.UserDataIgnition:
			add(e)
		default:
			return nil, nil, fmt.Errorf("--userdata %q: %q is not a kind: use cloud-init, ignition, both or ROLE=KIND (e.g. cloud-init,master=ignition)", in, e)
		}
	}
	if len(kinds) == 0 {
		kinds = []string{verify.UserDataCloudInit}
	}
	return kinds, byRole, nil
}

// parseStepTimeouts reads --step-timeout's comma-separated STEP=DURATION pairs.
func parseStepTimeouts(in string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, kv := range strings.Split(in, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		step, v, _ := strings.Cut(kv, "=")
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("--step-timeout %s=%s: %v (e.g. %s=20m)", step, v, err, step)
		}
		out[step] = d
	}
	return out, nil
}

// finishVerify writes the report (stdout, --junit), keeps the VMs for --keep until Ctrl-C,
// and turns a failed report into the command's error.
func finishVerify(cmd *cobra.Command, rep *verify.Report, err error, junit string) error {
	if rep == nil {
		return err
	}
	if junit != "" {
		var b bytes.Buffer
		if werr := rep.WriteJUnit(&b); werr == nil {
			// 0600 like every verify artifact: the report quotes journal lines.
			if werr = atomicfile.WriteFile(junit, b.Bytes(), 0o600); werr != nil {
				return werr
			}
		}
	}
	if perr := printResult(cmd, rep, func() string {
		var b bytes.Buffer
		rep.WriteText(&b)
		return b.String()
	}); perr != nil {
		return perr
	}
	if err != nil {
		rep.StopKept()
		return err
	}
	if rep.Kept() {
		fmt.Fprintln(cmd.ErrOrStderr(), "verify: VMs kept running (--keep); press Ctrl-C to stop them")
		<-cmd.Context().Done()
		rep.StopKept()
	}
	if !rep.Pass {
		_, failed := rep.Counts()
		msg := fmt.Sprintf("verify failed: %d checks failed", failed)
		if rep.ArtifactsDir != "" {
			msg += "; serial logs and journals in " + rep.ArtifactsDir
		}
		return errors.New(msg)
	}
	return nil
}
