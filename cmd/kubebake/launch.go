package main

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	kbaws "github.com/kubebake/kubebake/artifacts/aws"
	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/recipes"
)

func init() {
	var (
		af                            awsFlags
		ami, bundle, format           string
		sshKey, sshUser, rolesFrom    string
		roles                         []string
		count                         int
		instanceType, subnet, keyName string
		securityGroups                []string
	)
	cmd := &cobra.Command{
		Use:   "aws --ami ID --role master|minion|master,minion --bundle FILE [--count N] [--instance-type T] [--subnet S]",
		Short: "Launch instances of a published AMI, each taking its role from its user-data",
		Long: `Launch instances of a kubebake AMI with RunInstances. Each gets the user-data of its role, as
"kubebake userdata" makes it (cloud-config by default, or --format ignition), so it writes
/etc/sysconfig/kubernetes-ROLE at first boot and comes up as that role. Instances are tagged
Name=CLUSTER-ROLE, kubebake:cluster, kubebake:role and kubernetes.io/cluster/CLUSTER=owned,
with the cluster name of the bundle, and require IMDSv2.

--role master,minion launches one master, then --count minions whose user-data points at the
master's private address (RunInstances gives it before the instance boots). Minions launched
on their own join the bundle's masterEndpoint ("kubebake cluster init --master-endpoint").
Minions join with the bundle's shared join token, which the master approves for new node
names only; it expires after the bundle's joinTokenTTL.`,
		Example: `  kubebake launch aws --region eu-west-1 --ami ami-0123456789abcdef0 --role master,minion --count 2 --bundle demo.bundle.yaml --subnet subnet-0abc
  kubebake launch aws --region eu-west-1 --ami ami-0123456789abcdef0 --role minion --count 3 --bundle demo.bundle.yaml --format ignition`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := cloudinit.ParseFormat(format)
			if err != nil {
				return fmt.Errorf("--format: %w", err)
			}
			if f == cloudinit.FormatButane {
				return fmt.Errorf("--format butane: EC2 user-data must be cloud-config, ignition or shell (butane is the source Ignition is made from)")
			}
			opts := cloudinit.Options{SSHUser: sshUser}
			if rolesFrom != "" {
				r, err := recipes.Load(rolesFrom)
				if err != nil {
					return fmt.Errorf("--roles-from: %w", err)
				}
				opts.Roles = cloudinit.RolesFromRecipe(r)
			}
			plan, err := launchPlan(roles, count, opts.Roles)
			if err != nil {
				return err
			}
			b, err := cloudinit.LoadBundle(bundle)
			if err != nil {
				return err
			}
			if sshKey != "" {
				if opts.SSHAuthorizedKeys, err = cloudinit.ReadAuthorizedKeys(sshKey); err != nil {
					return err
				}
			}
			s, err := af.session(cmd.Context())
			if err != nil {
				return err
			}
			res, err := s.Launch(cmd.Context(), kbaws.LaunchRequest{
				ImageID: ami, Cluster: b.ClusterName, Roles: plan, InstanceType: instanceType, SubnetID: subnet,
				SecurityGroups: securityGroups, KeyName: keyName,
				UserData: func(role, masterIP string) ([]byte, error) {
					return cloudinit.Render(bundleFor(b, role, masterIP), role, f, opts)
				},
			})
			if err != nil && (res == nil || len(res.Instances) == 0) {
				return err
			}
			if perr := printResult(cmd, res, func() string { return launchText(res) }); perr != nil {
				return perr
			}
			return err
		},
	}
	af.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&ami, "ami", "", "the AMI to launch (publish-aws.json names it per region)")
	fl.StringSliceVar(&roles, "role", nil, "role to launch: master, minion, a custom role of --roles-from, or master,minion")
	fl.StringVar(&bundle, "bundle", "", "cluster bundle FILE (from \"kubebake cluster init\")")
	fl.IntVar(&count, "count", 1, "instances of the role (with master,minion: minions; there is one master)")
	fl.StringVar(&instanceType, "instance-type", "t3.medium", "EC2 instance type")
	fl.StringVar(&subnet, "subnet", "", "subnet id (default: the default VPC's)")
	fl.StringSliceVar(&securityGroups, "security-group", nil, "security group ids, comma-separated (default: the VPC's default group)")
	fl.StringVar(&keyName, "key-name", "", "EC2 key pair name, for SSH as the image's default user")
	fl.StringVar(&format, "format", string(cloudinit.FormatCloudConfig), "user-data format: cloud-config, ignition or shell")
	fl.StringVar(&sshKey, "ssh-key", "", "authorized_keys FILE of SSH public keys to install")
	fl.StringVar(&sshUser, "ssh-user", "root", "user that receives --ssh-key")
	fl.StringVar(&rolesFrom, "roles-from", "", "recipe (NAME or PATH) whose custom roles are allowed too")
	cmd.MarkFlagRequired("ami")
	cmd.MarkFlagRequired("role")
	cmd.MarkFlagRequired("bundle")
	launchCmd.AddCommand(cmd)
}

// launchPlan turns --role and --count into roles to launch, the master first.
func launchPlan(roles []string, count int, allowed []string) ([]kbaws.RoleCount, error) {
	if count < 1 {
		return nil, fmt.Errorf("--count %d: launch at least 1", count)
	}
	var plan []kbaws.RoleCount
	for _, r := range roles {
		if err := cloudinit.ValidateRole(r, allowed); err != nil {
			return nil, fmt.Errorf("--role: %w", err)
		}
		if slices.ContainsFunc(plan, func(p kbaws.RoleCount) bool { return p.Role == r }) {
			return nil, fmt.Errorf("--role %s is given twice", r)
		}
		plan = append(plan, kbaws.RoleCount{Role: r, Count: count})
	}
	if len(plan) > 1 {
		// With the master in the set there is one master; the count is the other roles'.
		slices.SortStableFunc(plan, func(a, b kbaws.RoleCount) int {
			return btoi(b.Role == cloudinit.RoleMaster) - btoi(a.Role == cloudinit.RoleMaster)
		})
		if plan[0].Role == cloudinit.RoleMaster {
			plan[0].Count = 1
		}
	}
	return plan, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bundleFor is the bundle a role's user-data is made from: the master launched with it
// becomes the other roles' master endpoint (the port stays the bundle's).
func bundleFor(b *cloudinit.Bundle, role, masterIP string) *cloudinit.Bundle {
	if masterIP == "" || role == cloudinit.RoleMaster {
		return b
	}
	cp := *b
	port := "6443"
	if _, p, err := net.SplitHostPort(b.MasterEndpoint); err == nil {
		port = p
	}
	cp.MasterEndpoint = net.JoinHostPort(masterIP, port)
	return &cp
}

func launchText(res *kbaws.LaunchResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "launched %d instance(s) of %s in %s for cluster %s\n", len(res.Instances), res.ImageID, res.Region, res.Cluster)
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INSTANCE\tROLE\tPRIVATE IP\tSTATE")
	for _, in := range res.Instances {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", in.ID, in.Role, dash(in.PrivateIP), in.State)
	}
	w.Flush()
	return b.String()
}
