package builder

import (
	"context"
	"errors"
	"fmt"
	"github.com/kubebake/kubebake/internal/flock"
	"github.com/kubebake/kubebake/manifest"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A build's outputs (images, manifest.json, sbom.spdx.json) are published as one: they are
// assembled in a staging folder beside the output folder, on the same filesystem, and the
// two folders are exchanged in one renameat2(RENAME_EXCHANGE). Whatever the moment a build
// dies, the output folder holds the previous complete set or the new one, never a mix; a
// reader that opened the old files keeps reading them. Entries of the output folder that
// are not a build's (verify's failure artifacts, a user's notes) are hard-linked into the
// staging folder first, so the exchange loses nothing.

// workPrefix names the work folders a build keeps beside its output folder:
// .<out>.kubebake-build-XXXX, removed when the build ends; ones left by a killed build are
// removed by the next build into the same folder.
func workPrefix(outDir string) string {
	return filepath.Join(filepath.Dir(outDir), "."+filepath.Base(outDir)+".kubebake-build-")
}

// publishHook, when set (by tests), runs at each named point of publishing; an error there
// stops the publish as a crash would.
var publishHook func(point string) error

func hook(point string) error {
	if publishHook == nil {
		return nil
	}
	return publishHook(point)
}

// lockOutDir serialises builds into one output folder (flock on a file beside it) and removes
// the work folders of builds that died. unlock releases it.
func lockOutDir(ctx context.Context, outDir string) (unlock func(), err error) {
	parent := filepath.Dir(outDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the output folder's parent %s: %w; choose another --out", parent, err)
	}
	p := filepath.Join(parent, "."+filepath.Base(outDir)+".kubebake-lock")
	unlock, err = flock.Acquire(ctx, p, func() { slog.Info("waiting for another build into the same folder", "out", outDir) })
	if err != nil {
		return nil, fmt.Errorf("output folder %s: %w", outDir, err)
	}
	stale, _ := filepath.Glob(workPrefix(outDir) + "*")
	for _, d := range stale {
		slog.Info("removing the work folder of a build that did not finish", "dir", d)
		os.RemoveAll(d)
	}
	return unlock, nil
}

// checkOutDir refuses an output folder that cannot be switched: one that is not writable (a
// folder is renamed by writing its ".." entry) or is a mount point (the exchange needs it on
// its parent's filesystem). A folder that does not exist yet is fine.
func checkOutDir(outDir string) error {
	var out, parent unix.Stat_t
	if err := unix.Stat(outDir, &out); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("output folder %s: %w; choose another --out", outDir, err)
	}
	if out.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("output folder %s is not a folder; choose another --out", outDir)
	}
	if err := unix.Access(outDir, unix.W_OK); err != nil {
		return fmt.Errorf("output folder %s is not writable: %w; choose another --out", outDir, err)
	}
	if err := unix.Stat(filepath.Dir(outDir), &parent); err != nil {
		return err
	}
	if out.Dev != parent.Dev {
		return fmt.Errorf("--out %s is a mount point: a build switches its new folder into place in one rename, on the parent's filesystem; use a folder inside it (%s)",
			outDir, filepath.Join(outDir, "images"))
	}
	return nil
}

// publishFolder makes staged the output folder outDir in one step. owned says which of
// outDir's entries a build wrote (they are replaced); every other entry is carried over.
func publishFolder(staged, outDir string, owned func(name string) bool) error {
	if err := syncDir(staged); err != nil {
		return err
	}
	entries, err := os.ReadDir(outDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := hook("before-rename"); err != nil {
			return err
		}
		if err := unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, outDir, unix.RENAME_NOREPLACE); err != nil {
			return fmt.Errorf("moving the new outputs into %s: %w", outDir, err)
		}
		return syncDir(filepath.Dir(outDir))
	case err != nil:
		return err
	}
	for _, e := range entries {
		if owned(e.Name()) {
			continue
		}
		dst := filepath.Join(staged, e.Name())
		if _, err := os.Lstat(dst); err == nil {
			continue // the new build wrote one of that name
		}
		if err := linkTree(filepath.Join(outDir, e.Name()), dst); err != nil {
			return fmt.Errorf("carrying %s over to the new outputs: %w; move it out of %s or choose another --out", e.Name(), err, outDir)
		}
	}
	if err := hook("before-exchange"); err != nil {
		return err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, outDir, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("switching the new outputs into %s: %w", outDir, err)
	}
	if err := syncDir(filepath.Dir(outDir)); err != nil {
		return err
	}
	if err := hook("after-exchange"); err != nil {
		return err
	}
	// staged now holds the previous set; the caller removes the work folder around it.
	return nil
}

// linkTree hard-links the files of src into dst (same filesystem), recreating folders and
// symlinks.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.Mkdir(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		default:
			return os.Link(p, to)
		}
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// ownedOutput says whether name in an output folder is what a build of recipe writes there:
// an image of any format, the manifest or the SBOM.
func ownedOutput(recipe string) func(name string) bool {
	return func(name string) bool {
		if name == manifest.Name || name == manifest.SBOMName {
			return true
		}
		for _, f := range outputFormats {
			if name == recipe+f.Ext {
				return true
			}
		}
		return strings.HasPrefix(name, ".kubebake-build-") // work folders of older kubebakes
	}
}
