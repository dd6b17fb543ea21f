// Package diskedit changes files inside the ext4 root partition of a raw disk image without
// mounting anything (the host may have no loop devices or fs drivers): debugfs works on the
// partition in place through e2fsprogs' "file?offset=N" syntax. verify's tests use it to plant
// one defect per promise in a copy of an image.
package diskedit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubebake/kubebake/internal/run"
)

// GPT partition types of a Linux root file system.
var rootTypes = map[string]bool{
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": true, // Linux root (x86-64)
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": true, // Linux filesystem data
}

// Editor edits the root file system of a raw image.
type Editor struct {
	Image  string
	Offset int64 // byte offset of the root partition
}

// Open finds the root partition of a raw GPT image: the largest partition of a Linux root or
// Linux data type.
func Open(ctx context.Context, image string) (*Editor, error) {
	out, err := run.Command("sfdisk", "--json", image).Output(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the partition table of %s: %w", image, err)
	}
	var pt struct {
		Table struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Start int64  `json:"start"`
				Size  int64  `json:"size"`
				Type  string `json:"type"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		return nil, fmt.Errorf("sfdisk --json %s: %w", image, err)
	}
	ss := pt.Table.SectorSize
	if ss == 0 {
		ss = 512
	}
	var best, bestSize int64 = -1, 0
	for _, p := range pt.Table.Partitions {
		if rootTypes[strings.ToUpper(p.Type)] && p.Size > bestSize {
			best, bestSize = p.Start, p.Size
		}
	}
	if best < 0 {
		return nil, fmt.Errorf("%s has no Linux root partition", image)
	}
	return &Editor{Image: image, Offset: best * ss}, nil
}

func (e *Editor) device() string { return fmt.Sprintf("%s?offset=%d", e.Image, e.Offset) }

// Run runs debugfs commands (-w) in one session; any message on stderr besides the banner is
// an error (debugfs exits 0 either way).
func (e *Editor) Run(ctx context.Context, cmds ...string) (string, error) {
	var stderr bytes.Buffer
	c := &run.Cmd{Name: "debugfs", Args: []string{"-w", "-f", "-", e.device()},
		Stdin: strings.NewReader(strings.Join(cmds, "\n") + "\n"), Stderr: &stderr}
	out, err := c.Output(ctx)
	if err != nil {
		return string(out), err
	}
	var errs []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			errs = append(errs, l)
		}
	}
	if len(errs) > 0 {
		return string(out), fmt.Errorf("debugfs %s: %s", strings.Join(cmds, "; "), strings.Join(errs, "; "))
	}
	return string(out), nil
}

// ReadFile returns a file's content.
func (e *Editor) ReadFile(ctx context.Context, path string) ([]byte, error) {
	q, err := quote(path)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	c := &run.Cmd{Name: "debugfs", Args: []string{"-R", "cat " + q, e.device()}, Stderr: &stderr}
	out, err := c.Output(ctx)
	if err != nil {
		return nil, err
	}
	if s := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(stderr.String()), firstLine(stderr.String()))); s != "" {
		return nil, fmt.Errorf("reading %s: %s", path, s)
	}
	return out, nil
}

// Exists reports whether path exists.
func (e *Editor) Exists(ctx context.Context, path string) bool {
	q, err := quote(path)
	if err != nil {
		return false
	}
	_, err = e.Run(ctx, "stat "+q)
	return err == nil
}

// Remove deletes a file.
func (e *Editor) Remove(ctx context.Context, path string) error {
	q, err := quote(path)
	if err != nil {
		return err
	}
	_, err = e.Run(ctx, "rm "+q)
	return err
}

// WriteFile replaces (or creates) a file, owned by root, with the given mode.
func (e *Editor) WriteFile(ctx context.Context, path string, data []byte, mode fs.FileMode) error {
	qPath, err := quote(path)
	if err != nil {
		return err
	}
	qDir, _ := quote(filepath.Dir(path))
	qBase, _ := quote(filepath.Base(path))
	tmp, err := os.CreateTemp("", "diskedit-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	tmp.Close()
	if e.Exists(ctx, path) {
		if err := e.Remove(ctx, path); err != nil {
			return err
		}
	}
	qTmp, err := quote(tmp.Name())
	if err != nil {
		return err
	}
	_, err = e.Run(ctx,
		"cd "+qDir,
		"write "+qTmp+" "+qBase,
		fmt.Sprintf("sif %s mode 0%o", qPath, 0o100000|uint32(mode.Perm())),
		"sif "+qPath+" uid 0",
		"sif "+qPath+" gid 0",
	)
	return err
}

// RawCopy copies an image to dst as a raw file (qcow2 and other formats are converted).
func RawCopy(ctx context.Context, src, dst string) error {
	return run.Command("qemu-img", "convert", "-O", "raw", src, dst).Run(ctx)
}

// quote writes p as one word of a debugfs request. debugfs requests are not shell: lib/ss
// splits them at blanks, and inside double quotes a doubled "" stands for one " while a
// backslash is an ordinary character (a \" leaves the quotes unbalanced). A request is one
// line, so a line break cannot be passed, nor a NUL byte.
func quote(p string) (string, error) {
	if strings.ContainsAny(p, "\n\x00") {
		return "", fmt.Errorf("path %q: a debugfs request cannot carry a line break or a NUL byte", p)
	}
	if p != "" && !strings.ContainsAny(p, " \t\"") {
		return p, nil
	}
	return `"` + strings.ReplaceAll(p, `"`, `""`) + `"`, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
