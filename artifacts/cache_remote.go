package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"sync"
	"sync/atomic"

	"github.com/kubebake/kubebake/internal/atomicfile"
)

// Remote is a second cache tier that several machines share (artifacts/remotecache keeps one
// in S3). The local cache stays the primary: a local miss is looked up in the remote
// (read-through) and a blob written locally is uploaded to it (write-back).
//
// Keys are slash-separated and relative to the remote's root:
//
//	blobs/sha256/<hex>   a blob, named by the sha256 of its content
//	rootfs/<key>.tar     a rootfs tarball, named by its spec key (builder.RootfsSpec.Key)
//
// Every object carries the sha256 of its content as its uploader computed it; a download is
// checked against it (and, for a blob, against its name) before anything is kept.
type Remote interface {
	// Has reports whether the remote holds key.
	Has(ctx context.Context, key string) (bool, error)
	// Open returns the content of key and the sha256 its uploader recorded ("" if none). A
	// missing object is an error that wraps fs.ErrNotExist.
	Open(ctx context.Context, key string) (body io.ReadCloser, sha256hex string, err error)
	// Put stores size bytes of content under key, recording sha256hex with it.
	Put(ctx context.Context, key string, content io.ReadSeeker, size int64, sha256hex string) error
	// URL names key for messages (s3://bucket/prefix/key); URL("") names the remote itself.
	URL(key string) string
}

func remoteBlobKey(sha256hex string) string { return path.Join(blobsDir, sha256hex) }
func remoteRootfsKey(specKey string) string { return path.Join("rootfs", specKey+".tar") }

// RemoteChecksumError says that an object of the shared cache does not hash to what it should.
// The downloaded bytes were discarded.
type RemoteChecksumError struct {
	Object    string // s3://bucket/prefix/key
	Want, Got string
}

func (e *RemoteChecksumError) Error() string {
	return fmt.Sprintf("shared cache object %s is corrupt: expected sha256 %s, got %s; the download was discarded and nothing was kept; delete the object (the next build that makes it uploads it again)",
		e.Object, e.Want, e.Got)
}

// RemoteStats counts what the shared cache gave and took in this process.
type RemoteStats struct {
	Remote     string `json:"remote"`
	Downloaded int64  `json:"downloaded"`
	Uploaded   int64  `json:"uploaded"`
	// Unavailable is true once a failure took the remote out of use (see remoteTier.fail).
	Unavailable bool `json:"unavailable"`
}

// remoteTier is the Remote as the Cache uses it: with the context of its requests and the
// switch that turns it off after a failure.
type remoteTier struct {
	Remote
	// ctx bounds the requests of Lookup and Put, which take no context of their own (they
	// have many callers): it is the context of the command that attached the remote, so
	// Ctrl-C stops a download.
	ctx        context.Context
	off        atomic.Bool
	warnOnce   sync.Once
	downloaded atomic.Int64
	uploaded   atomic.Int64
}

// UseRemote puts r behind the cache as a shared second tier. Call it once, after OpenCache and
// before the cache is used; ctx is the context of the remote's requests from Lookup and Put.
func (c *Cache) UseRemote(ctx context.Context, r Remote) {
	c.remote = &remoteTier{Remote: r, ctx: ctx}
}

// RemoteStats says what the shared cache did so far; nil when the cache has none.
func (c *Cache) RemoteStats() *RemoteStats {
	t := c.remote
	if t == nil {
		return nil
	}
	return &RemoteStats{Remote: t.URL(""), Downloaded: t.downloaded.Load(), Uploaded: t.uploaded.Load(), Unavailable: t.off.Load()}
}

func (t *remoteTier) usable() bool { return t != nil && !t.off.Load() }

// fail takes the remote out of use for the rest of the process. A shared cache is an
// optimisation: a build that can go on with the local cache must not fail because the bucket
// is unreachable or refuses us, and one warning says so instead of one per artifact. It
// returns nil (the caller goes on as after a miss), or the context's error when the command
// is being stopped, which is no fault of the remote's.
func (t *remoteTier) fail(ctx context.Context, op, key string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	t.off.Store(true)
	t.warnOnce.Do(func() {
		slog.Warn("artifact cache: the shared cache failed; going on with the local cache only for the rest of this run (check the bucket, the AWS credentials and region, and KUBEBAKE_S3_ENDPOINT)",
			"remote", t.URL(""), "op", op, "object", t.URL(key), "err", err)
	})
	return nil
}

