package cloudinit

import (
	"bytes"
	"fmt"
	"strings"

	butane "github.com/coreos/butane/config"
	butanecommon "github.com/coreos/butane/config/common"
	ignv34 "github.com/coreos/ignition/v2/config/v3_4"
	"github.com/coreos/vcontext/report"
	"gopkg.in/yaml.v3"

	"github.com/kubebake/kubebake/cloudinit/ignition"
	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/recipes"
)

// Format is a user-data format.
type Format string

const (
	FormatCloudConfig Format = "cloud-config"
	FormatShell       Format = "shell"
	FormatButane      Format = "butane"
	FormatIgnition    Format = "ignition"
)

// Formats lists every format, in the order help texts show them.
var Formats = []Format{FormatCloudConfig, FormatIgnition, FormatButane, FormatShell}

// ButaneVariant and ButaneVersion are the Butane dialect RenderButane writes. The flatcar
// variant is Butane's base schema with no distribution sugar (no boot_device, grub or FCOS
// mirroring), so it can only express plain files, units and users, which is exactly what a
// Debian node with kubebake-ignition applies; 1.1.0 translates to Ignition spec 3.4.0, which
// kubebake-ignition (ignition/v2 ParseCompatibleVersion, 3.0-3.6) reads.
const (
	ButaneVariant   = "flatcar"
	ButaneVersion   = "1.1.0"
	IgnitionVersion = "3.4.0"
)

// ParseFormat checks a --format value.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return "", fmt.Errorf("format %q: use one of %s", s, strings.Join(names, ", "))
}

// Render renders user-data for role in format.
func Render(b *Bundle, role string, format Format, opts Options) ([]byte, error) {
	switch format {
	case FormatCloudConfig:
		return RenderCloudConfig(b, role, opts)
	case FormatShell:
		return RenderShell(b, role, opts)
	case FormatButane:
		return RenderButane(b, role, opts)
	case FormatIgnition:
		return RenderIgnition(b, role, opts)
	}
	_, err := ParseFormat(string(format))
	return nil, err
}

// roleFiles is NodeFiles for a role whose name passes recipes.CheckRoleName, the one role-name
// grammar lint and the node layer use: every format renders through it, so user-data never
// writes a marker /etc/sysconfig/kubernetes-<role> for a role no recipe can declare.
func roleFiles(b *Bundle, role string, opts Options) ([]File, error) {
	files, err := NodeFiles(b, role, opts)
	if err != nil {
		return nil, err
	}
	if err := recipes.CheckRoleName(role); err != nil {
		return nil, fmt.Errorf("role: %w", err)
	}
	return files, nil
}

// --- cloud-config ---

type ccWriteFile struct {
	Path        string `yaml:"path"`
	Content     string `yaml:"content"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
}

type ccUser struct {
	Name              string   `yaml:"name"`
	Shell             string   `yaml:"shell"`
	LockPasswd        bool     `yaml:"lock_passwd"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
}

type cloudConfig struct {
	// Hostname makes cloud-init's set_hostname module name the node (it runs before the role
	// units); write_files also carries /etc/hostname, as every format does.
	Hostname          string        `yaml:"hostname,omitempty"`
	WriteFiles        []ccWriteFile `yaml:"write_files"`
	DisableRoot       *bool         `yaml:"disable_root,omitempty"`
	SSHAuthorizedKeys []string      `yaml:"ssh_authorized_keys,omitempty"`
	Users             []any         `yaml:"users,omitempty"`
}

