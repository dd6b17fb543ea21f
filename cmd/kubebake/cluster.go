package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/cloudinit"
)

func init() {
	clusterCmd := &cobra.Command{
		Use:   "cluster",
		Short: "Cluster bundles, and local clusters of VMs from one image (up, status, kubectl, down)",
	}
	clusterCmd.AddCommand(clusterInitCmd(), clusterUpCmd(), clusterStatusCmd(), clusterKubectlCmd(), clusterDownCmd())
	rootCmd.AddCommand(clusterCmd)
}

func clusterInitCmd() *cobra.Command {
	var (
		endpoint string
		out      string
		force    bool
		keyType  string
	)
	cmd := &cobra.Command{
		Use:   "init NAME",
		Short: "Write a new cluster bundle: CA, bootstrap token, master endpoint",
		Long: `Write a new cluster bundle (apiVersion kubebake.dev/v1alpha1, kind ClusterBundle): a fresh
cluster CA (CN kubernetes, ten years, as kubeadm makes it), a kubeadm bootstrap token, the CA's
discovery hash and the master endpoint. The bundle holds the CA key: it is written with mode
0600 and never replaced without --force. FILE ending in .json gives JSON, anything else YAML.

Here -o/--output names the bundle FILE (it is not the global result format).`,
		Example: `  kubebake cluster init demo -o demo.bundle.yaml
  kubebake cluster init prod --master-endpoint 10.0.0.10:6443 -o prod.bundle.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				out = args[0] + ".bundle.yaml"
			}
			b, err := cloudinit.NewBundle(args[0], cloudinit.BundleOptions{MasterEndpoint: endpoint, KeyType: cloudinit.KeyType(keyType)})
			if err != nil {
				return err
			}
			if err := cloudinit.WriteBundle(out, b, force); err != nil {
				return err
			}
			slog.Debug("cluster bundle written", "path", out, "bundle", b)
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote cluster bundle %s to %s (mode 0600)\n  master endpoint: %s\n  CA cert hash:    %s\n",
				b.ClusterName, out, b.MasterEndpoint, b.CACertHash)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpoint, "master-endpoint", cloudinit.DefaultMasterEndpoint, "HOST:PORT of the API server the minions join")
	f.StringVarP(&out, "output", "o", "", "bundle FILE to write (default NAME.bundle.yaml)")
	f.BoolVar(&force, "force", false, "replace an existing bundle (its CA is lost)")
	f.StringVar(&keyType, "key-type", string(cloudinit.KeyRSA2048), "CA key: rsa-2048 (kubeadm's default) or ecdsa-p256")
	return cmd
}
