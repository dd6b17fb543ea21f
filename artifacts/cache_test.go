package artifacts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func newCache(t *testing.T) *Cache {
	t.Helper()
	c, err := OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("KUBEBAKE_CACHE", "/x/kb")
	t.Setenv("XDG_CACHE_HOME", "/x/xdg")
	if got := DefaultCacheDir(); got != "/x/kb" {
		t.Errorf("with KUBEBAKE_CACHE: %s", got)
	}
	t.Setenv("KUBEBAKE_CACHE", "")
	if got := DefaultCacheDir(); got != "/x/xdg/kubebake" {
		t.Errorf("with XDG_CACHE_HOME: %s", got)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/x/home")
	if got := DefaultCacheDir(); got != "/x/home/.cache/kubebake" {
		t.Errorf("with HOME: %s", got)
	}
}

func TestCachePutLookup(t *testing.T) {
	c := newCache(t)
	data := []byte("kubelet binary")
	h := sum(data)
	if _, ok, err := c.Lookup(h); ok || err != nil {
		t.Fatalf("empty cache: ok=%v err=%v", ok, err)
	}
	p, err := c.Put(h, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(c.Dir(), "blobs", "sha256", h) {
		t.Errorf("path %s", p)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content %q %v", got, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm()&0o222 != 0 {
		t.Errorf("blob is writable: %v", st.Mode())
	}
	p2, ok, err := c.Lookup(h)
	if !ok || err != nil || p2 != p {
		t.Fatalf("lookup: %s %v %v", p2, ok, err)
	}
	// A second Put of a present blob does not read the reader.
	if _, err := c.Put(h, failingReader{}); err != nil {
		t.Errorf("Put of a present blob read its reader: %v", err)
	}
	if _, _, err := c.Lookup("ABC"); err == nil {
		t.Error("Lookup accepted a malformed hash")
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("must not be read") }

func TestCachePutMismatch(t *testing.T) {
	c := newCache(t)
	want := sum([]byte("expected"))
	_, err := c.Put(want, strings.NewReader("something else"))
	var ce *ChecksumError
	if !errors.As(err, &ce) {
		t.Fatalf("want a ChecksumError, got %v", err)
	}
	if ce.Want != want || ce.Got != sum([]byte("something else")) || ce.Size != 14 {
		t.Errorf("error fields: %+v", ce)
	}
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("message: %v", err)
	}
	assertBlobDirEmpty(t, c)
}

func assertBlobDirEmpty(t *testing.T, c *Cache) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(c.Dir(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("cache holds %s", e.Name())
	}
}

func TestCachePutReadError(t *testing.T) {
	c := newCache(t)
	_, err := c.Put(sum([]byte("x")), failingReader{})
	if err == nil || !strings.Contains(err.Error(), "must not be read") {
		t.Fatalf("err %v", err)
	}
	assertBlobDirEmpty(t, c)
}

func TestCachePutFile(t *testing.T) {
	c := newCache(t)
	src := filepath.Join(t.TempDir(), "kubectl")
	data := []byte("built by go")
	os.WriteFile(src, data, 0o755)
	h, p, err := c.PutFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if h != sum(data) {
		t.Errorf("hash %s", h)
	}
	if p2, ok, _ := c.Lookup(h); !ok || p2 != p {
		t.Errorf("lookup after PutFile: %s %v", p2, ok)
	}
	if _, err := os.Stat(src); err != nil {
		t.Errorf("source removed: %v", err)
	}
}

// corrupt rewrites a blob in place the way a careless tool would.
func corrupt(t *testing.T, path string, data []byte) {
	t.Helper()
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCacheCorruptEntryRemoved(t *testing.T) {
	c := newCache(t)
	data := []byte("containerd package")
	h := sum(data)
	p, _ := c.Put(h, bytes.NewReader(data))

	corrupt(t, p, []byte("CONTAINERD package")) // same size, new mtime
	if _, ok, err := c.Lookup(h); ok || err != nil {
		t.Fatalf("corrupt entry reported present: ok=%v err=%v", ok, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("corrupt blob not removed: %v", err)
	}
	// Fetch again: Put works and Lookup finds it.
	if _, err := c.Put(h, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.Lookup(h); !ok {
		t.Error("re-put entry missing")
	}
}

func TestCacheStampSkipsRehash(t *testing.T) {
	c := newCache(t)
	data := []byte("original")
	h := sum(data)
	p, _ := c.Put(h, bytes.NewReader(data))
	st, _ := os.Stat(p)

	// Corrupt the content but restore size and mtime: the stamp trusts it (documented
	// trade-off), and Verify, which re-hashes everything, catches it.
	corrupt(t, p, []byte("ORIGINAL"))
	os.Chtimes(p, st.ModTime(), st.ModTime())
	if _, ok, _ := c.Lookup(h); !ok {
		t.Fatal("stamp not used: the lookup re-hashed an entry whose stat is unchanged")
	}
	rep, err := c.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 1 || len(rep.Removed) != 1 || rep.Removed[0] != h {
		t.Errorf("verify report %+v", rep)
	}
	if _, ok, _ := c.Lookup(h); ok {
		t.Error("entry still present after verify removed it")
	}
}

func TestCacheMissingStampRehashes(t *testing.T) {
	c := newCache(t)
	data := []byte("payload")
	h := sum(data)
	c.Put(h, bytes.NewReader(data))
	os.Remove(c.stampPath(h))
	if _, ok, _ := c.Lookup(h); !ok {
		t.Fatal("intact entry without stamp not found")
	}
	if _, err := os.Stat(c.stampPath(h)); err != nil {
		t.Errorf("stamp not rewritten after re-hash: %v", err)
	}
}

func TestCacheScratch(t *testing.T) {
	c := newCache(t)
	d, err := c.Scratch("gomod")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(d); err != nil || !st.IsDir() || !strings.HasPrefix(d, c.Dir()) {
		t.Errorf("scratch %s %v", d, err)
	}
	for _, bad := range []string{"", "..", "../x", "/abs"} {
		if _, err := c.Scratch(bad); err == nil {
			t.Errorf("Scratch(%q) accepted", bad)
		}
	}
}

func TestCacheLockExcludes(t *testing.T) {
	c := newCache(t)
	ctx := context.Background()
	unlock, err := c.Lock(ctx, "gomod")
	if err != nil {
		t.Fatal(err)
	}
	// A second holder (another open file description: the same as another process) waits;
	// a cancelled context ends the wait with an error.
	cctx, cancel := context.WithCancel(ctx)
	got := make(chan error, 1)
	go func() {
		u, err := c.Lock(cctx, "gomod")
		if u != nil {
			u()
		}
		got <- err
	}()
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("second Lock while held: %v", err)
	}
	// A second Lock that starts waiting gets the lock once the first is released.
	acquired := make(chan func(), 1)
	go func() {
		u, err := c.Lock(ctx, "gomod")
		if err != nil {
			t.Error(err)
		}
		acquired <- u
	}()
	unlock()
	unlock() // idempotent
	u2 := <-acquired
	u2()
	// Another name is independent.
	u3, err := c.Lock(ctx, "rootfs")
	if err != nil {
		t.Fatal(err)
	}
	u3()
	if _, err := c.Lock(ctx, "a/b"); err == nil {
		t.Error("Lock accepted a name with a slash")
	}
}

func TestCachePrune(t *testing.T) {
	c := newCache(t)
	keep, drop := []byte("keep me"), []byte("drop me")
	c.Put(sum(keep), bytes.NewReader(keep))
	c.Put(sum(drop), bytes.NewReader(drop))
	stale := filepath.Join(c.Dir(), "blobs", "sha256", ".incoming.tmp-123")
	os.WriteFile(stale, []byte("partial"), 0o444)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	fresh := filepath.Join(c.Dir(), "blobs", "sha256", ".incoming.tmp-456")
	os.WriteFile(fresh, []byte("in progress"), 0o444)

	rep, err := c.Prune(func(h string) bool { return h == sum(keep) })
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Blobs) != 1 || rep.Blobs[0] != sum(drop) || rep.Bytes != int64(len(drop)) || rep.TempFiles != 1 {
		t.Errorf("report %+v", rep)
	}
	if _, ok, _ := c.Lookup(sum(keep)); !ok {
		t.Error("kept blob gone")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("a young temporary file (a write in progress) was removed")
	}
	if _, err := os.Stat(c.stampPath(sum(drop))); !os.IsNotExist(err) {
		t.Error("stamp of pruned blob left behind")
	}
}