// lookupRemote downloads the blob from the shared cache into the local one, through the same
// write path as Put: a temporary file hashed as it is written and renamed into place only if
// it hashes to sha256hex.
func (c *Cache) lookupRemote(sha256hex string) (string, bool, error) {
	t := c.remote
	if !t.usable() {
		return "", false, nil
	}
	key := remoteBlobKey(sha256hex)
	body, _, err := t.Open(t.ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, t.fail(t.ctx, "download", key, err)
	}
	defer body.Close()
	src := &readErrors{r: body}
	_, path, err := c.put(src, sha256hex)
	var ce *ChecksumError
	switch {
	case errors.As(err, &ce):
		return "", false, &RemoteChecksumError{Object: t.URL(key), Want: sha256hex, Got: ce.Got}
	case src.err != nil:
		return "", false, t.fail(t.ctx, "download", key, src.err)
	case err != nil:
		return "", false, err // the local side: a full disk, a read-only cache
	}
	t.downloaded.Add(1)
	slog.Debug("artifact cache: downloaded from the shared cache", "object", t.URL(key))
	return path, true, nil
}

// shareBlob uploads a blob just written locally, unless the remote has it already. Blobs are
// named by their sha256 and never change, so runners that upload the same blob at once write
// the same bytes under the same name: the race is harmless and needs no lock.
func (c *Cache) shareBlob(sha256hex, path string) {
	t := c.remote
	if !t.usable() {
		return
	}
	t.upload(t.ctx, remoteBlobKey(sha256hex), path, func() (string, error) { return sha256hex, nil })
}

// upload puts the file at path under key, after a HEAD that finds it missing; sum is only
// called then (a rootfs tarball is hashed for the upload, not before each check). Failures
// take the remote out of use; a local read error is only logged: nothing here fails a build.
func (t *remoteTier) upload(ctx context.Context, key, path string, sum func() (string, error)) {
	has, err := t.Has(ctx, key)
	if err != nil {
		t.fail(ctx, "check", key, err)
		return
	}
	if has {
		return
	}
	sha, err := sum()
	if err != nil {
		slog.Warn("artifact cache: not uploaded to the shared cache", "object", t.URL(key), "err", err)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		slog.Warn("artifact cache: not uploaded to the shared cache", "object", t.URL(key), "err", err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		slog.Warn("artifact cache: not uploaded to the shared cache", "object", t.URL(key), "err", err)
		return
	}
	if err := t.Put(ctx, key, f, st.Size(), sha); err != nil {
		t.fail(ctx, "upload", key, err)
		return
	}
	t.uploaded.Add(1)
	slog.Debug("artifact cache: uploaded to the shared cache", "object", t.URL(key))
}

// FetchRootfs fills dst with the rootfs tarball of specKey from the shared cache, if there is
// one and it has the tarball, and reports whether it did. Unlike blobs, tarballs are named by
// what they are built from, not by their content, so the download is checked against the
// sha256 its uploader recorded; a mismatch is an error and dst is not touched.
func (c *Cache) FetchRootfs(ctx context.Context, specKey, dst string) (bool, error) {
	if err := checkHex(specKey); err != nil {
		return false, fmt.Errorf("rootfs key: %w", err)
	}
	t := c.remote
	if !t.usable() {
		return false, nil
	}
	key := remoteRootfsKey(specKey)
	body, want, err := t.Open(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, t.fail(ctx, "download", key, err)
	}
	defer body.Close()
	if !ValidSHA256(want) {
		return false, fmt.Errorf("shared cache object %s records no valid sha256 (%q), so it cannot be checked; delete the object (the next build that makes the tarball uploads it again)", t.URL(key), want)
	}
	tmp, err := atomicfile.Create(dst, 0o644)
	if err != nil {
		return false, err
	}
	defer tmp.Abort()
	src := &readErrors{r: body}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), src); err != nil {
		if src.err != nil {
			return false, t.fail(ctx, "download", key, src.err)
		}
		return false, fmt.Errorf("writing %s: %w", dst, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return false, &RemoteChecksumError{Object: t.URL(key), Want: want, Got: got}
	}
	if err := tmp.Commit(); err != nil {
		return false, err
	}
	t.downloaded.Add(1)
	slog.Info("rootfs tarball downloaded from the shared cache", "object", t.URL(key))
	return true, nil
}

// ShareRootfs uploads the rootfs tarball of specKey at path to the shared cache, if there is
// one and it lacks the tarball, with the tarball's sha256 recorded for FetchRootfs. Two
// runners that build the same spec at once may both upload: the tarballs differ (SSH host
// keys, which the image hygiene removes), and S3 keeps the last whole object, whose recorded
// sha256 is its own, so a reader always gets a tarball and the sum that matches it.
func (c *Cache) ShareRootfs(ctx context.Context, specKey, path string) {
	t := c.remote
	if !t.usable() || !ValidSHA256(specKey) {
		return
	}
	t.upload(ctx, remoteRootfsKey(specKey), path, func() (string, error) { return fileSHA256(path) })
}

// readErrors remembers a read error, which tells a failed download (the remote's failure)
// from a failed write (the local disk's).
type readErrors struct {
	r   io.Reader
	err error
}

func (e *readErrors) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}
