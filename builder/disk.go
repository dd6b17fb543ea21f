package builder

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/kubebake/kubebake/internal/run"
)

const (
	sectorSize = 512
	mib        = int64(1) << 20
	gib        = int64(1) << 30
	// ESPSize is the EFI system partition's size. Above 260 MiB FAT32 uses 4 KiB clusters
	// (76646 of them here, comfortably FAT32), which go-diskfs writes ten times faster than the
	// 512-byte clusters of a 256 MiB ESP; it also stays clear of go-diskfs's broken 64 MiB FAT32
	// (see ENVIRONMENT.md).
	ESPSize = 300 * mib
	// alignment of partitions (and of the end of the disk, for the backup GPT).
	alignment = mib
)

// Layout is where the partitions sit on the disk, in bytes.
type Layout struct {
	DiskSize  int64
	ESPStart  int64
	ESPSize   int64
	RootStart int64
	RootSize  int64
}

// NewLayout places the ESP at 1 MiB and the root partition after it up to the last MiB of
// the disk (the backup GPT lives there).
func NewLayout(diskSize int64) (Layout, error) {
	if diskSize%mib != 0 {
		return Layout{}, fmt.Errorf("image size %d is not a whole number of MiB", diskSize)
	}
	l := Layout{DiskSize: diskSize, ESPStart: alignment, ESPSize: ESPSize}
	l.RootStart = l.ESPStart + l.ESPSize
	l.RootSize = diskSize - alignment - l.RootStart
	if l.RootSize < 512*mib {
		return Layout{}, fmt.Errorf("image size %s leaves %s for the root filesystem after the %s EFI partition; use at least 2GiB",
			humanBytes(diskSize), humanBytes(max(l.RootSize, 0)), humanBytes(ESPSize))
	}
	return l, nil
}

// createDisk creates path as a sparse file of the layout's size and writes the GPT: an EFI
// system partition and a root partition typed "Linux root (x86-64)" so that
// systemd-gpt-auto-generator finds it as well.
func createDisk(path string, l Layout, ids IDs) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(l.DiskSize); err != nil {
		f.Close()
		return err
	}
	d, err := diskfs.OpenBackend(file.New(f, false), diskfs.WithSectorSize(sectorSize))
	if err != nil {
		f.Close()
		return fmt.Errorf("opening %s: %w", path, err)
	}
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		GUID:               ids.DiskGUID.String(),
		Partitions: []*gpt.Partition{
			{
				Index: 1, Start: uint64(l.ESPStart / sectorSize), End: uint64((l.ESPStart+l.ESPSize)/sectorSize - 1),
				Type: gpt.EFISystemPartition, Name: "esp", GUID: ids.ESPPart.String(),
			},
			{
				Index: 2, Start: uint64(l.RootStart / sectorSize), End: uint64((l.RootStart+l.RootSize)/sectorSize - 1),
				Type: gpt.LinuxRootX86_64, Name: "root", GUID: ids.RootPart.String(),
			},
		},
	}
	if err := d.Partition(table); err != nil {
		f.Close()
		return fmt.Errorf("writing the partition table of %s: %w", path, err)
	}
	return f.Close()
}

//go:embed mke2fs.conf
var mke2fsConf []byte

// mkRootFS writes the root ext4 straight from a tarball into the root partition of the disk
// (mke2fs -E offset=), with UUID, hash seed and every timestamp fixed: byte-identical for
// equal inputs. Features come from kubebake's own mke2fs.conf, not the host's.
func mkRootFS(ctx context.Context, work, disk, tarball string, l Layout, ids IDs, epoch int64) error {
	conf := filepath.Join(work, "mke2fs.conf")
	if err := os.WriteFile(conf, mke2fsConf, 0o644); err != nil {
		return err
	}
	blocks := l.RootSize / 4096
	cmd := run.Command("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "root",
		"-U", ids.RootFS.String(),
		"-E", fmt.Sprintf("root_owner=0:0,hash_seed=%s,offset=%d", ids.RootHash, l.RootStart),
		"-d", tarball, disk, strconv.FormatInt(blocks, 10))
	cmd.Env = []string{"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch, 10), "MKE2FS_CONFIG=" + conf}
	if err := cmd.Run(ctx); err != nil {
		return fmt.Errorf("making the root filesystem: %w", err)
	}
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%dGiB", n/gib)
	case n >= gib:
		return fmt.Sprintf("%.1fGiB", float64(n)/float64(gib))
	case n >= mib:
		return fmt.Sprintf("%dMiB", (n+mib/2)/mib)
	default:
		return fmt.Sprintf("%dB", n)
	}
}