// RenderCloudConfig renders #cloud-config user-data: write_files for NodeFiles (written by
// cloud-init.service, one of the marker writers the role units wait for) and, with SSH keys,
// ssh_authorized_keys for root (disable_root: false) or a users entry for another user.
func RenderCloudConfig(b *Bundle, role string, opts Options) ([]byte, error) {
	files, err := roleFiles(b, role, opts)
	if err != nil {
		return nil, err
	}
	cc := cloudConfig{Hostname: opts.Hostname}
	for _, f := range files {
		cc.WriteFiles = append(cc.WriteFiles, ccWriteFile{
			Path: f.Path, Content: string(f.Content), Owner: "root:root",
			Permissions: fmt.Sprintf("%04o", f.Mode.Perm()),
		})
	}
	if len(opts.SSHAuthorizedKeys) > 0 {
		if opts.sshUser() == "root" {
			no := false
			cc.DisableRoot = &no
			cc.SSHAuthorizedKeys = opts.SSHAuthorizedKeys
		} else {
			cc.Users = []any{"default", ccUser{Name: opts.sshUser(), Shell: "/bin/bash", LockPasswd: true, SSHAuthorizedKeys: opts.SSHAuthorizedKeys}}
		}
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "#cloud-config\n# kubebake user-data: role %s of cluster %s. Holds secrets: keep it private.\n", role, b.ClusterName)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// --- shell ---

const heredocEnd = "KUBEBAKE_EOF"

// RenderShell renders the seed document's one-liner style: a #!/bin/sh script that makes the
// folders, writes the files with heredocs and touches the marker. cloud-init runs such a script
// from cloud-final.service, which comes after multi-user.target, so role units have already
// been skipped for lack of the marker by then; the script therefore starts kubebake-roles.target
// again, which re-evaluates their conditions.
func RenderShell(b *Bundle, role string, opts Options) ([]byte, error) {
	files, err := roleFiles(b, role, opts)
	if err != nil {
		return nil, err
	}
	return shellScript(role, b.ClusterName, files, opts)
}

// shellScript writes RenderShell's script. Every value goes through package shell, so the
// script does what it says whatever the paths, contents, user and host name hold (RenderShell
// has validated them, but the script does not rely on it); only a NUL byte is refused.
func shellScript(role, cluster string, files []File, opts Options) ([]byte, error) {
	var sb strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&sb, format, a...) }
	q := shell.Quote // every value is checked with shell.Check before it is quoted
	w("#!/bin/sh\n# %s\n", shell.Comment(fmt.Sprintf("kubebake user-data: role %s of cluster %s. Holds secrets: keep it private.", role, cluster)))
	w("set -eu\numask 077\n")
	for _, f := range files {
		if err := shell.Check(f.Path, string(f.Content)); err != nil {
			return nil, fmt.Errorf("file %q: %w", shell.Comment(f.Path), err)
		}
	}
	for _, d := range parentDirs(files) {
		w("mkdir -p -m 0755 %s\n", q(d))
	}
	for _, f := range files {
		path := q(f.Path)
		switch content := string(f.Content); {
		case content == "":
			w("touch %s\n", path)
		case strings.HasSuffix(content, "\n"):
			// A quoted delimiter: the body is not expanded; none of its lines is the delimiter.
			end := shell.HeredocDelimiter(heredocEnd, content)
			w("cat > %s <<'%s'\n%s%s\n", path, end, content, end)
		default:
			// A here-document always ends in a line break: content without one is printed.
			w("printf '%%s' %s > %s\n", q(content), path)
		}
		w("chmod %04o %s\n", f.Mode.Perm(), path)
	}
	if keys := opts.SSHAuthorizedKeys; len(keys) > 0 {
		u := opts.sshUser()
		if err := shell.Check(append([]string{u}, keys...)...); err != nil {
			return nil, fmt.Errorf("SSH user or keys: %w", err)
		}
		if u == "" || strings.HasPrefix(u, "-") {
			// Quoting keeps it one word, but getent, useradd and chown would take it for an option.
			return nil, fmt.Errorf("SSH user %q is not a user name", shell.Comment(u))
		}
		if u == "root" {
			w("home=/root\n")
		} else {
			w("getent passwd %s >/dev/null || useradd -m -s /bin/bash %s\n", q(u), q(u))
			w("home=$(getent passwd %s | cut -d: -f6)\n", q(u))
		}
		body := strings.Join(keys, "\n") + "\n"
		end := shell.HeredocDelimiter(heredocEnd, body)
		w("mkdir -p -m 0700 \"$home/.ssh\"\ncat >> \"$home/.ssh/authorized_keys\" <<'%s'\n%s%s\n", end, body, end)
		w("chmod 0600 \"$home/.ssh/authorized_keys\"\nchown -R %s: \"$home/.ssh\"\n", q(u))
	}
	if opts.Hostname != "" {
		if err := shell.Check(opts.Hostname); err != nil {
			return nil, fmt.Errorf("host name: %w", err)
		}
		w("hostname %s\n", q(opts.Hostname))
	}
	w("# Start the role units that were skipped before the marker existed.\n")
	w("if [ -d /run/systemd/system ]; then systemctl --no-block start %s || true; fi\n", q(RolesTarget))
	return []byte(sb.String()), nil
}

