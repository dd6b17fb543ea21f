package cloudinit

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/kubebake/kubebake/recipes"
)

// Well-known roles and the paths of docs/node-contract.md.
const (
	RoleMaster = "master"
	RoleMinion = "minion"

	ClusterEnvPath = "/etc/kubebake/cluster.env"
	CACertPath     = "/etc/kubernetes/pki/ca.crt"
	CAKeyPath      = "/etc/kubernetes/pki/ca.key"

	// RolesTarget is the unit the role units hang off (recipes' catalog); the shell format
	// starts it again after writing the marker (see RenderShell).
	RolesTarget = recipes.RolesTarget
)

// Environment variable names in ClusterEnvPath (docs/node-contract.md).
const (
	EnvClusterName      = "KUBEBAKE_CLUSTER_NAME"
	EnvMasterEndpoint   = "KUBEBAKE_MASTER_ENDPOINT"
	EnvBootstrapToken   = "KUBEBAKE_BOOTSTRAP_TOKEN"
	EnvCACertHash       = "KUBEBAKE_CA_CERT_HASH"
	EnvAdvertiseAddress = "KUBEBAKE_ADVERTISE_ADDRESS"
	// EnvJoinTokens (master): "NODE=TOKEN,..." of the nodes the master expects; it creates
	// their tokens, each bound to its node name, on its first boot, then drops the line.
	EnvJoinTokens = "KUBEBAKE_JOIN_TOKENS"
	// EnvJoinTokenTTL (master): seconds a join token lives once created.
	EnvJoinTokenTTL = "KUBEBAKE_JOIN_TOKEN_TTL"
)

// DefaultRoles are the roles every image knows.
var DefaultRoles = []string{RoleMaster, RoleMinion}

// Options tune the user-data of every format.
type Options struct {
	// Roles are the roles user-data may select; nil means DefaultRoles. RolesFromRecipe adds a
	// recipe's custom roles.
	Roles []string
	// SSHAuthorizedKeys are public keys in authorized_keys format, for SSHUser.
	SSHAuthorizedKeys []string
	// SSHUser receives the keys; default "root".
	SSHUser string
	// AdvertiseAddress is the address a master's API server advertises (master only).
	AdvertiseAddress string
	// Hostname, when set, is the node's host name (and so its Kubernetes node name): written
	// to /etc/hostname by every format and set on the running system at first boot. Nodes of
	// one cluster need distinct names; a seed's meta-data local-hostname says the same.
	// A named node joins with its own token (Bundle.NodeToken), bound to the name.
	Hostname string
	// JoinNodes (master only) are the node names whose join tokens the master creates at its
	// first boot (Bundle.NodeToken). Nodes added later get a token from "kubebake cluster token".
	JoinNodes []string
	// JoinToken (not the master) overrides the node's join token, Bundle.NodeToken(Hostname):
	// a token minted for it on a running cluster ("kubebake cluster token").
	JoinToken string
}

// joinToken is the token a non-master node joins with: JoinToken, else the one derived for its
// name (the master must list the name in JoinNodes), else the bundle's shared token (one user-data
// for many nodes, as an autoscaling group needs; the master approves it only for a name no
// node has yet).
func (o Options) joinToken(b *Bundle) string {
	switch {
	case o.JoinToken != "":
		return o.JoinToken
	case o.Hostname != "":
		return b.NodeToken(o.Hostname)
	}
	return b.BootstrapToken
}

// File is one file user-data writes on a node.
type File struct {
	Path    string
	Mode    fs.FileMode
	Content []byte
	// Secret files hold the CA key or the token.
	Secret bool
}

// RolesFromRecipe returns DefaultRoles plus the recipe's role names, sorted, without repeats.
func RolesFromRecipe(r *recipes.Recipe) []string {
	roles := slices.Clone(DefaultRoles)
	for _, ro := range r.Roles {
		roles = append(roles, ro.Name)
	}
	sort.Strings(roles)
	return slices.Compact(roles)
}

// ValidateRole checks that role is one of known (DefaultRoles when known is empty).
func ValidateRole(role string, known []string) error {
	if len(known) == 0 {
		known = DefaultRoles
	}
	if role == "" {
		return fmt.Errorf("no role given: use --role with one of: %s", strings.Join(known, ", "))
	}
	if !slices.Contains(known, role) {
		hint := ""
		if !slices.Contains(DefaultRoles, role) {
			hint = "; a custom role must be declared in a recipe (--roles-from RECIPE)"
		}
		return fmt.Errorf("unknown role %q: known roles are %s%s", role, strings.Join(known, ", "), hint)
	}
	return recipes.CheckRoleName(role)
}

// ParseAuthorizedKeys reads public keys in authorized_keys format (blank lines and comments
// skipped) and checks each one.
func ParseAuthorizedKeys(data []byte) ([]string, error) {
	var keys []string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			if strings.Contains(line, "PRIVATE KEY") {
				return nil, fmt.Errorf("line %d is a private key: pass the public key (.pub) file", i+1)
			}
			return nil, fmt.Errorf("line %d is not an SSH public key: %v", i+1, err)
		}
		keys = append(keys, line)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no SSH public key found")
	}
	return keys, nil
}

