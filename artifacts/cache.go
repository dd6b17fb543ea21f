package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/kubebake/kubebake/internal/flock"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kubebake/kubebake/internal/atomicfile"
)

// The cache layout under Dir():
//
//	blobs/sha256/<hex>     content-addressed artifacts, mode 0444, never changed once written
//	verified/sha256/<hex>  the verification stamp of a blob (see Lookup)
//	scratch/<name>/        persistent work folders (Go module builds, rootfs tarballs, indexes)
//	locks/<name>.lock      flock files (Cache.Lock)
//
// Blobs are written through a temporary file in blobs/sha256 and renamed into place, so a
// blob path either does not exist or holds the complete content (two writers of the same
// blob race harmlessly: both rename identical content).
const (
	blobsDir    = "blobs/sha256"
	stampsDir   = "verified/sha256"
	scratchDir  = "scratch"
	locksDir    = "locks"
	stampFormat = "kubebake-stamp-v1"
)

// Cache is the content-addressed artifact cache. It is safe for concurrent use by several
// goroutines and several processes.
type Cache struct {
	dir string
	// remote, when set (UseRemote), is a shared second tier: see cache_remote.go.
	remote *remoteTier
}

// DefaultCacheDir is $KUBEBAKE_CACHE, else $XDG_CACHE_HOME/kubebake, else ~/.cache/kubebake.
func DefaultCacheDir() string {
	if d := os.Getenv("KUBEBAKE_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kubebake")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".cache", "kubebake")
	}
	return filepath.Join(os.TempDir(), "kubebake-cache")
}

// OpenCache opens (creating it if needed) the cache in dir; "" means DefaultCacheDir().
func OpenCache(dir string) (*Cache, error) {
	if dir == "" {
		dir = DefaultCacheDir()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact cache %s: %w", dir, err)
	}
	for _, sub := range []string{blobsDir, stampsDir, scratchDir, locksDir} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			return nil, fmt.Errorf("cannot create the artifact cache in %s: %w; set --cache-dir or $KUBEBAKE_CACHE to a writable folder", abs, err)
		}
	}
	return &Cache{dir: abs}, nil
}

// Dir is the cache's root folder.
func (c *Cache) Dir() string { return c.dir }

// BlobPath is where the blob with this sha256 lives (whether or not it is present).
func (c *Cache) BlobPath(sha256hex string) string {
	return filepath.Join(c.dir, blobsDir, sha256hex)
}

func (c *Cache) stampPath(sha256hex string) string {
	return filepath.Join(c.dir, stampsDir, sha256hex)
}

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

func checkHex(sha256hex string) error {
	if !ValidSHA256(sha256hex) {
		return fmt.Errorf("%q is not a sha256 (64 lowercase hex digits)", sha256hex)
	}
	return nil
}

// Lookup returns the path of the blob with this sha256 if the cache holds it intact. On a
// local miss it looks in the shared cache, if there is one (UseRemote), and keeps what it
// downloads; an object there that does not hash to sha256hex is a *RemoteChecksumError.
func (c *Cache) Lookup(sha256hex string) (path string, ok bool, err error) {
	if path, ok, err = c.lookupLocal(sha256hex); err != nil || ok {
		return path, ok, err
	}
	return c.lookupRemote(sha256hex)
}

// lookupLocal is Lookup in this machine's cache only.
//
// Verification trade-off: hashing every blob on every lookup would cost seconds for the
// ~600 MB of a default recipe, so a blob is fully hashed once (when written, or when its stamp
// does not match) and a stamp records its size, mtime (ns), inode and device at that moment.
// A later lookup whose stat matches the stamp trusts the blob without reading it. Anything
// that rewrites or replaces the file (an editor, a copy, cp over it, a truncation) changes the
// inode, size or mtime and forces a full re-hash; a corrupt blob is then removed and reported
// missing, so the caller fetches it again. What a stamp cannot see: corruption that leaves
// every stat field alone (bit rot under the filesystem, a deliberate write that restores the
// mtime). `kubebake cache verify` (Cache.Verify) re-hashes everything for that. ctime is
// deliberately not part of the stamp: hard-linking a blob into a build tree changes its
// ctime without changing its content, and would cost a re-hash each time (git makes the same
// choice with core.trustctime=false).
func (c *Cache) lookupLocal(sha256hex string) (path string, ok bool, err error) {
	if err := checkHex(sha256hex); err != nil {
		return "", false, err
	}
	path = c.BlobPath(sha256hex)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("artifact cache: %w", err)
	}
	if !st.Mode().IsRegular() {
		c.removeBlob(sha256hex, "not a regular file")
		return "", false, nil
	}
	if want, err := os.ReadFile(c.stampPath(sha256hex)); err == nil && string(want) == stampOf(st) {
		return path, true, nil
	}
	return c.verifyBlob(sha256hex)
}

