package main

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/verify"
)

func init() {
	var (
		role, userData, junit, accel, manifest, bundle, artifacts string
		keep                                                      bool
		parallel                                                  int
		tBoot, tSSH, tChecks                                      time.Duration
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

  kubebake verify out/debian-12                      both roles, cloud-init
  kubebake verify out/debian-12 --userdata both --junit verify.xml
  kubebake verify out/debian-12/image.qcow2 --role master --keep`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := verify.Options{
				Image: args[0], Manifest: manifest, Accel: accel, Keep: keep, Parallel: parallel,
				TimeoutBoot: tBoot, TimeoutSSH: tSSH, TimeoutChecks: tChecks, ArtifactsDir: artifacts,
			}
			switch role {
			case "all", "":
			default:
				opts.Roles = []string{role}
			}
			switch userData {
			case "both":
				opts.UserData = []string{verify.UserDataCloudInit, verify.UserDataIgnition}
			case verify.UserDataCloudInit, verify.UserDataIgnition:
				opts.UserData = []string{userData}
			default:
				return fmt.Errorf("--userdata %q: use cloud-init, ignition or both", userData)
			}
			if bundle != "" {
				b, err := cloudinit.LoadBundle(bundle)
				if err != nil {
					return err
				}
				opts.Bundle = b
			}
			opts.Progress = func(node, stage string) {
				fmt.Fprintf(cmd.ErrOrStderr(), "verify: %s: %s\n", node, stage)
			}
			ctx := cmd.Context()
			rep, err := verify.Run(ctx, opts)
			if rep == nil {
				return err
			}
			if junit != "" {
				var b bytes.Buffer
				if werr := rep.WriteJUnit(&b); werr == nil {
					if werr = atomicfile.WriteFile(junit, b.Bytes(), 0o644); werr != nil {
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
				<-ctx.Done()
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
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "all", "role to verify: master, minion (or a recipe's custom role) or all")
	f.StringVar(&userData, "userdata", verify.UserDataCloudInit, "user-data kind: cloud-init, ignition or both")
	f.StringVar(&junit, "junit", "", "also write a JUnit XML report to this file")
	f.StringVar(&accel, "accel", verify.AccelAuto, "QEMU accelerator: auto (KVM if it really boots, else TCG), kvm or tcg")
	f.StringVar(&manifest, "manifest", "", "the image's manifest.json (default: beside the image, else the copy inside it)")
	f.StringVar(&bundle, "bundle", "", "cluster bundle for the user-data (default: a throwaway one, master endpoint 10.0.2.15:6443)")
	f.StringVar(&artifacts, "artifacts", "", "where to save serial logs and journals of failures (default: IMAGEDIR/verify)")
	f.BoolVar(&keep, "keep", false, "leave the VMs running after the checks and print the ssh command; Ctrl-C stops them")
	f.IntVar(&parallel, "parallel", 0, "VMs at once (default: one per two cores under TCG, one per core under KVM)")
	f.DurationVar(&tBoot, "timeout-boot", verify.DefaultTimeoutBoot, "time for the guest's SSH server to answer")
	f.DurationVar(&tSSH, "timeout-ssh", verify.DefaultTimeoutSSH, "time for the user-data's key to let root log in")
	f.DurationVar(&tChecks, "timeout-checks", verify.DefaultTimeoutChecks, "time for boot to settle and every check to run")
	rootCmd.AddCommand(cmd)
}
