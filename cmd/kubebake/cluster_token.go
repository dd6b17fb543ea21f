package main

import (
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/redact"
)

// clusterTokenCmd mints a join token for one node on a running cluster and writes that node's
// user-data: how a node joins after the master's first boot (its --join list) has passed.
func clusterTokenCmd() *cobra.Command {
	var (
		flags      userDataFlags
		kubeconfig string
		local      string
		kubectl    string
		ttl        time.Duration
		format     string
		out        string
	)
	cmd := &cobra.Command{
		Use:   "token NODE --bundle FILE (--kubeconfig FILE | --cluster NAME) [--out FILE]",
		Short: "Mint a join token bound to NODE on a running cluster and write NODE's user-data",
		Long: `Mint a fresh join token for node NODE on a running cluster and write the user-data that makes
a machine of the golden image join as NODE (role minion unless --role says another).

The token is a bootstrap token Secret created through the cluster's API with its admin
kubeconfig (--kubeconfig FILE, or --cluster NAME for a local cluster of "kubebake cluster up").
It is bound to NODE: the master's kubebake-csr-approver approves a client certificate for NODE
only, and deletes the token once NODE has registered. It expires after --ttl (default: the
bundle's joinTokenTTL, 24h unless set). The user-data names the machine NODE and carries the
token, not the bundle's; it is a secret: --out FILE writes it 0600.`,
		Example: `  kubebake cluster token prod-minion-7 --bundle prod.bundle.yaml --kubeconfig admin.conf --out prod-minion-7.yaml
  kubebake cluster token prod-minion-8 --bundle prod.bundle.yaml --kubeconfig admin.conf --ttl 2h --format ignition --out m8.ign`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := cloudinit.ParseFormat(format)
			if err != nil {
				return fmt.Errorf("--format: %w", err)
			}
			if flags.role == cloudinit.RoleMaster {
				return fmt.Errorf("--role master: the master does not join with a token; use kubebake userdata --role master")
			}
			flags.hostname = args[0]
			b, opts, err := flags.load()
			if err != nil {
				return err
			}
			if ttl == 0 {
				if ttl, err = b.TokenTTL(); err != nil {
					return fmt.Errorf("bundle %s: %w", flags.bundle, err)
				}
			}
			kc, bin, err := clusterAccess(kubeconfig, local, kubectl)
			if err != nil {
				return err
			}
			token, err := cloudinit.NewBootstrapToken(nil)
			if err != nil {
				return err
			}
			secret, err := cloudinit.JoinTokenSecret(token, args[0], ttl, time.Now())
			if err != nil {
				return err
			}
			// The token goes to kubectl on stdin, never in its argv.
			apply := exec.CommandContext(cmd.Context(), bin, "--kubeconfig", kc, "apply", "-f", "-")
			apply.Stdin = strings.NewReader(string(secret))
			if outp, err := apply.CombinedOutput(); err != nil {
				return fmt.Errorf("creating the join token with %s --kubeconfig %s: %v: %s", bin, kc, err, redact.New(token).String(strings.TrimSpace(string(outp))))
			}
			id, _, _ := strings.Cut(token, ".")
			slog.Info("join token created", "node", args[0], "id", id, "ttl", ttl)
			opts.JoinToken = token
			return writeUserData(cmd, b, flags.role, f, opts, out)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&flags.role, "role", cloudinit.RoleMinion, "the node's role: minion, or a custom role of --roles-from")
	fl.StringVar(&flags.bundle, "bundle", "", "cluster bundle FILE (from \"kubebake cluster init\")")
	fl.StringVar(&flags.sshKey, "ssh-key", "", "authorized_keys FILE of SSH public keys to install")
	fl.StringVar(&flags.sshUser, "ssh-user", "root", "user that receives --ssh-key")
	fl.StringVar(&flags.rolesFrom, "roles-from", "", "recipe (NAME or PATH) whose custom roles are allowed too")
	fl.StringVar(&kubeconfig, "kubeconfig", "", "the cluster's admin kubeconfig FILE")
	fl.StringVar(&local, "cluster", "", "a local cluster NAME of \"kubebake cluster up\" (its kubeconfig and kubectl)")
	fl.StringVar(&kubectl, "kubectl", "", "kubectl to run (default: kubectl on PATH, or the local cluster's)")
	fl.DurationVar(&ttl, "ttl", 0, "how long the token lives (default: the bundle's joinTokenTTL)")
	fl.StringVar(&format, "format", string(cloudinit.FormatCloudConfig), "user-data format: "+formatNames())
	fl.StringVar(&out, "out", "", "write the user-data to FILE (mode 0600) instead of standard output")
	cmd.MarkFlagRequired("bundle")
	cmd.MarkFlagsMutuallyExclusive("kubeconfig", "cluster")
	cmd.MarkFlagsOneRequired("kubeconfig", "cluster")
	return cmd
}

// clusterAccess is the admin kubeconfig and kubectl of a cluster: given, or a local cluster's.
func clusterAccess(kubeconfig, local, kubectl string) (kc, bin string, err error) {
	kc, bin = kubeconfig, kubectl
	if local != "" {
		_, st, err := loadCluster(local)
		if err != nil {
			return "", "", err
		}
		if st.Kubeconfig == "" {
			return "", "", fmt.Errorf("cluster %s has no admin kubeconfig yet (phase %s): wait for kubebake cluster status %s to say ready", local, st.Phase, local)
		}
		kc = st.Kubeconfig
		if bin == "" {
			bin = st.Kubectl
		}
	}
	if bin == "" {
		bin = "kubectl"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", "", fmt.Errorf("kubectl %q: %w (give --kubectl PATH)", bin, err)
	}
	return kc, p, nil
}
