package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/kubebake/kubebake/internal/run"
)

// checkTools makes sure the external tools the build will call are installed, in versions
// that give reproducible output.
func checkTools(ctx context.Context, formats []outputFormat) error {
	var stderr bytes.Buffer
	c := run.Command("mke2fs", "-V")
	c.Stderr = &stderr // mke2fs prints its version on stderr
	out, err := c.Output(ctx)
	if err != nil && run.IsNotFound(err) {
		return errors.New("mke2fs is not installed: run \"make deps\" (e2fsprogs >= 1.47.1)")
	}
	if err := checkMke2fsVersion(string(out) + stderr.String()); err != nil {
		return err
	}
	for _, f := range formats {
		if f.Name != "raw" {
			if _, err := run.Command("qemu-img", "--version").Output(ctx); err != nil {
				if run.IsNotFound(err) {
					return errors.New("qemu-img is not installed: run \"make deps\" (qemu-utils), or build --format raw")
				}
				return err
			}
			break
		}
	}
	return nil
}

var mke2fsVersionRE = regexp.MustCompile(`mke2fs (\d+)\.(\d+)(?:\.(\d+))?`)

// checkMke2fsVersion wants 1.47.1 or newer: older mke2fs cannot read a tarball with -d and
// copies host ctimes, so its filesystems are not reproducible.
func checkMke2fsVersion(out string) error {
	m := mke2fsVersionRE.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("cannot tell the version of mke2fs from %q", strings.TrimSpace(out))
	}
	v := [3]int{}
	for i := range 3 {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	if v[0] < 1 || (v[0] == 1 && (v[1] < 47 || (v[1] == 47 && v[2] < 1))) {
		return fmt.Errorf("mke2fs %s.%s.%s is too old: the builder needs e2fsprogs >= 1.47.1 (mke2fs -d from a tarball, SOURCE_DATE_EPOCH); run \"make deps\" (bookworm-backports)", m[1], m[2], m[3])
	}
	return nil
}

// freeBytes is the space available to this user on the filesystem holding dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// skipSpaceCheck lets tests run into a real ENOSPC past the estimate.
var skipSpaceCheck = false

// checkSpace estimates what the rest of the build writes into the output folder and fails
// early when it does not fit. The root tarball and the raw disk exist together while mke2fs
// runs; afterwards the raw disk and the converted outputs.
func (s *state) checkSpace() error {
	data := s.dataSize()
	var outputs int64
	for _, f := range s.formats {
		switch f.Name {
		case "raw":
		case "vmdk":
			outputs += data / 2
		default:
			outputs += data
		}
	}
	s.need = max(2*data, data+outputs) + data/10
	if skipSpaceCheck {
		return nil
	}
	free, err := freeBytes(s.work) // beside the output folder, on its filesystem
	if err != nil {
		return nil // no statfs: let the writes tell
	}
	if free < s.need {
		return &spaceError{dir: filepath.Dir(s.opts.OutDir), need: s.need, free: free}
	}
	return nil
}

type spaceError struct {
	dir        string
	need, free int64
}

func (e *spaceError) Error() string {
	msg := fmt.Sprintf("no space left on %s: need about %s", e.dir, humanGiB(e.need))
	if e.free >= 0 {
		msg += fmt.Sprintf(", %s free", humanGiB(e.free))
	}
	return msg + "; free some space or choose another folder with --out"
}

func (e *spaceError) Unwrap() error { return syscall.ENOSPC }

func humanGiB(n int64) string {
	return fmt.Sprintf("%.1f GiB", float64(n)/float64(gib))
}

// explainSpace turns a failed write on a full disk (ENOSPC from Go, "No space left on
// device" from a tool) into one clear message.
func (s *state) explainSpace(err error) error {
	var se *spaceError
	if errors.As(err, &se) {
		return err
	}
	full := errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
	var re *run.Error
	if errors.As(err, &re) && (strings.Contains(re.Stderr, "No space left on device") || strings.Contains(re.Stderr, "Disk quota exceeded")) {
		full = true
	}
	if !full {
		return err
	}
	dir := filepath.Dir(s.opts.OutDir)
	if s.rootfsTar == "" && s.opts.Store != nil { // still building the rootfs: the cache filled up
		if d, derr := s.opts.Store.Scratch("rootfs"); derr == nil {
			dir = d
		}
	}
	need := s.need
	if need == 0 {
		need = 3 * gib // a cold rootfs build: the chroot and its tarball
	}
	free, ferr := freeBytes(dir)
	if ferr != nil {
		free = -1
	}
	return &spaceError{dir: dir, need: need, free: free}
}
