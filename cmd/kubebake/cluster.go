package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/cloudinit"
)

func init() {
	clusterCmd := &cobra.Command{
		Use:   "cluster",
		Short: "Cluster bundles, and local clusters of VMs from one image (up, status, kubectl, down)",
	}
	clusterCmd.AddCommand(clusterInitCmd(), clusterTokenCmd(), clusterUpCmd(), clusterStatusCmd(), clusterKubectlCmd(), clusterDownCmd())
	rootCmd.AddCommand(clusterCmd)
}

// clusterInitResult is what `kubebake cluster init` reports; the bundle's secrets (CA key,
// bootstrap token) stay in the file.
type clusterInitResult struct {
	Bundle         string `json:"bundle"` // the file written
	Cluster        string `json:"cluster"`
	MasterEndpoint string `json:"masterEndpoint"`
	CACertHash     string `json:"caCertHash"`
	Mode           string `json:"mode"`
}

func clusterInitCmd() *cobra.Command {
	var (
		endpoint string
		out      string
		force    bool
		keyType  string
		ttl      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "init NAME [--out FILE]",
		Short: "Write a new cluster bundle: CA, bootstrap token, master endpoint",
		Long: `Write a new cluster bundle (apiVersion kubebake.dev/v1alpha1, kind ClusterBundle): a fresh
cluster CA (CN kubernetes, ten years, as kubeadm makes it), a kubeadm bootstrap token (the
secret every node's join token is derived from), the CA's discovery hash and the master
endpoint. The bundle holds the CA key: it is written with mode
0600 and never replaced without --force. --out FILE ending in .json gives JSON, anything else
YAML. What was written (never the secrets) is reported on stdout, as JSON with -o json.`,
		Example: `  kubebake cluster init demo --out demo.bundle.yaml
  kubebake cluster init prod --master-endpoint 10.0.0.10:6443 --out prod.bundle.yaml -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := out
			if path == "" {
				path = args[0] + ".bundle.yaml"
			}
			b, err := cloudinit.NewBundle(args[0], cloudinit.BundleOptions{MasterEndpoint: endpoint, KeyType: cloudinit.KeyType(keyType), JoinTokenTTL: ttl})
			if err != nil {
				return err
			}
			if err := cloudinit.WriteBundle(path, b, force); err != nil {
				return err
			}
			slog.Debug("cluster bundle written", "path", path, "bundle", b)
			res := clusterInitResult{Bundle: path, Cluster: b.ClusterName, MasterEndpoint: b.MasterEndpoint, CACertHash: b.CACertHash, Mode: "0600"}
			return printResult(cmd, res, func() string {
				return fmt.Sprintf("wrote cluster bundle %s to %s (mode 0600)\n  master endpoint: %s\n  CA cert hash:    %s\n",
					res.Cluster, res.Bundle, res.MasterEndpoint, res.CACertHash)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpoint, "master-endpoint", cloudinit.DefaultMasterEndpoint, "HOST:PORT of the API server the minions join")
	f.StringVar(&out, "out", "", "bundle FILE to write (default NAME.bundle.yaml)")
	f.BoolVar(&force, "force", false, "replace an existing bundle (its CA is lost)")
	f.StringVar(&keyType, "key-type", string(cloudinit.KeyRSA2048), "CA key: rsa-2048 (kubeadm's default) or ecdsa-p256")
	f.DurationVar(&ttl, "join-token-ttl", 0, "how long each join token lives once the master creates it (default 24h, as kubeadm's)")
	return cmd
}
