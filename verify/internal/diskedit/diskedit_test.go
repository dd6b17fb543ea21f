package diskedit

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/testenv"
)

// makeImage builds a small GPT disk with an ESP and an ext4 root holding /etc/hostname.
func makeImage(t *testing.T) string {
	t.Helper()
	testenv.NeedTools(t, "sgdisk", "sfdisk", "mke2fs", "debugfs", "e2fsck", "qemu-img")
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "etc", "sysctl.d"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("node\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "sysctl.d", "90-kubebake.conf"), []byte("net.ipv4.ip_forward = 1\n"), 0o644)
	part := filepath.Join(dir, "root.ext4")
	sh := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	sh("truncate", "-s", "64M", disk)
	sh("sgdisk", "-n1:2048:+16M", "-t1:ef00", "-n2:0:0", "-t2:8304", disk)
	sh("truncate", "-s", "40M", part)
	sh("mke2fs", "-q", "-t", "ext4", "-d", root, part)
	sh("dd", "if="+part, "of="+disk, "bs=512", "seek=34816", "conv=notrunc,sparse", "status=none")
	return disk
}

func TestEditRootFS(t *testing.T) {
	ctx := context.Background()
	disk := makeImage(t)
	e, err := Open(ctx, disk)
	if err != nil {
		t.Fatal(err)
	}
	if e.Offset != 34816*512 {
		t.Errorf("offset %d", e.Offset)
	}
	got, err := e.ReadFile(ctx, "/etc/hostname")
	if err != nil || string(got) != "node\n" {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
	if err := e.Remove(ctx, "/etc/sysctl.d/90-kubebake.conf"); err != nil {
		t.Fatal(err)
	}
	if e.Exists(ctx, "/etc/sysctl.d/90-kubebake.conf") {
		t.Error("file still there after Remove")
	}
	if err := e.Remove(ctx, "/etc/nothere"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("removing a missing file: %v", err)
	}
	if err := e.WriteFile(ctx, "/etc/machine-id", []byte("0123456789abcdef0123456789abcdef\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := e.WriteFile(ctx, "/etc/hostname", []byte("other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.ReadFile(ctx, "/etc/hostname"); string(got) != "other\n" {
		t.Errorf("replaced file reads %q", got)
	}
	out, err := e.Run(ctx, "stat /etc/machine-id")
	if err != nil || !strings.Contains(out, "Mode:  0444") || !strings.Contains(out, "User:     0") {
		t.Errorf("stat: %v\n%s", err, out)
	}
	// The file system is still clean.
	part := filepath.Join(t.TempDir(), "p.ext4")
	if b, err := exec.Command("dd", "if="+disk, "of="+part, "bs=512", "skip=34816", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, b)
	}
	if b, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
		t.Errorf("e2fsck after edits: %v\n%s", err, b)
	}
}
