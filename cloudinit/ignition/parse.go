// Package ignition is kubebake's first-boot Ignition applier for Debian images: it finds an
// Ignition config (QEMU fw_cfg, EC2 user-data), parses and validates it with ignition/v2, and
// applies files, directories, links, systemd units and users under a root folder.
//
// Everything is checked before anything is written: Parse and CheckSupported look at the config
// alone, NewPlan looks at the target root too (existing files, owners, unit files), and only a
// complete Plan is applied, each file atomically. A config that fails leaves the root as it was.
// Nothing here logs file contents: configs carry the cluster CA key and bootstrap token.
package ignition

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	ignerrors "github.com/coreos/ignition/v2/config/shared/errors"
	"github.com/coreos/ignition/v2/config/util"
	v3 "github.com/coreos/ignition/v2/config/v3_6"
	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/coreos/vcontext/report"
)

// Config is the parsed config, at the newest stable spec this applier reads.
type Config = types.Config

// SpecRange says which Ignition specs Parse accepts.
const SpecRange = "3.0.0 to 3.6.0"

// Parse parses and validates an Ignition config of any spec from 3.0.0 to 3.6.0 with
// ignition/v2 and translates it to 3.6. Fatal report entries make it an error, with every entry
// listed; warnings come back in the report.
func Parse(raw []byte) (Config, report.Report, error) {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return Config{}, report.Report{}, errors.New("the Ignition config is empty")
	}
	ver, rpt, err := util.GetConfigVersion(raw)
	if err != nil {
		if errors.Is(err, ignerrors.ErrInvalidVersion) {
			return Config{}, rpt, fmt.Errorf("ignition.version is missing or not a version (this applier reads specs %s)", SpecRange)
		}
		return Config{}, rpt, fmt.Errorf("not an Ignition config: %v%s", err, entries(rpt))
	}
	if ver.Major != 3 {
		return Config{}, rpt, fmt.Errorf("ignition.version %s is not supported: this applier reads specs %s; translate older configs with ign-converter", ver, SpecRange)
	}
	cfg, rpt, err := v3.ParseCompatibleVersion(raw)
	if err != nil {
		if errors.Is(err, ignerrors.ErrUnknownVersion) {
			return Config{}, rpt, fmt.Errorf("ignition.version %s is not supported: this applier reads specs %s", ver, SpecRange)
		}
		return Config{}, rpt, fmt.Errorf("invalid Ignition config (spec %s): %v%s", ver, err, entries(rpt))
	}
	return cfg, rpt, nil
}

func entries(r report.Report) string {
	var sb strings.Builder
	for _, e := range r.Entries {
		sb.WriteString("\n  ")
		sb.WriteString(e.String())
	}
	return sb.String()
}

// CheckSupported refuses what this applier cannot do faithfully: disks, partitions, RAID, LUKS,
// filesystems, kernel arguments, config merging, TLS CAs, proxies, group removal and
// resources that must be fetched (only data: URLs are read; no network is assumed at first
// boot). Every problem is listed.
func CheckSupported(cfg Config) error {
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if len(cfg.Storage.Disks) > 0 {
		bad("storage.disks: partitioning is not supported")
	}
	if len(cfg.Storage.Raid) > 0 {
		bad("storage.raid is not supported")
	}
	if len(cfg.Storage.Luks) > 0 {
		bad("storage.luks is not supported")
	}
	if len(cfg.Storage.Filesystems) > 0 {
		bad("storage.filesystems is not supported: the image's filesystems are made when it is built")
	}
	if len(cfg.KernelArguments.ShouldExist)+len(cfg.KernelArguments.ShouldNotExist) > 0 {
		bad("kernelArguments is not supported")
	}
	if len(cfg.Ignition.Config.Merge) > 0 || cfg.Ignition.Config.Replace.Source != nil {
		bad("ignition.config.merge/replace is not supported: give the whole config")
	}
	if len(cfg.Ignition.Security.TLS.CertificateAuthorities) > 0 {
		bad("ignition.security.tls is not supported (no remote resources are fetched)")
	}
	for i, f := range cfg.Storage.Files {
		if f.Contents.Source != nil {
			if err := checkSource(*f.Contents.Source); err != nil {
				bad("storage.files.%d (%s) contents: %v", i, f.Path, err)
			}
		}
		for j, a := range f.Append {
			if a.Source == nil {
				continue
			}
			if err := checkSource(*a.Source); err != nil {
				bad("storage.files.%d (%s) append.%d: %v", i, f.Path, j, err)
			}
		}
	}
	for i, u := range cfg.Passwd.Users {
		if u.ShouldExist != nil && !*u.ShouldExist {
			bad("passwd.users.%d (%s): shouldExist false (deleting users) is not supported", i, u.Name)
		}
	}
	for i, g := range cfg.Passwd.Groups {
		if g.ShouldExist != nil && !*g.ShouldExist {
			bad("passwd.groups.%d (%s): shouldExist false (deleting groups) is not supported", i, g.Name)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("the Ignition config uses what kubebake-ignition does not support:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// checkSource accepts data: URLs only.
func checkSource(src string) error {
	u, err := url.Parse(src)
	if err != nil {
		return fmt.Errorf("source is not a URL")
	}
	if u.Scheme != "data" {
		host := u.Host
		if host == "" {
			host = u.Scheme + ":"
		}
		return fmt.Errorf("remote source %s://%s... refused: kubebake-ignition reads inline data: URLs only (no network at first boot); inline the contents (Butane: contents.inline or contents.local)", u.Scheme, host)
	}
	return nil
}
