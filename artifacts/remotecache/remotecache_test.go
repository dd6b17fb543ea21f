package remotecache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/artifacts/aws/fakeaws"
	"github.com/kubebake/kubebake/artifacts/remotecache"
)

var _ artifacts.Remote = (*remotecache.S3)(nil)

const (
	bucket = "kubebake-cache"
	region = "eu-west-1"
)

// TestMain keeps every test away from AWS: no shared config or credentials files, no IMDS,
// no endpoint, profile or keys from the environment. Requests go to the fake S3 on 127.0.0.1
// (gofakes3, in process), through fakeaws.HTTPClient, which dials loopback addresses only.
func TestMain(m *testing.M) {
	for _, k := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
		remotecache.EnvRemote, remotecache.EnvEndpoint} {
		os.Unsetenv(k)
	}
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Setenv("AWS_CONFIG_FILE", os.DevNull)
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	os.Exit(m.Run())
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func startS3(t *testing.T) *fakeaws.Server {
	t.Helper()
	srv := fakeaws.StartS3(t, bucket)
	return srv
}

// remote is the shared cache s3://kubebake-cache/ci at endpoint, with the fake's credentials
// (or a wrong secret) and one attempt per request (the SDK's retries would only slow the
// failure tests down).
func remote(t *testing.T, endpoint, secret string) *remotecache.S3 {
	t.Helper()
	loc, err := remotecache.ParseLocation("s3://" + bucket + "/ci")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fakeaws.Config(region, secret)
	cfg.RetryMaxAttempts = 1
	r, err := remotecache.New(context.Background(), loc, remotecache.Options{Endpoint: endpoint, Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runner is one CI runner's cache: a local folder of its own, the shared remote behind it.
func runner(t *testing.T, r artifacts.Remote) *artifacts.Cache {
	t.Helper()
	c, err := artifacts.OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if r != nil {
		c.UseRemote(context.Background(), r)
	}
	return c
}

// warnings collects the slog warnings of the test (the cache logs through slog.Default).
type warnings struct {
	mu    sync.Mutex
	lines []string
}

func captureWarnings(t *testing.T) *warnings {
	w := &warnings{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})))
	t.Cleanup(func() { slog.SetDefault(old) })
	return w
}

func (w *warnings) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, strings.TrimSpace(string(p)))
	return len(p), nil
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.lines...)
}