// verifyBlob fully hashes a blob; an intact blob gets a fresh stamp, a corrupt one is removed.
func (c *Cache) verifyBlob(sha256hex string) (string, bool, error) {
	path := c.BlobPath(sha256hex)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("artifact cache: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", false, fmt.Errorf("artifact cache: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", false, fmt.Errorf("artifact cache: reading %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha256hex {
		c.removeBlob(sha256hex, "content hashes to sha256:"+got)
		return "", false, nil
	}
	c.writeStamp(sha256hex, st)
	return path, true, nil
}

func (c *Cache) removeBlob(sha256hex, why string) {
	slog.Warn("artifact cache: removing a corrupt entry; it will be fetched again",
		"sha256", sha256hex, "path", c.BlobPath(sha256hex), "reason", why)
	os.Remove(c.stampPath(sha256hex))
	if err := os.Remove(c.BlobPath(sha256hex)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		slog.Warn("artifact cache: cannot remove corrupt entry", "path", c.BlobPath(sha256hex), "err", err)
	}
}

func stampOf(st fs.FileInfo) string {
	var ino, dev uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino, dev = sys.Ino, uint64(sys.Dev)
	}
	return fmt.Sprintf("%s size=%d mtime=%d ino=%d dev=%d\n", stampFormat, st.Size(), st.ModTime().UnixNano(), ino, dev)
}

// writeStamp records that the blob, as st describes it, was hashed and found intact. A
// failure only costs a re-hash later, so it is logged, not returned.
func (c *Cache) writeStamp(sha256hex string, st fs.FileInfo) {
	if err := atomicfile.WriteFile(c.stampPath(sha256hex), []byte(stampOf(st)), 0o644); err != nil {
		slog.Debug("artifact cache: cannot write verification stamp", "sha256", sha256hex, "err", err)
	}
}

// ChecksumError says that content did not hash to what was expected. Nothing was written.
type ChecksumError struct {
	Want, Got string
	Size      int64 // bytes received
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("sha256 mismatch: expected %s, got %s (%d bytes); the content was refused and nothing was written to the cache", e.Want, e.Got, e.Size)
}

// Put stores r's content under sha256hex. The content is hashed while it is written to a
// temporary file that is renamed into place only if it hashes to sha256hex; on a mismatch the
// error is a *ChecksumError and the cache is unchanged. If the cache already holds the blob
// intact, r is not read. A blob written here is uploaded to the shared cache, if there is one
// and it lacks the blob.
func (c *Cache) Put(sha256hex string, r io.Reader) (path string, err error) {
	if err := checkHex(sha256hex); err != nil {
		return "", err
	}
	// Local only: the caller has the content in hand, downloading it again would be waste.
	if p, ok, err := c.lookupLocal(sha256hex); err != nil {
		return "", err
	} else if ok {
		return p, nil
	}
	if _, path, err = c.put(r, sha256hex); err != nil {
		return "", err
	}
	c.shareBlob(sha256hex, path)
	return path, nil
}

// PutFile copies the file src into the cache and returns its sha256 and cache path. It is for
// outputs whose hash is not known beforehand (Go builds). src is left in place. Like Put, it
// uploads the blob to the shared cache if there is one.
func (c *Cache) PutFile(src string) (sha256hex, path string, err error) {
	f, err := os.Open(src)
	if err != nil {
		return "", "", fmt.Errorf("artifact cache: %w", err)
	}
	defer f.Close()
	if sha256hex, path, err = c.put(f, ""); err != nil {
		return "", "", err
	}
	c.shareBlob(sha256hex, path)
	return sha256hex, path, nil
}

// put writes r to a temporary blob, hashing it; with want set it refuses a mismatch, with want
// empty it files the blob under whatever it hashes to. It touches the local cache only.
func (c *Cache) put(r io.Reader, want string) (string, string, error) {
	dir := filepath.Join(c.dir, blobsDir)
	tmp, err := atomicfile.Create(filepath.Join(dir, "incoming"), 0o444)
	if err != nil {
		return "", "", fmt.Errorf("artifact cache: %w", err)
	}
	defer tmp.Abort()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err != nil {
		return "", "", err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return "", "", &ChecksumError{Want: want, Got: got, Size: n}
	}
	tmp.Path = c.BlobPath(got)
	if err := tmp.Commit(); err != nil {
		return "", "", fmt.Errorf("artifact cache: %w", err)
	}
	if st, err := os.Stat(tmp.Path); err == nil {
		c.writeStamp(got, st)
	}
	return got, tmp.Path, nil
}

// Scratch returns a persistent work folder under the cache (created if needed), e.g. "gomod"
// or "rootfs". name may contain slashes but must stay inside the scratch area. Users that
// may run in two processes at once should hold Cache.Lock(name) while they work in it.
func (c *Cache) Scratch(name string) (string, error) {
	clean := filepath.Clean(name)
	if name == "" || filepath.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("artifact cache: scratch name %q must be a relative path inside the cache", name)
	}
	dir := filepath.Join(c.dir, scratchDir, clean)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("artifact cache: %w", err)
	}
	return dir, nil
}

