package builder

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/kubebake/kubebake/internal/run"
)

// An output format turns the finished raw disk into one file (compare linuxkit's
// moby/build/output.go). Every converter is deterministic: identifiers and timestamps that
// qemu-img draws at random or from the clock are overwritten with derived ones.
type outputFormat struct {
	Name string
	Ext  string
	// Convert writes dst from the raw image. dst's base name is the final one: VMDK records
	// it in its descriptor.
	Convert func(ctx context.Context, raw, dst string, ids IDs, epoch int64) error
	// Cost is a rough seconds-per-GiB-of-data figure, used to start slow formats first.
	Cost int
}

// outputFormats is the table of formats, in the order they are listed.
var outputFormats = []outputFormat{
	{Name: "raw", Ext: ".raw", Convert: convertRaw, Cost: 0},
	{Name: "qcow2", Ext: ".qcow2", Convert: convertQcow2, Cost: 8},
	{Name: "vhd", Ext: ".vhd", Convert: convertVHD, Cost: 6},
	{Name: "vmdk", Ext: ".vmdk", Convert: convertVMDK, Cost: 80},
}

// FormatNames are the output formats the builder writes.
func FormatNames() []string {
	names := make([]string, len(outputFormats))
	for i, f := range outputFormats {
		names[i] = f.Name
	}
	return names
}

func lookupFormat(name string) (outputFormat, error) {
	for _, f := range outputFormats {
		if f.Name == name {
			return f, nil
		}
	}
	return outputFormat{}, fmt.Errorf("unknown image format %q: use %s", name, strings.Join(FormatNames(), ", "))
}

// convertRaw is the raw image itself: the build renames it into place (no copy).
func convertRaw(ctx context.Context, raw, dst string, ids IDs, epoch int64) error {
	return os.Link(raw, dst)
}

func qemuImg(ctx context.Context, args ...string) error {
	if err := run.Command("qemu-img", args...).Run(ctx); err != nil {
		if run.IsNotFound(err) {
			return fmt.Errorf("qemu-img is not installed: run \"make deps\" (or apt-get install qemu-utils)")
		}
		return err
	}
	return nil
}

// convertQcow2 writes an uncompressed qcow2 (v3). Writes stay in order (no -W), so the
// cluster layout, and with it the file, is the same every time.
func convertQcow2(ctx context.Context, raw, dst string, ids IDs, epoch int64) error {
	return qemuImg(ctx, "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, dst)
}

// convertVHD writes a fixed VHD whose size is the raw size (a whole number of MiB, as Azure
// requires), then fixes the footer's timestamp and unique id.
func convertVHD(ctx context.Context, raw, dst string, ids IDs, epoch int64) error {
	if err := qemuImg(ctx, "convert", "-q", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", raw, dst); err != nil {
		return err
	}
	return patchVHDFooter(dst, ids, epoch)
}

// vhdEpoch is the VHD timestamp origin, 2000-01-01T00:00:00Z.
const vhdEpoch = 946684800

func patchVHDFooter(path string, ids IDs, epoch int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	footer := make([]byte, 512)
	at := st.Size() - 512
	if _, err := f.ReadAt(footer, at); err != nil {
		return err
	}
	if string(footer[:8]) != "conectix" {
		return fmt.Errorf("%s: no VHD footer", path)
	}
	ts := epoch - vhdEpoch
	if ts < 0 {
		ts = 0
	}
	binary.BigEndian.PutUint32(footer[24:], uint32(ts))
	copy(footer[68:84], ids.VHD[:])
	binary.BigEndian.PutUint32(footer[64:], 0)
	var sum uint32
	for _, b := range footer {
		sum += uint32(b)
	}
	binary.BigEndian.PutUint32(footer[64:], ^sum)
	if _, err := f.WriteAt(footer, at); err != nil {
		return err
	}
	// A dynamic VHD also keeps a copy at the start; a fixed one has only the footer.
	return f.Sync()
}

// convertVMDK writes a stream-optimized VMDK (what vSphere and VirtualBox import), then sets
// the descriptor's content id, which qemu-img draws at random.
func convertVMDK(ctx context.Context, raw, dst string, ids IDs, epoch int64) error {
	if err := qemuImg(ctx, "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, dst); err != nil {
		return err
	}
	return patchVMDKCID(dst, ids.VMDKCID)
}

func patchVMDKCID(path string, cid uint32) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// The embedded descriptor starts at sector 1 (header field descriptorOffset).
	head := make([]byte, 512)
	if _, err := f.ReadAt(head, 0); err != nil {
		return err
	}
	if string(head[:4]) != "KDMV" {
		return fmt.Errorf("%s: no VMDK sparse header", path)
	}
	descOff := int64(binary.LittleEndian.Uint64(head[28:])) * 512
	descLen := int64(binary.LittleEndian.Uint64(head[36:])) * 512
	desc := make([]byte, descLen)
	if _, err := f.ReadAt(desc, descOff); err != nil {
		return err
	}
	i := bytes.Index(desc, []byte("\nCID="))
	if i < 0 || len(desc) < i+5+8 {
		return fmt.Errorf("%s: no CID in the VMDK descriptor", path)
	}
	if _, err := f.WriteAt([]byte(fmt.Sprintf("%08x", cid)), descOff+int64(i)+5); err != nil {
		return err
	}
	return f.Sync()
}

// parseFormats checks a format list and returns it without duplicates, in table order.
func parseFormats(names []string) ([]outputFormat, error) {
	var out []outputFormat
	for _, f := range outputFormats {
		if slices.Contains(names, f.Name) {
			out = append(out, f)
		}
	}
	for _, n := range names {
		if _, err := lookupFormat(n); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no image format: use one or more of %s", strings.Join(FormatNames(), ", "))
	}
	return out, nil
}