func TestParseLocation(t *testing.T) {
	for in, want := range map[string]remotecache.Location{
		"s3://kubebake-cache":             {Bucket: "kubebake-cache"},
		"s3://kubebake-cache/":            {Bucket: "kubebake-cache"},
		"s3://kubebake-cache/ci":          {Bucket: "kubebake-cache", Prefix: "ci"},
		"s3://kubebake-cache/ci/runners/": {Bucket: "kubebake-cache", Prefix: "ci/runners"},
		"s3://my.bucket-1/a/b":            {Bucket: "my.bucket-1", Prefix: "a/b"},
	} {
		got, err := remotecache.ParseLocation(in)
		if err != nil || got != want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for in, says := range map[string]string{
		"https://kubebake-cache/ci":      "only s3:// URLs",
		"kubebake-cache/ci":              "only s3:// URLs",
		"s3:///ci":                       "no bucket",
		"s3://":                          "no bucket",
		"s3://Kubebake_Cache/ci":         "not a valid S3 bucket name",
		"s3://ab/ci":                     "not a valid S3 bucket name",
		"s3://key:secret@kubebake-cache": "credentials",
		"s3://kubebake-cache/a/../b":     "segment",
		"s3://kubebake-cache/a//b":       "segment",
		"s3://kubebake-cache/ci?x=1":     "query",
	} {
		_, err := remotecache.ParseLocation(in)
		if err == nil || !strings.Contains(err.Error(), says) || !strings.Contains(err.Error(), "s3://BUCKET/PREFIX") && says != "credentials" {
			t.Errorf("ParseLocation(%q): %v; want an error saying %q and the form to give", in, err, says)
		}
	}
}

// Runner A fills the shared cache (Put, PutFile, a rootfs tarball); runner B, with a local
// cache of its own, finds each through the remote, checked, and keeps it: a second lookup
// sends no request. A third runner that puts a blob the bucket has sends a HEAD, no upload.
func TestTwoRunnersShareOneBucket(t *testing.T) {
	srv := startS3(t)
	warn := captureWarnings(t)
	ctx := context.Background()
	a, b := runner(t, remote(t, srv.S3.URL, "")), runner(t, remote(t, srv.S3.URL, ""))

	deb := []byte("a .deb, as fetch downloads it")
	if _, err := a.Put(sum(deb), bytes.NewReader(deb)); err != nil {
		t.Fatal(err)
	}
	kubelet := []byte("kubelet, as go build leaves it")
	built := filepath.Join(t.TempDir(), "kubelet")
	os.WriteFile(built, kubelet, 0o755)
	if h, _, err := a.PutFile(built); err != nil || h != sum(kubelet) {
		t.Fatalf("PutFile: %s %v", h, err)
	}
	tarball := bytes.Repeat([]byte("rootfs "), 100000)
	specKey := sum([]byte("a rootfs spec"))
	tarPath := filepath.Join(t.TempDir(), specKey+".tar")
	os.WriteFile(tarPath, tarball, 0o644)
	a.ShareRootfs(ctx, specKey, tarPath)

	for _, key := range []string{"ci/blobs/sha256/" + sum(deb), "ci/blobs/sha256/" + sum(kubelet), "ci/rootfs/" + specKey + ".tar"} {
		if !srv.ObjectExists(bucket, key) {
			t.Errorf("no object %s in the bucket", key)
		}
	}
	if st := a.RemoteStats(); st.Uploaded != 3 || st.Downloaded != 0 || st.Remote != "s3://kubebake-cache/ci" {
		t.Errorf("A's stats: %+v", st)
	}

	for _, data := range [][]byte{deb, kubelet} {
		p, ok, err := b.Lookup(sum(data))
		if err != nil || !ok {
			t.Fatalf("B's lookup of %s: ok=%v err=%v", sum(data)[:12], ok, err)
		}
		if got, _ := os.ReadFile(p); !bytes.Equal(got, data) || p != b.BlobPath(sum(data)) {
			t.Errorf("B's blob %s holds %q", p, got)
		}
	}
	dst := filepath.Join(t.TempDir(), specKey+".tar")
	if ok, err := b.FetchRootfs(ctx, specKey, dst); err != nil || !ok {
		t.Fatalf("B's rootfs: ok=%v err=%v", ok, err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, tarball) {
		t.Error("B's rootfs tarball differs from A's")
	}

	// Now local: no further request.
	gets := srv.Calls("s3:GetObject")
	if _, ok, err := b.Lookup(sum(deb)); !ok || err != nil || srv.Calls("s3:GetObject") != gets {
		t.Errorf("second lookup: ok=%v err=%v, %d more GETs", ok, err, srv.Calls("s3:GetObject")-gets)
	}
	// A miss in both tiers is a miss, not an error or a warning.
	if _, ok, err := b.Lookup(sum([]byte("nobody has this"))); ok || err != nil {
		t.Errorf("lookup of a blob nobody has: ok=%v err=%v", ok, err)
	}
	if ok, err := b.FetchRootfs(ctx, sum([]byte("another spec")), filepath.Join(t.TempDir(), "x.tar")); ok || err != nil {
		t.Errorf("rootfs nobody built: ok=%v err=%v", ok, err)
	}

	// HEAD first: a blob the bucket holds is not uploaded again.
	c := runner(t, remote(t, srv.S3.URL, ""))
	puts, heads := srv.Calls("s3:PutObject"), srv.Calls("s3:HeadObject")
	if _, err := c.Put(sum(deb), bytes.NewReader(deb)); err != nil {
		t.Fatal(err)
	}
	if srv.Calls("s3:PutObject") != puts || srv.Calls("s3:HeadObject") != heads+1 {
		t.Errorf("putting a blob the bucket has: %d uploads, %d HEADs", srv.Calls("s3:PutObject")-puts, srv.Calls("s3:HeadObject")-heads)
	}
	if w := warn.all(); len(w) > 0 {
		t.Errorf("warnings: %q", w)
	}
}

// An object whose bytes changed in the bucket: B's lookup fails naming the object and both
// sums, and keeps nothing (no blob, no temporary file). The same for a rootfs tarball.
func TestCorruptObjectIsRefused(t *testing.T) {
	srv := startS3(t)
	ctx := context.Background()
	a, b := runner(t, remote(t, srv.S3.URL, "")), runner(t, remote(t, srv.S3.URL, ""))
	data := []byte("containerd .deb")
	if _, err := a.Put(sum(data), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	bad := []byte("containerd .deb, but not quite")
	if err := srv.ReplaceObjectData(bucket, "ci/blobs/sha256/"+sum(data), bad); err != nil {
		t.Fatal(err)
	}
	_, ok, err := b.Lookup(sum(data))
	var ce *artifacts.RemoteChecksumError
	if ok || !errors.As(err, &ce) {
		t.Fatalf("lookup of a corrupt object: ok=%v err=%v", ok, err)
	}
	t.Log(err)
	for _, s := range []string{"s3://kubebake-cache/ci/blobs/sha256/" + sum(data), sum(data), sum(bad)} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("the error does not name %s: %v", s, err)
		}
	}
	if _, err := os.Stat(b.BlobPath(sum(data))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the corrupt blob was kept: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(b.BlobPath(sum(data)))); len(ents) > 0 {
		t.Errorf("left in B's blobs: %s", ents[0].Name())
	}

	specKey := sum([]byte("spec"))
	tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
	os.WriteFile(tarPath, []byte("a tarball"), 0o644)
	a.ShareRootfs(ctx, specKey, tarPath)
	if err := srv.ReplaceObjectData(bucket, "ci/rootfs/"+specKey+".tar", []byte("a tarbalL")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ok, err = b.FetchRootfs(ctx, specKey, filepath.Join(dir, specKey+".tar"))
	if ok || !errors.As(err, &ce) || !strings.Contains(err.Error(), "ci/rootfs/"+specKey+".tar") ||
		!strings.Contains(err.Error(), sum([]byte("a tarball"))) || !strings.Contains(err.Error(), sum([]byte("a tarbalL"))) {
		t.Errorf("corrupt rootfs: ok=%v err=%v", ok, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("left beside the rootfs: %s", ents[0].Name())
	}
}

// A shared cache that cannot be used: the local cache works as if there were none, and one
// warning names the bucket and the error.
func TestUnusableRemoteFallsBackToLocal(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close() // nothing listens there now: connection refused

	srv := startS3(t)
	for _, tc := range []struct {
		name, endpoint, secret, says string
	}{
		{"unreachable", closed, "", "connection refused"},
		{"denied", srv.S3.URL, "not-the-secret", "SignatureDoesNotMatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warn := captureWarnings(t)
			ctx := context.Background()
			c := runner(t, remote(t, tc.endpoint, tc.secret))
			if _, ok, err := c.Lookup(sum([]byte("not here"))); ok || err != nil {
				t.Errorf("lookup: ok=%v err=%v", ok, err)
			}
			data := []byte("etcd")
			p, err := c.Put(sum(data), bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(p); !bytes.Equal(got, data) {
				t.Errorf("local blob holds %q", got)
			}
			if _, ok, err := c.Lookup(sum(data)); !ok || err != nil {
				t.Errorf("lookup after put: ok=%v err=%v", ok, err)
			}
			built := filepath.Join(t.TempDir(), "kubectl")
			os.WriteFile(built, []byte("kubectl"), 0o755)
			if _, _, err := c.PutFile(built); err != nil {
				t.Fatal(err)
			}
			if ok, err := c.FetchRootfs(ctx, sum([]byte("spec")), filepath.Join(t.TempDir(), "r.tar")); ok || err != nil {
				t.Errorf("rootfs: ok=%v err=%v", ok, err)
			}
			c.ShareRootfs(ctx, sum([]byte("spec")), built)

			w := warn.all()
			t.Log(w)
			if len(w) != 1 || !strings.Contains(w[0], "s3://kubebake-cache/ci") || !strings.Contains(w[0], tc.says) {
				t.Errorf("want one warning naming the bucket and %q, got %q", tc.says, w)
			}
			if st := c.RemoteStats(); !st.Unavailable || st.Uploaded != 0 {
				t.Errorf("stats: %+v", st)
			}
		})
	}
	if srv.ObjectCount(bucket) != 0 {
		t.Error("a refused request stored an object")
	}
}

// The standard chain and the endpoint variables, as the command line uses them: keys from
// the environment, KUBEBAKE_S3_ENDPOINT path-style; a bad endpoint is refused by its name.
func TestEndpointAndCredentialsFromEnvironment(t *testing.T) {
	srv := startS3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", fakeaws.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", fakeaws.SecretKey)
	loc, _ := remotecache.ParseLocation("s3://" + bucket + "/env")

	t.Setenv(remotecache.EnvEndpoint, "127.0.0.1:9000")
	if _, err := remotecache.New(context.Background(), loc, remotecache.Options{}); err == nil || !strings.Contains(err.Error(), remotecache.EnvEndpoint) || !strings.Contains(err.Error(), "http://") {
		t.Errorf("bad endpoint: %v", err)
	}

	t.Setenv(remotecache.EnvEndpoint, srv.S3.URL)
	r, err := remotecache.New(context.Background(), loc, remotecache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("flanneld")
	if err := r.Put(context.Background(), "blobs/sha256/"+sum(data), bytes.NewReader(data), int64(len(data)), sum(data)); err != nil {
		t.Fatal(err)
	}
	body, recorded, err := r.Open(context.Background(), "blobs/sha256/"+sum(data))
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	if recorded != sum(data) || !srv.ObjectExists(bucket, "env/blobs/sha256/"+sum(data)) {
		t.Errorf("recorded sha256 %q", recorded)
	}
	if _, _, err := r.Open(context.Background(), "blobs/sha256/"+sum([]byte("x"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing object: %v", err)
	}

	// Without an endpoint override the bucket's region is needed.
	t.Setenv(remotecache.EnvEndpoint, "")
	if _, err := remotecache.New(context.Background(), loc, remotecache.Options{}); err == nil || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("no region: %v", err)
	}
}