// Lock takes an exclusive advisory lock (flock) named name, waiting until it is free or ctx
// is done. Locks exclude other processes and other Lock calls in this process alike. Call
// unlock to release; the kernel releases it too if the process dies.
func (c *Cache) Lock(ctx context.Context, name string) (unlock func(), err error) {
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return nil, fmt.Errorf("artifact cache: lock name %q must be a plain name", name)
	}
	path := filepath.Join(c.dir, locksDir, name+".lock")
	unlock, err = flock.Acquire(ctx, path, func() {
		slog.Info("waiting for another kubebake to release the cache lock", "lock", path)
	})
	if err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	return unlock, nil
}

// BlobInfo describes one cached blob.
type BlobInfo struct {
	SHA256 string `json:"sha256"`
	Path   string `json:"path"`
	Size   int64  `json:"size"`
}

// Blobs lists the cache's blobs (sorted by sha256), without verifying them.
func (c *Cache) Blobs() ([]BlobInfo, error) {
	ents, err := os.ReadDir(filepath.Join(c.dir, blobsDir))
	if err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	var out []BlobInfo
	for _, e := range ents {
		if !ValidSHA256(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, BlobInfo{SHA256: e.Name(), Path: filepath.Join(c.dir, blobsDir, e.Name()), Size: info.Size()})
	}
	return out, nil
}

// VerifyReport is the result of a full cache check.
type VerifyReport struct {
	Checked int      `json:"checked"`
	Bytes   int64    `json:"bytes"`
	Removed []string `json:"removed"` // sha256 of corrupt blobs that were removed
}

// Verify re-hashes every blob, ignoring stamps. Corrupt blobs are removed (the next fetch
// downloads or rebuilds them); intact ones get a fresh stamp.
func (c *Cache) Verify(ctx context.Context) (*VerifyReport, error) {
	blobs, err := c.Blobs()
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{Removed: []string{}}
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		_, ok, err := c.verifyBlob(b.SHA256)
		if err != nil {
			return rep, err
		}
		rep.Checked++
		if ok {
			rep.Bytes += b.Size
		} else {
			rep.Removed = append(rep.Removed, b.SHA256)
		}
	}
	return rep, nil
}

// PruneReport says what Prune removed.
type PruneReport struct {
	Blobs     []string `json:"blobs"` // sha256 of removed blobs
	Bytes     int64    `json:"bytes"`
	TempFiles int      `json:"tempFiles"`
	Stamps    int      `json:"stamps"`
}

// Prune removes leftovers of interrupted writes (temporary files older than an hour), stamps
// without a blob, and, when keep is not nil, every blob for which keep returns false.
func (c *Cache) Prune(keep func(sha256hex string) bool) (*PruneReport, error) {
	rep := &PruneReport{Blobs: []string{}}
	dir := filepath.Join(c.dir, blobsDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact cache: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(dir, name)
		if !ValidSHA256(name) {
			// A temporary file of a write in progress elsewhere is young; leave those alone.
			if info, err := e.Info(); err == nil && strings.HasPrefix(name, ".") && time.Since(info.ModTime()) > time.Hour {
				if os.Remove(p) == nil {
					rep.TempFiles++
				}
			}
			continue
		}
		if keep != nil && !keep(name) {
			info, _ := e.Info()
			os.Remove(c.stampPath(name))
			if err := os.Remove(p); err != nil {
				return rep, fmt.Errorf("artifact cache: %w", err)
			}
			rep.Blobs = append(rep.Blobs, name)
			if info != nil {
				rep.Bytes += info.Size()
			}
		}
	}
	stamps, _ := os.ReadDir(filepath.Join(c.dir, stampsDir))
	for _, e := range stamps {
		if !ValidSHA256(e.Name()) {
			continue
		}
		if _, err := os.Lstat(c.BlobPath(e.Name())); errors.Is(err, fs.ErrNotExist) {
			if os.Remove(filepath.Join(c.dir, stampsDir, e.Name())) == nil {
				rep.Stamps++
			}
		}
	}
	return rep, nil
}