// --- Butane and Ignition ---

// octal marshals a file mode as a YAML octal integer (0600), as Butane configs are written.
type octal uint32

func (m octal) MarshalYAML() (any, error) {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: fmt.Sprintf("0%o", uint32(m))}, nil
}

type butaneConfig struct {
	Variant string        `yaml:"variant"`
	Version string        `yaml:"version"`
	Storage butaneStorage `yaml:"storage"`
	Passwd  *butanePasswd `yaml:"passwd,omitempty"`
}

type butaneStorage struct {
	Files []butaneFile `yaml:"files"`
}

type butaneFile struct {
	Path      string         `yaml:"path"`
	Mode      octal          `yaml:"mode"`
	Overwrite bool           `yaml:"overwrite"`
	Contents  butaneContents `yaml:"contents"`
}

type butaneContents struct {
	Inline string `yaml:"inline"`
}

type butanePasswd struct {
	Users []butaneUser `yaml:"users"`
}

type butaneUser struct {
	Name              string   `yaml:"name"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
}

// RenderButane renders a Butane config (variant ButaneVariant, version ButaneVersion) that
// writes NodeFiles, overwriting what is there, and installs the SSH keys.
func RenderButane(b *Bundle, role string, opts Options) ([]byte, error) {
	files, err := roleFiles(b, role, opts)
	if err != nil {
		return nil, err
	}
	bc := butaneConfig{Variant: ButaneVariant, Version: ButaneVersion}
	for _, f := range files {
		bc.Storage.Files = append(bc.Storage.Files, butaneFile{
			Path: f.Path, Mode: octal(f.Mode.Perm()), Overwrite: true,
			Contents: butaneContents{Inline: string(f.Content)},
		})
	}
	if len(opts.SSHAuthorizedKeys) > 0 {
		bc.Passwd = &butanePasswd{Users: []butaneUser{{Name: opts.sshUser(), SSHAuthorizedKeys: opts.SSHAuthorizedKeys}}}
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# kubebake Butane config: role %s of cluster %s. Holds secrets: keep it private.\n", role, b.ClusterName)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(bc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ButaneToIgnition translates a Butane config with the butane library. Any warning is an error:
// kubebake writes these configs itself and they must be clean.
func ButaneToIgnition(butaneYAML []byte) ([]byte, error) {
	out, rpt, err := butane.TranslateBytes(butaneYAML, butanecommon.TranslateBytesOptions{Pretty: true})
	if err != nil {
		return nil, fmt.Errorf("butane: %w%s", err, reportText(rpt))
	}
	if len(rpt.Entries) > 0 {
		return nil, fmt.Errorf("butane reported:%s", reportText(rpt))
	}
	return append(out, '\n'), nil
}

// RenderIgnition renders the Butane config of RenderButane to Ignition JSON (spec
// IgnitionVersion) and validates it.
func RenderIgnition(b *Bundle, role string, opts Options) ([]byte, error) {
	by, err := RenderButane(b, role, opts)
	if err != nil {
		return nil, err
	}
	ign, err := ButaneToIgnition(by)
	if err != nil {
		return nil, err
	}
	if err := ValidateIgnition(ign); err != nil {
		return nil, fmt.Errorf("generated Ignition config is invalid (a kubebake bug): %w", err)
	}
	return ign, nil
}

// ValidateIgnition checks an Ignition config the way a node will: it must parse as spec
// IgnitionVersion with ignition/v2 with no errors or warnings, and use only what
// kubebake-ignition can apply.
func ValidateIgnition(data []byte) error {
	_, rpt, err := ignv34.Parse(data)
	if err != nil {
		return fmt.Errorf("ignition/v2 spec %s: %w%s", IgnitionVersion, err, reportText(rpt))
	}
	if len(rpt.Entries) > 0 {
		return fmt.Errorf("ignition/v2 spec %s reported:%s", IgnitionVersion, reportText(rpt))
	}
	cfg, _, err := ignition.Parse(data)
	if err != nil {
		return err
	}
	return ignition.CheckSupported(cfg)
}

func reportText(r report.Report) string {
	if len(r.Entries) == 0 {
		return ""
	}
	var sb strings.Builder
	for _, e := range r.Entries {
		sb.WriteString("\n  ")
		sb.WriteString(e.String())
	}
	return sb.String()
}
