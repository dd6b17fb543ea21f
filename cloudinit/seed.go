package cloudinit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/kubebake/kubebake/internal/atomicfile"
)

// SeedLabel is the volume identifier cloud-init's NoCloud datasource looks for.
const SeedLabel = "cidata"

// NoCloud file names. They hold '-', which plain ISO9660 names cannot: the seed carries Rock
// Ridge and Joliet names, which Linux's iso9660 driver (and so cloud-init) reads.
const (
	SeedUserData      = "user-data"
	SeedMetaData      = "meta-data"
	SeedNetworkConfig = "network-config"
	SeedVendorData    = "vendor-data"
)

// WriteSeedISO writes a NoCloud seed ISO (label cidata) holding user-data and meta-data, to
// path, atomically and with mode 0600 (user-data holds secrets).
func WriteSeedISO(path string, userData, metaData []byte) error {
	return WriteSeedISOFiles(path, map[string][]byte{SeedUserData: userData, SeedMetaData: metaData})
}

// WriteSeedISOFiles writes a NoCloud seed ISO with the given top-level files (user-data and
// meta-data are required; network-config and vendor-data optional).
func WriteSeedISOFiles(path string, files map[string][]byte) error {
	for _, req := range []string{SeedUserData, SeedMetaData} {
		if _, ok := files[req]; !ok {
			return fmt.Errorf("seed ISO: %s is required", req)
		}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		switch name {
		case SeedUserData, SeedMetaData, SeedNetworkConfig, SeedVendorData:
		default:
			return fmt.Errorf("seed ISO: %q is not a NoCloud file (user-data, meta-data, network-config, vendor-data)", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)

	// go-diskfs stages files in a workspace folder before Finalize; keep it private, beside
	// the output, and remove it whatever happens.
	ws, err := os.MkdirTemp(filepath.Dir(path), "."+filepath.Base(path)+".ws-*")
	if err != nil {
		return fmt.Errorf("seed ISO: %w", err)
	}
	defer os.RemoveAll(ws)

	out, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return err
	}
	defer out.Abort()
	fs, err := iso9660.Create(file.New(out.File, false), 0, 0, 2048, ws)
	if err != nil {
		return fmt.Errorf("seed ISO %s: %w", path, err)
	}
	for _, name := range names {
		f, err := fs.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("seed ISO %s: %s: %w", path, name, err)
		}
		if _, err := f.Write(files[name]); err != nil {
			f.Close()
			return fmt.Errorf("seed ISO %s: %s: %w", path, name, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("seed ISO %s: %s: %w", path, name, err)
		}
	}
	if err := fs.Finalize(iso9660.FinalizeOptions{
		RockRidge:        true,
		Joliet:           true,
		VolumeIdentifier: SeedLabel,
	}); err != nil {
		return fmt.Errorf("seed ISO %s: finalize: %w", path, err)
	}
	return out.Commit()
}

// ReadSeedISO reads the top-level files of a seed ISO back (with go-diskfs, in user space).
func ReadSeedISO(path string) (label string, files map[string][]byte, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	b, err := file.OpenFromPath(path, true)
	if err != nil {
		return "", nil, err
	}
	defer b.Close()
	fs, err := iso9660.Read(b, st.Size(), 0, 2048)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	entries, err := fs.ReadDir(".")
	if err != nil {
		return "", nil, err
	}
	files = map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := fs.ReadFile(e.Name())
		if err != nil {
			return "", nil, err
		}
		files[e.Name()] = data
	}
	// go-diskfs pads the volume identifier with NULs, not the spaces ISO9660 asks for; blkid
	// and xorriso read "cidata" either way.
	return strings.TrimRight(fs.Label(), "\x00 "), files, nil
}

// MetaData renders NoCloud meta-data.
func MetaData(instanceID, hostname string) []byte {
	return []byte(fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", instanceID, hostname))
}

// DefaultInstanceID derives an instance-id from the user-data: a new seed with other
// user-data is a new instance to cloud-init, the same seed booted twice is not.
func DefaultInstanceID(userData []byte) string {
	sum := sha256.Sum256(userData)
	return "iid-kubebake-" + hex.EncodeToString(sum[:8])
}

// DefaultHostname is <cluster>-<role>, cut to a 63-character label.
func DefaultHostname(b *Bundle, role string) string {
	h := b.ClusterName + "-" + role
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-")
	}
	return h
}

// SeedOptions tune Seed.
type SeedOptions struct {
	Options
	Format     Format // cloud-config (default) or shell
	InstanceID string // default DefaultInstanceID(user-data)
}

// CheckSeedFormat accepts the formats cloud-init reads from a NoCloud seed.
func CheckSeedFormat(f Format) error {
	switch f {
	case FormatCloudConfig, FormatShell:
		return nil
	case FormatIgnition, FormatButane:
		return fmt.Errorf("a NoCloud seed carries cloud-init user-data (cloud-config or shell), not %s; give an Ignition config to QEMU with -fw_cfg name=opt/com.coreos/config,file=config.ign", f)
	}
	_, err := ParseFormat(string(f))
	return err
}

// Seed renders user-data for role and writes it with meta-data into a NoCloud seed ISO.
func Seed(path string, b *Bundle, role string, opts SeedOptions) error {
	if opts.Format == "" {
		opts.Format = FormatCloudConfig
	}
	if err := CheckSeedFormat(opts.Format); err != nil {
		return err
	}
	ud, err := Render(b, role, opts.Format, opts.Options)
	if err != nil {
		return err
	}
	if opts.InstanceID == "" {
		opts.InstanceID = DefaultInstanceID(ud)
	}
	// meta-data always names the host; Options.Hostname (also written to /etc/hostname by
	// the user-data) wins over the default.
	hostname := opts.Hostname
	if hostname == "" {
		hostname = DefaultHostname(b, role)
	}
	if !hostRE.MatchString(hostname) {
		return fmt.Errorf("hostname %q is not a valid host name", hostname)
	}
	if strings.ContainsAny(opts.InstanceID, " \t\n:#") || opts.InstanceID == "" {
		return fmt.Errorf("instance-id %q: use letters, digits, '-' and '.'", opts.InstanceID)
	}
	return WriteSeedISO(path, ud, MetaData(opts.InstanceID, hostname))
}
