package builder

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// TestBuildMirrorCredentials (heavy: a real mmdebstrap run and image) builds the default
// recipe from a mirror that wants a login: a reverse proxy on 127.0.0.1 that refuses requests
// without basic auth and forwards the others to this machine's Debian mirror. base.mirror is
// http://kubebake:<password>@127.0.0.1:<port>/<mirror path>. The lock's epoch is moved so
// that no cached rootfs matches and mmdebstrap really downloads through the proxy (its rootfs
// is removed from the cache before and after). The password must be in no log line, no
// progress event, no file of the output folder (the raw image read byte by byte included),
// not in the rootfs tarball, and the image's sources.list must name the proxy without it.
func TestBuildMirrorCredentials(t *testing.T) {
	heavy(t)
	in := defaultInputs(t)
	const user = "kubebake"
	var rnd [12]byte
	rand.Read(rnd[:])
	password := "kb-" + hex.EncodeToString(rnd[:])

	upstream, err := url.Parse(in.mirror)
	if err != nil {
		t.Fatal(err)
	}
	var forward http.Handler
	switch upstream.Scheme {
	case "http", "https":
		target := &url.URL{Scheme: upstream.Scheme, Host: upstream.Host}
		forward = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Del("Authorization") // the test's login stays here
		}}
	case "file":
		forward = http.FileServer(http.Dir("/"))
	default:
		t.Fatalf("this machine's Debian mirror %s is neither http(s) nor file", upstream.Redacted())
	}
	var requests, authorized, refused, debs atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			refused.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="kubebake test mirror"`)
			http.Error(w, "login required", http.StatusUnauthorized)
			return
		}
		authorized.Add(1)
		if strings.HasSuffix(r.URL.Path, ".deb") {
			debs.Add(1)
		}
		forward.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	mirrorPath := strings.TrimRight(upstream.Path, "/")
	credMirror := strings.Replace(proxy.URL, "http://", "http://"+user+":"+password+"@", 1) + mirrorPath
	cleanMirror := proxy.URL + mirrorPath

	v := variant(in, func(r *recipes.Recipe, l *recipes.Lock) {
		r.Base.Mirror = credMirror
		l.SourceDateEpoch = in.lock.SourceDateEpoch + 7 // a rootfs key of this test alone
		// A lock without a package set: mmdebstrap itself downloads from the mirror. (With
		// one, only lock's simulated run below and the Go downloader meet the mirror.)
		l.Packages = nil
	})
	v.mirror = credMirror
	spec, err := NewRootfsSpec(context.Background(), v.recipe, v.lock, v.mirror, in.security, nil)
	if err != nil {
		t.Fatal(err)
	}
	rootfsDir, err := in.cache.Scratch("rootfs")
	if err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(rootfsDir, spec.Key()+".tar")
	dropCached := func() {
		os.Remove(cached)
		os.Remove(strings.TrimSuffix(cached, ".tar") + ".json")
	}
	dropCached() // an interrupted earlier run must not spare mmdebstrap
	defer dropCached()

	// Every log line: slog at debug level (internal/run logs command lines there) and the
	// build's progress events.
	var logs lockedBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)
	var events []string
	var eventsMu sync.Mutex
	out := filepath.Join(t.TempDir(), "out")
	opts := v.options(out)
	opts.Formats = []string{"raw"}
	opts.Progress = func(e Event) {
		eventsMu.Lock()
		events = append(events, fmt.Sprintf("%s %s %s", e.Stage, e.Kind, e.Message))
		eventsMu.Unlock()
	}
	// Locking resolves the package set through the same mirror: mmdebstrap --simulate gets
	// the credentials as an apt option.
	includes, err := recipes.RootfsPackages(in.recipe, in.lock)
	if err != nil {
		t.Fatal(err)
	}
	before := authorized.Load()
	refs, resolveErr := ResolvePackageSet(context.Background(), v.recipe, includes, credMirror, in.security)
	if resolveErr != nil {
		t.Errorf("resolving the package set through the credentialed mirror: %v", resolveErr)
	} else if authorized.Load() == before {
		t.Error("the simulated run did not ask the mirror with the credentials")
	}
	picked := map[string]bool{}
	for _, r := range refs {
		picked[r.Name+"="+r.Version] = true
	}
	for _, in := range includes {
		if resolveErr == nil && !picked[in] {
			t.Errorf("the simulated run's set lacks %s, which the recipe names (%d packages)", in, len(refs))
		}
	}
	res, buildErr := Build(context.Background(), opts)
	slog.SetDefault(old)

	eventsMu.Lock()
	all := logs.String() + "\n" + strings.Join(events, "\n")
	eventsMu.Unlock()
	if buildErr != nil {
		all += "\n" + buildErr.Error()
	}
	if strings.Contains(all, password) {
		for _, l := range strings.Split(all, "\n") {
			if strings.Contains(l, password) {
				t.Errorf("the password is in a log line: %s", strings.ReplaceAll(l, password, "<PASSWORD>"))
			}
		}
	}
	if buildErr != nil {
		t.Fatalf("build from the credentialed mirror: %v", buildErr)
	}
	t.Logf("proxy: %d requests, %d authorized (%d .deb), %d refused; build %.1fs", requests.Load(), authorized.Load(), debs.Load(), refused.Load(), res.Seconds)
	if res.RootfsCached {
		t.Fatal("the rootfs came from the cache: mmdebstrap did not run through the proxy")
	}
	if authorized.Load() == 0 || debs.Load() == 0 {
		t.Fatalf("mmdebstrap did not download through the proxy with the credentials: %d authorized requests, %d packages", authorized.Load(), debs.Load())
	}

	// The rootfs tarball mmdebstrap made, and every file of the output folder (the raw image
	// whole: any byte of the file system, free blocks included).
	scan := []string{cached, strings.TrimSuffix(cached, ".tar") + ".json"}
	filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			scan = append(scan, p)
		}
		return nil
	})
	for _, p := range scan {
		if found, err := fileContains(p, []byte(password)); err != nil {
			t.Errorf("%s: %v", p, err)
		} else if found {
			t.Errorf("%s holds the password", p)
		}
	}

	raw := filepath.Join(out, v.recipe.Name+".raw")
	var m Manifest
	if mm, err := os.ReadFile(filepath.Join(out, ManifestName)); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(mm, &m); err != nil {
		t.Fatal(err)
	}
	if m.Recipe == nil || m.Recipe.Base.Mirror != cleanMirror {
		t.Errorf("the manifest's base.mirror is not the mirror without credentials")
	}
	l, err := NewLayout(m.Image.Size)
	if err != nil {
		t.Fatal(err)
	}
	sources := debugfs(t, raw, l, "cat /etc/apt/sources.list")
	if strings.Contains(sources, password) || strings.Contains(sources, user+":") || !strings.Contains(sources, "deb "+cleanMirror+" ") {
		t.Errorf("/etc/apt/sources.list:\n%s", strings.ReplaceAll(sources, password, "<PASSWORD>"))
	}
	for _, line := range strings.Split(debugfs(t, raw, l, "ls -p /etc/apt/auth.conf.d"), "\n") {
		if f := strings.Split(line, "/"); len(f) > 5 && f[5] != "." && f[5] != ".." {
			t.Errorf("/etc/apt/auth.conf.d holds %s", f[5])
		}
	}
	if got := debugfs(t, raw, l, "stat /etc/apt/auth.conf"); strings.Contains(got, "Type: regular") {
		t.Error("/etc/apt/auth.conf is in the image")
	}
	for _, p := range []string{ImageManifestPath, "/etc/apt/apt.conf.d/99mmdebstrap"} {
		if got := debugfs(t, raw, l, "cat "+p); strings.Contains(got, password) {
			t.Errorf("%s holds the password", p)
		}
	}
}

// fileContains reads path in chunks (a sparse image's holes read as zeros) and reports
// whether needle occurs.
func fileContains(path string, needle []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 8<<20)
	keep := len(needle) - 1
	carry := 0
	for {
		n, err := io.ReadFull(f, buf[carry:])
		chunk := buf[:carry+n]
		if bytes.Contains(chunk, needle) {
			return true, nil
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		carry = min(keep, len(chunk))
		copy(buf, chunk[len(chunk)-carry:])
	}
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writers slog may have.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
