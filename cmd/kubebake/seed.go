package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/cloudinit"
)

// seedResult is what `kubebake seed` reports.
type seedResult struct {
	Path   string `json:"path"`
	Role   string `json:"role"`
	Format string `json:"format"`
	Label  string `json:"label"`
	Mode   string `json:"mode"`
}

func init() {
	var (
		flags       userDataFlags
		format, out string
		instanceID  string
	)
	cmd := &cobra.Command{
		Use:   "seed --role ROLE --bundle FILE --out seed.iso",
		Short: "Write a NoCloud seed ISO (label cidata) that gives a node its role",
		Long: `Write a cloud-init NoCloud seed: an ISO9660 image labelled cidata holding user-data (as
"kubebake userdata" renders it) and meta-data (instance-id, local-hostname). Attach it to a VM
as a CD-ROM or disk. The seed holds secrets and is written with mode 0600 to --out FILE; what
was written is reported on stdout, as JSON with -o json.`,
		Example: `  kubebake seed --role master --bundle demo.bundle.yaml --ssh-key ~/.ssh/id_ed25519.pub --out master-seed.iso
  qemu-system-x86_64 ... -drive file=master-seed.iso,media=cdrom,readonly=on`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out FILE is required: where to write the seed ISO")
			}
			f, err := cloudinit.ParseFormat(format)
			if err != nil {
				return fmt.Errorf("--format: %w", err)
			}
			if err := cloudinit.CheckSeedFormat(f); err != nil {
				return err
			}
			b, opts, err := flags.load()
			if err != nil {
				return err
			}
			so := cloudinit.SeedOptions{Options: opts, Format: f, InstanceID: instanceID}
			if err := cloudinit.Seed(out, b, flags.role, so); err != nil {
				return err
			}
			res := seedResult{Path: out, Role: flags.role, Format: string(f), Label: cloudinit.SeedLabel, Mode: "0600"}
			return printResult(cmd, res, func() string {
				return fmt.Sprintf("wrote NoCloud seed for role %s to %s (label %s, mode 0600)\n", res.Role, res.Path, res.Label)
			})
		},
	}
	flags.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&format, "format", string(cloudinit.FormatCloudConfig), "user-data format: cloud-config or shell")
	fl.StringVar(&out, "out", "", "seed ISO FILE to write (required)")
	fl.StringVar(&instanceID, "instance-id", "", "meta-data instance-id (default derived from the user-data)")
	rootCmd.AddCommand(cmd)
}
