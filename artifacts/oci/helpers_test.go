package oci

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
)

// testEpoch stands in for a lock's SOURCE_DATE_EPOCH (2023-11-14T22:13:20Z).
const testEpoch = 1700000000

// busyboxBinary returns Debian's busybox-static /bin/busybox: the host's when it is
// installed, else the one in the .deb that apt-get download fetches.
func busyboxBinary(t *testing.T) string {
	t.Helper()
	if out, err := run.Command("dpkg-query", "-S", "/bin/busybox").Output(context.Background()); err == nil &&
		strings.HasPrefix(string(out), "busybox-static:") {
		return "/bin/busybox"
	}
	if testing.Short() { // busybox-static is missing, not the -short subset's choice
		testenv.Missing(t, "busybox-static", "run make deps (apt-get install busybox-static): -short forbids downloading it")
	}
	dir := t.TempDir()
	ctx := context.Background()
	if err := (&run.Cmd{Name: "apt-get", Args: []string{"download", "busybox-static"}, Dir: dir}).Run(ctx); err != nil {
		testenv.Missing(t, "busybox-static (not installed, and apt-get download failed)", "run make deps or fix the machine's apt: "+err.Error())
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "busybox-static_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("apt-get download left %v in %s", debs, dir)
	}
	unpacked := filepath.Join(dir, "root")
	if err := run.Command("dpkg-deb", "-x", debs[0], unpacked).Run(ctx); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(unpacked, "bin", "busybox")
}

// busyboxVersion is the upstream version of the busybox binary ("1.35.0").
func busyboxVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := run.Command(bin).Output(context.Background())
	if err != nil && len(out) == 0 {
		t.Fatal(err)
	}
	// "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary."
	fields := strings.Fields(string(out))
	if len(fields) < 2 || !strings.HasPrefix(fields[1], "v") {
		t.Fatalf("cannot read the version from %q", out)
	}
	return strings.TrimPrefix(fields[1], "v")
}

// layerEntry is one tar header of an image's layer.
type layerEntry struct {
	Type     byte
	Mode     int64
	UID, GID int
	Linkname string
	Size     int64
	MTime    int64
}

// readLayer returns the entries of the image's only layer, by name, and their order.
func readLayer(t *testing.T, img v1.Image) (map[string]layerEntry, []string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]layerEntry{}
	var order []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = layerEntry{h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, h.Size, h.ModTime.Unix()}
		order = append(order, h.Name)
	}
	return entries, order
}

// unpackLayer writes the image's layer into dir the way a snapshotter would (modes,
// symlinks), so its programs can be run from there.
func unpackLayer(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(target, dir+string(os.PathSeparator)) {
			t.Fatalf("layer entry %q escapes the folder", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, target)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600); err == nil {
				_, err = io.Copy(f, tr)
				f.Close()
			}
		default:
			t.Fatalf("layer entry %s has unexpected type %q", h.Name, h.Typeflag)
		}
		if err == nil && h.Typeflag != tar.TypeSymlink {
			err = os.Chmod(target, h.FileInfo().Mode()&(os.ModePerm|os.ModeSticky|os.ModeSetuid|os.ModeSetgid))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// needRoot: tests that chroot or run containerd need root.
func needRoot(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t)
}

func needCommand(t *testing.T, names ...string) {
	t.Helper()
	testenv.NeedTools(t, names...)
}