// ReadAuthorizedKeys reads ParseAuthorizedKeys from a file.
func ReadAuthorizedKeys(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--ssh-key: %w", err)
	}
	keys, err := ParseAuthorizedKeys(data)
	if err != nil {
		return nil, fmt.Errorf("--ssh-key %s: %w", file, err)
	}
	return keys, nil
}

func (o Options) sshUser() string {
	if o.SSHUser == "" {
		return "root"
	}
	return o.SSHUser
}

var userRE = dnsLabelRE

// HostnamePath is where user-data writes Options.Hostname.
const HostnamePath = "/etc/hostname"

// nodeNameRE: a host name the kubelet keeps as its node name unchanged (a DNS label or
// dotted labels, lower case, at most 63 characters so it is also one label of kubeadm's).
var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)

func (o Options) validate(role string) error {
	if err := ValidateRole(role, o.Roles); err != nil {
		return err
	}
	if o.AdvertiseAddress != "" {
		if role != RoleMaster {
			return fmt.Errorf("an advertise address is for the master only, not role %q", role)
		}
		if !hostRE.MatchString(o.AdvertiseAddress) && net.ParseIP(o.AdvertiseAddress) == nil {
			return fmt.Errorf("advertise address %q is not an IP address or host name", o.AdvertiseAddress)
		}
	}
	if o.Hostname != "" && !nodeNameRE.MatchString(o.Hostname) {
		return fmt.Errorf("host name %q is not a valid Kubernetes node name: use lower-case letters, digits, '-' and '.', at most 63 characters", o.Hostname)
	}
	if len(o.JoinNodes) > 0 && role != RoleMaster {
		return fmt.Errorf("join nodes are for the master's user-data, not role %q", role)
	}
	for _, n := range o.JoinNodes {
		if !nodeNameRE.MatchString(n) {
			return fmt.Errorf("join node %q is not a valid Kubernetes node name: use lower-case letters, digits, '-' and '.', at most 63 characters", n)
		}
	}
	if o.JoinToken != "" {
		if role == RoleMaster {
			return errors.New("a join token is for a joining node, not the master")
		}
		if err := ValidateToken(o.JoinToken); err != nil {
			return fmt.Errorf("join token: %w", err)
		}
	}
	if u := o.sshUser(); u != "root" && !userRE.MatchString(u) {
		return fmt.Errorf("SSH user %q: use lower-case letters, digits and '-'", u)
	}
	for _, k := range o.SSHAuthorizedKeys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil || strings.ContainsAny(k, "\n\r") {
			return fmt.Errorf("SSH key %.30q... is not one authorized_keys line", k)
		}
	}
	return nil
}

// ClusterEnv renders /etc/kubebake/cluster.env for a role.
func ClusterEnv(b *Bundle, role string, opts Options) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Cluster settings for role %s, written by kubebake user-data. Secret: keep mode 0600.\n", role)
	kv := func(k, v string) { fmt.Fprintf(&sb, "%s=%s\n", k, v) }
	kv(EnvClusterName, b.ClusterName)
	kv(EnvMasterEndpoint, b.MasterEndpoint)
	if role == RoleMaster {
		var joins []string
		for _, n := range opts.JoinNodes {
			joins = append(joins, n+"="+b.NodeToken(n))
		}
		if len(joins) > 0 {
			kv(EnvJoinTokens, strings.Join(joins, ","))
		}
		ttl, _ := b.TokenTTL() // Validate checked it
		kv(EnvJoinTokenTTL, strconv.Itoa(int(ttl.Seconds())))
		kv(EnvBootstrapToken, b.BootstrapToken)
	} else {
		kv(EnvBootstrapToken, opts.joinToken(b))
	}
	kv(EnvCACertHash, b.CACertHash)
	if role == RoleMaster && opts.AdvertiseAddress != "" {
		kv(EnvAdvertiseAddress, opts.AdvertiseAddress)
	}
	return []byte(sb.String())
}

// NodeFiles is the one list of files user-data writes for a role; every format renders it.
// The marker comes last, so that whatever watches for it finds the settings already there.
// Only the master receives the CA key.
func NodeFiles(b *Bundle, role string, opts Options) ([]File, error) {
	if b == nil {
		return nil, fmt.Errorf("no cluster bundle")
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("cluster bundle: %w", err)
	}
	if err := opts.validate(role); err != nil {
		return nil, err
	}
	files := []File{{Path: ClusterEnvPath, Mode: 0o600, Content: ClusterEnv(b, role, opts), Secret: true}}
	if role == RoleMaster {
		files = append(files,
			File{Path: CACertPath, Mode: 0o644, Content: []byte(b.CACert)},
			File{Path: CAKeyPath, Mode: 0o600, Content: []byte(b.CAKey), Secret: true})
	}
	if opts.Hostname != "" {
		files = append(files, File{Path: HostnamePath, Mode: 0o644, Content: []byte(opts.Hostname + "\n")})
	}
	files = append(files, File{Path: recipes.MarkerPath(role), Mode: 0o644, Content: nil})
	return files, nil
}

// parentDirs lists the folders the files need, parents first, without / and /etc.
func parentDirs(files []File) []string {
	seen := map[string]bool{}
	var dirs []string
	for _, f := range files {
		var chain []string
		for d := path.Dir(f.Path); d != "/" && d != "." && d != "/etc"; d = path.Dir(d) {
			chain = append([]string{d}, chain...)
		}
		for _, d := range chain {
			if !seen[d] {
				seen[d] = true
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}
