package builder

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
)

// HostSystemdBoot is systemd-boot as Debian's systemd-boot-efi package installs it; the
// builder uses the rootfs's copy when the image has the package, else the host's.
const HostSystemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// Boot describes what the ESP must boot.
type Boot struct {
	KernelVersion string // "6.1.0-50-cloud-amd64"
	Kernel        string // path of vmlinuz on the host (extracted from the rootfs)
	Initrd        string // path of initrd.img on the host
	Loader        string // systemd-bootx64.efi on the host
	Cmdline       string
	Title         string
}

// espFile is one file to put on the ESP: content from a host file or from bytes.
type espFile struct {
	path string // absolute, "/EFI/BOOT/BOOTX64.EFI"
	src  string
	data []byte
}

// espFiles lays out systemd-boot, its loader.conf and one Boot Loader Specification entry
// (type 1) with the kernel and initramfs.
func espFiles(b Boot, entryID string) []espFile {
	dir := "/" + entryID
	loaderConf := fmt.Sprintf("default %s.conf\ntimeout 0\nconsole-mode keep\neditor no\n", entryID)
	entry := fmt.Sprintf("title %s\nversion %s\nlinux %s/vmlinuz\ninitrd %s/initrd.img\noptions %s\n",
		b.Title, b.KernelVersion, dir, dir, b.Cmdline)
	return []espFile{
		{path: "/EFI/BOOT/BOOTX64.EFI", src: b.Loader},
		{path: "/loader/loader.conf", data: []byte(loaderConf)},
		{path: "/loader/entries/" + entryID + ".conf", data: []byte(entry)},
		{path: dir + "/vmlinuz", src: b.Kernel},
		{path: dir + "/initrd.img", src: b.Initrd},
	}
}

// fatTimeMu serialises ESP writes: go-diskfs stamps FAT directory entries with
// SOURCE_DATE_EPOCH from the process environment (util/timestamp), so the builder sets it for
// the duration of the write.
var fatTimeMu sync.Mutex

// writeESP creates a FAT32 filesystem in partition 1 of the disk at diskPath and fills it.
// Every timestamp is epoch and the volume serial is derived, so equal inputs give equal bytes.
func writeESP(diskPath string, l Layout, ids IDs, epoch int64, files []espFile) error {
	fatTimeMu.Lock()
	defer fatTimeMu.Unlock()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(epoch, 10))
	defer func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
	}()

	f, err := os.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := diskfs.OpenBackend(file.New(f, false), diskfs.WithSectorSize(sectorSize))
	if err != nil {
		return fmt.Errorf("opening %s: %w", diskPath, err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "ESP", Reproducible: true})
	if err != nil {
		return fmt.Errorf("creating the EFI system partition: %w", err)
	}
	// Parent directories first, each once, in a fixed order.
	dirs := map[string]bool{}
	for _, ef := range files {
		for d := path.Dir(ef.path); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Slice(sorted, func(i, j int) bool {
		if a, b := strings.Count(sorted[i], "/"), strings.Count(sorted[j], "/"); a != b {
			return a < b
		}
		return sorted[i] < sorted[j]
	})
	for _, dir := range sorted {
		if err := fs.Mkdir(dir); err != nil {
			return fmt.Errorf("EFI system partition: mkdir %s: %w", dir, err)
		}
	}
	for _, ef := range files {
		if err := putESPFile(fs, ef); err != nil {
			return fmt.Errorf("EFI system partition: %s: %w", ef.path, err)
		}
	}
	if err := fs.Close(); err != nil {
		return fmt.Errorf("EFI system partition: %w", err)
	}
	if err := fixFAT32(f, l.ESPStart); err != nil {
		return fmt.Errorf("EFI system partition: %w", err)
	}
	return setFATSerial(f, l.ESPStart, ids.ESPSerial)
}

func putESPFile(fs filesystem.FileSystem, ef espFile) error {
	w, err := fs.OpenFile(ef.path, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return err
	}
	if ef.src != "" {
		src, err := os.Open(ef.src)
		if err != nil {
			w.Close()
			return err
		}
		_, err = io.Copy(w, src)
		src.Close()
		if err != nil {
			w.Close()
			return err
		}
	} else if _, err := w.Write(ef.data); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// setFATSerial writes the volume serial into the FAT32 boot sector and its backup (sector 6):
// go-diskfs's reproducible mode leaves it 0, which would give every kubebake ESP the same
// /dev/disk/by-uuid/0000-0000.
func setFATSerial(f *os.File, start int64, serial uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], serial)
	for _, sector := range []int64{0, 6} {
		if _, err := f.WriteAt(b[:], start+sector*sectorSize+0x43); err != nil {
			return fmt.Errorf("EFI system partition: writing the volume serial: %w", err)
		}
	}
	return nil
}
