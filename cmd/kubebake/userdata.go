package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/recipes"
)

// userDataFlags are the flags userdata and seed share.
type userDataFlags struct {
	role, bundle, sshKey, sshUser, rolesFrom, advertise, hostname string
	join                                                          []string
}

func (u *userDataFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&u.role, "role", "", "node role: master, minion, or a custom role of --roles-from")
	f.StringVar(&u.bundle, "bundle", "", "cluster bundle FILE (from \"kubebake cluster init\")")
	f.StringVar(&u.sshKey, "ssh-key", "", "authorized_keys FILE of SSH public keys to install")
	f.StringVar(&u.sshUser, "ssh-user", "root", "user that receives --ssh-key")
	f.StringVar(&u.rolesFrom, "roles-from", "", "recipe (NAME or PATH) whose custom roles are allowed too")
	f.StringVar(&u.advertise, "advertise-address", "", "address the master's API server advertises (master only)")
	f.StringVar(&u.hostname, "hostname", "", "the node's host name and Kubernetes node name (nodes of one cluster need distinct names); a named node joins with its own token, bound to the name")
	f.StringSliceVar(&u.join, "join", nil, "master only: NODE,... whose join tokens the master creates at first boot, each bound to its name (the minions' --hostname)")
	cmd.MarkFlagRequired("role")
	cmd.MarkFlagRequired("bundle")
}

// load reads the bundle and turns the flags into render options.
func (u *userDataFlags) load() (*cloudinit.Bundle, cloudinit.Options, error) {
	opts := cloudinit.Options{SSHUser: u.sshUser, AdvertiseAddress: u.advertise, Hostname: u.hostname, JoinNodes: u.join}
	if u.rolesFrom != "" {
		r, err := recipes.Load(u.rolesFrom)
		if err != nil {
			return nil, opts, fmt.Errorf("--roles-from: %w", err)
		}
		opts.Roles = cloudinit.RolesFromRecipe(r)
	}
	// The role first: a typo in it is the cheaper mistake to report.
	if err := cloudinit.ValidateRole(u.role, opts.Roles); err != nil {
		return nil, opts, err
	}
	b, err := cloudinit.LoadBundle(u.bundle)
	if err != nil {
		return nil, opts, err
	}
	if u.sshKey != "" {
		if opts.SSHAuthorizedKeys, err = cloudinit.ReadAuthorizedKeys(u.sshKey); err != nil {
			return nil, opts, err
		}
	}
	return b, opts, nil
}

func formatNames() string {
	names := make([]string, len(cloudinit.Formats))
	for i, f := range cloudinit.Formats {
		names[i] = string(f)
	}
	return strings.Join(names, "|")
}

// userDataResult is what `kubebake userdata` reports: where it wrote the user-data, or with
// no --out and -o json, the user-data itself.
type userDataResult struct {
	Role     string `json:"role"`
	Format   string `json:"format"`
	Path     string `json:"path,omitempty"`
	Mode     string `json:"mode,omitempty"`
	UserData string `json:"userData,omitempty"`
}

func init() {
	var (
		flags  userDataFlags
		format string
		out    string
	)
	cmd := &cobra.Command{
		Use:   "userdata --role ROLE --bundle FILE [--format " + formatNames() + "] [--out FILE]",
		Short: "Print the user-data that makes a node of the golden image take a role",
		Long: `Print user-data that writes the role marker /etc/sysconfig/kubernetes-ROLE and the cluster
settings /etc/kubebake/cluster.env (and, for the master, the cluster CA) as
docs/node-contract.md says.

  cloud-config  #cloud-config with write_files, for cloud-init (NoCloud seed, EC2, ...)
  ignition      Ignition JSON (spec 3.4.0) for kubebake-ignition (QEMU fw_cfg, EC2)
  butane        the Butane config (variant flatcar 1.1.0) the Ignition JSON is made from
  shell         a #!/bin/sh script: mkdir, heredocs, touch the marker

Join tokens: a minion named with --hostname NODE joins with its own token, derived from the
bundle and bound to NODE: the master approves a certificate for that name only, and only if its
user-data lists NODE in --join. A minion without a name (one user-data for many machines, as an
autoscaling group needs) joins with the bundle's shared token, which the master approves only
for a name no node has yet. Every token expires (the bundle's joinTokenTTL, 24h by default);
for a node that joins later, "kubebake cluster token NODE" mints a fresh one.

User-data holds a join token (and for the master the CA key): --out FILE writes it with
mode 0600 and reports where. Without --out the user-data itself goes to stdout; with -o json
it comes as the "userData" string of a JSON object that also names the role and format.`,
		Example: `  kubebake userdata --role master --bundle demo.bundle.yaml --join demo-minion-1,demo-minion-2 --ssh-key ~/.ssh/id_ed25519.pub --out master.yaml
  kubebake userdata --role minion --bundle demo.bundle.yaml --hostname demo-minion-1 --format ignition --out minion-1.ign
  kubebake userdata --role minion --bundle demo.bundle.yaml --out any-minion.yaml   # shared token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := cloudinit.ParseFormat(format)
			if err != nil {
				return fmt.Errorf("--format: %w", err)
			}
			b, opts, err := flags.load()
			if err != nil {
				return err
			}
			return writeUserData(cmd, b, flags.role, f, opts, out)
		},
	}
	flags.register(cmd)
	cmd.Flags().StringVar(&format, "format", string(cloudinit.FormatCloudConfig), "user-data format: "+formatNames())
	cmd.Flags().StringVar(&out, "out", "", "write the user-data to FILE (mode 0600) instead of standard output (\"-\": standard output)")
	rootCmd.AddCommand(cmd)
}

// writeUserData renders a role's user-data and writes it to out (mode 0600), or to stdout
// when out is "" or "-" (inside a JSON result with -o json).
func writeUserData(cmd *cobra.Command, b *cloudinit.Bundle, role string, f cloudinit.Format, opts cloudinit.Options, out string) error {
	data, err := cloudinit.Render(b, role, f, opts)
	if err != nil {
		return err
	}
	res := userDataResult{Role: role, Format: string(f)}
	if out == "" || out == "-" {
		if globals.output == "json" {
			res.UserData = string(data)
			return printResult(cmd, res, nil)
		}
		_, err = cmd.OutOrStdout().Write(data)
		return err
	}
	if err := atomicfile.WriteFile(out, data, 0o600); err != nil {
		return err
	}
	res.Path, res.Mode = out, "0600"
	return printResult(cmd, res, func() string {
		return fmt.Sprintf("wrote %s user-data for role %s to %s (mode 0600)\n", f, role, out)
	})
}
