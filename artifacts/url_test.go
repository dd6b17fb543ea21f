package artifacts

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// releaseServer serves the upstream Kubernetes release layout on 127.0.0.1:
// /release/stable-<minor>.txt, /release/<v>/bin/linux/<arch>/<name> and <name>.sha256.
type releaseServer struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
	// fail, by path, says how the next requests of that path misbehave: each entry is used
	// once ("404", "500", "truncate", "chunked-truncate", "garbage").
	fail map[string][]string
}

// newFileServer serves files (by URL path) on 127.0.0.1, counting GETs.
func newFileServer(t *testing.T) *releaseServer {
	rs := &releaseServer{files: map[string][]byte{}, hits: map[string]int{}, fail: map[string][]string{}}
	rs.Server = httptest.NewServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.Close)
	return rs
}

func newReleaseServer(t *testing.T) *releaseServer {
	rs := newFileServer(t)
	rs.files["/release/stable-1.35.txt"] = []byte("v1.35.4\n")
	rs.files["/release/stable-1.34.txt"] = []byte("v1.34.9\n")
	for _, v := range []string{"v1.35.3", "v1.35.4", "v1.34.9"} {
		for _, name := range []string{"kubelet", "kubectl"} {
			rs.addBinary(v, name, []byte(fmt.Sprintf("%s %s binary %s", name, v, strings.Repeat("x", 4096))))
		}
	}
	return rs
}

func (rs *releaseServer) addBinary(version, name string, data []byte) {
	p := "/release/" + version + "/bin/linux/amd64/" + name
	rs.files[p] = data
	// Upstream .sha256 files hold the bare digest.
	rs.files[p+".sha256"] = []byte(sum(data))
}

func (rs *releaseServer) serve(w http.ResponseWriter, r *http.Request) {
	rs.mu.Lock()
	p := r.URL.Path
	if r.Method == http.MethodGet {
		rs.hits[p]++
	}
	var mode string
	if q := rs.fail[p]; len(q) > 0 && r.Method == http.MethodGet {
		mode, rs.fail[p] = q[0], q[1:]
	}
	data, ok := rs.files[p]
	rs.mu.Unlock()
	if !ok || mode == "404" {
		http.NotFound(w, r)
		return
	}
	switch mode {
	case "500":
		http.Error(w, "upstream hiccup", http.StatusInternalServerError)
		return
	case "truncate":
		// Announce the full length, send half, and drop the connection.
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:len(data)/2])
		return
	case "chunked-truncate":
		// No Content-Length: the body ends cleanly but short.
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		return
	case "garbage":
		data = []byte(strings.Repeat("?", len(data)))
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if r.Method == http.MethodHead {
		return
	}
	w.Write(data)
}

func (rs *releaseServer) failNext(path string, modes ...string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.fail[path] = append(rs.fail[path], modes...)
}

func (rs *releaseServer) set(path string, data []byte) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.files[path] = data
}

func (rs *releaseServer) totalGets() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n := 0
	for _, c := range rs.hits {
		n += c
	}
	return n
}

func (rs *releaseServer) gets(path string) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.hits[path]
}

// upstreamTemplate is the real upstream layout; tests reach it through a mirror rule.
const upstreamTemplate = "https://dl.k8s.io/release/{version}/bin/linux/{arch}/{name}"

func testURLSource(t *testing.T, rs *releaseServer) *URLSource {
	s := NewURLSource(newCache(t), []recipes.URLRewrite{{Prefix: "https://dl.k8s.io/", Replacement: rs.URL + "/"}})
	s.Backoff = time.Millisecond
	s.MaxBackoff = time.Millisecond
	s.Attempts = 3
	return s
}

func urlInput(name, version string) recipes.Input {
	return recipes.Input{
		Name: name, Kind: recipes.InputBinary, Version: version, Package: name, Arch: "amd64",
		Source: recipes.Source{Type: recipes.SourceURL, URL: upstreamTemplate},
	}
}

func TestURLResolveTrackAndExact(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	ctx := context.Background()
	got, err := s.Resolve(ctx, []recipes.Input{urlInput("kubelet", "1.35"), urlInput("kubectl", "1.35"), func() recipes.Input { in := urlInput("kubectl-old", "v1.34.9"); in.Package = "kubectl"; return in }()}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d artifacts", len(got))
	}
	k := got[0]
	want := rs.files["/release/v1.35.4/bin/linux/amd64/kubelet"]
	if k.Version != "v1.35.4" || k.SHA256 != sum(want) || k.Size != int64(len(want)) || k.Source != "url" || k.Kind != "binary" {
		t.Errorf("kubelet: %+v", k)
	}
	// The lock keeps the upstream URL, never the mirror.
	if k.URL != "https://dl.k8s.io/release/v1.35.4/bin/linux/amd64/kubelet" {
		t.Errorf("kubelet url %s", k.URL)
	}
	if got[2].Version != "v1.34.9" || !strings.Contains(got[2].URL, "/v1.34.9/") {
		t.Errorf("exact pin: %+v", got[2])
	}
	// One stable-1.35.txt request serves both binaries of the track.
	if n := rs.gets("/release/stable-1.35.txt"); n != 1 {
		t.Errorf("stable-1.35.txt fetched %d times", n)
	}
	if n := rs.gets("/release/stable-1.34.txt"); n != 0 {
		t.Errorf("an exact version read the track file")
	}
}

func TestURLResolveKeepsOrUpdates(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	ctx := context.Background()
	old, err := s.Resolve(ctx, []recipes.Input{urlInput("kubelet", "v1.35.3")}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	in := []recipes.Input{urlInput("kubelet", "1.35")}
	kept, err := s.Resolve(ctx, in, old, false)
	if err != nil {
		t.Fatal(err)
	}
	if kept[0] != old[0] {
		t.Errorf("update=false moved the pin: %+v", kept[0])
	}
	if n := rs.gets("/release/stable-1.35.txt"); n != 0 {
		t.Errorf("update=false with a matching lock went to the network (%d)", n)
	}
	moved, err := s.Resolve(ctx, in, old, true)
	if err != nil {
		t.Fatal(err)
	}
	if moved[0].Version != "v1.35.4" {
		t.Errorf("update=true: %+v", moved[0])
	}
	// A lock entry outside the recipe's track is re-resolved even without update.
	other, err := s.Resolve(ctx, []recipes.Input{urlInput("kubelet", "1.34")}, old, false)
	if err != nil {
		t.Fatal(err)
	}
	if other[0].Version != "v1.34.9" {
		t.Errorf("changed track: %+v", other[0])
	}
}

func TestURLResolveErrors(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	ctx := context.Background()
	_, err := s.Resolve(ctx, []recipes.Input{urlInput("kubelet", "1.99")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), rs.URL+"/release/stable-1.99.txt") || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing track: %v", err)
	}
	_, err = s.Resolve(ctx, []recipes.Input{urlInput("kubelet", "latest")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "neither exact") {
		t.Errorf("floating version: %v", err)
	}
	rs.files["/release/v1.35.4/bin/linux/amd64/kubelet.sha256"] = []byte("<html>not a digest</html>")
	_, err = s.Resolve(ctx, []recipes.Input{urlInput("kubelet", "v1.35.4")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("bad checksum file: %v", err)
	}
}

func lockedKubelet(t *testing.T, rs *releaseServer, s *URLSource, version string) recipes.LockedArtifact {
	t.Helper()
	arts, err := s.Resolve(context.Background(), []recipes.Input{urlInput("kubelet", version)}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return arts[0]
}

const kubeletPath = "/release/v1.35.4/bin/linux/amd64/kubelet"

func TestURLFetch(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	a := lockedKubelet(t, rs, s, "v1.35.4")
	paths, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok, _ := s.Cache.Lookup(a.SHA256); !ok || paths["kubelet"] != p {
		t.Fatalf("fetched %v, cache %s %v", paths, p, ok)
	}
	// Warm: no request.
	if _, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a}); err != nil {
		t.Fatal(err)
	}
	if n := rs.gets(kubeletPath); n != 1 {
		t.Errorf("binary downloaded %d times", n)
	}
}

func TestURLFetch404NoRetry(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	a := lockedKubelet(t, rs, s, "v1.35.4")
	delete(rs.files, kubeletPath)
	_, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != 404 {
		t.Fatalf("want a 404 HTTPError, got %v", err)
	}
	for _, want := range []string{rs.URL + kubeletPath, "https://dl.k8s.io" + kubeletPath, "kubelet v1.35.4", "mirror holds it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if n := rs.gets(kubeletPath); n != 1 {
		t.Errorf("a 404 was retried: %d requests", n)
	}
}

func TestURLFetch500ThenSuccess(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	a := lockedKubelet(t, rs, s, "v1.35.4")
	rs.failNext(kubeletPath, "500", "500")
	if _, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a}); err != nil {
		t.Fatal(err)
	}
	if n := rs.gets(kubeletPath); n != 3 {
		t.Errorf("%d requests, want 3 (two 500s, one success)", n)
	}
}

func TestURLFetch500GivesUp(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	a := lockedKubelet(t, rs, s, "v1.35.4")
	rs.failNext(kubeletPath, "500", "500", "500", "500")
	_, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") || !strings.Contains(err.Error(), "500") {
		t.Fatalf("err %v", err)
	}
	if n := rs.gets(kubeletPath); n != 3 {
		t.Errorf("%d requests, want 3 (the attempt bound)", n)
	}
	assertBlobDirEmpty(t, s.Cache)
}

func TestURLFetchTruncatedRetried(t *testing.T) {
	for _, mode := range []string{"truncate", "chunked-truncate"} {
		t.Run(mode, func(t *testing.T) {
			rs := newReleaseServer(t)
			s := testURLSource(t, rs)
			a := lockedKubelet(t, rs, s, "v1.35.4")
			rs.failNext(kubeletPath, mode)
			paths, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
			if err != nil {
				t.Fatal(err)
			}
			if n := rs.gets(kubeletPath); n != 2 {
				t.Errorf("%d requests, want 2", n)
			}
			if _, ok, _ := s.Cache.Lookup(a.SHA256); !ok || paths["kubelet"] == "" {
				t.Error("not in cache after retry")
			}
		})
	}
}

func TestURLFetchTruncatedAlways(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	a := lockedKubelet(t, rs, s, "v1.35.4")
	rs.failNext(kubeletPath, "truncate", "truncate", "truncate")
	_, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	if err == nil || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("err %v", err)
	}
	assertBlobDirEmpty(t, s.Cache)
}

func TestURLFetchWrongChecksumRefused(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	a := lockedKubelet(t, rs, s, "v1.35.4")
	rs.failNext(kubeletPath, "garbage") // same length, other bytes
	_, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	var ce *ChecksumError
	if !errors.As(err, &ce) || ce.Want != a.SHA256 {
		t.Fatalf("want a ChecksumError, got %v", err)
	}
	if !strings.Contains(err.Error(), "kubebake lock --update") {
		t.Errorf("error does not say what to do: %v", err)
	}
	if n := rs.gets(kubeletPath); n != 1 {
		t.Errorf("a checksum mismatch was retried: %d requests", n)
	}
	assertBlobDirEmpty(t, s.Cache)
}

func TestURLFetchCancelDuringBackoff(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	a := lockedKubelet(t, rs, s, "v1.35.4")
	s.Backoff, s.MaxBackoff = time.Hour, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	// The server cancels the client's context as it answers the first 500: the retry wait
	// (an hour) must end at once.
	rs.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == kubeletPath {
			cancel()
			http.Error(w, "down", 500)
			return
		}
		rs.serve(w, r)
	})
	_, err := s.Fetch(ctx, []recipes.LockedArtifact{a})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

func TestURLFetchSizeChanged(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	a := lockedKubelet(t, rs, s, "v1.35.4")
	rs.files[kubeletPath] = append(rs.files[kubeletPath], "more"...)
	_, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	if err == nil || !strings.Contains(err.Error(), "are pinned") {
		t.Fatalf("err %v", err)
	}
	assertBlobDirEmpty(t, s.Cache)
}

func TestStableURLAndExpand(t *testing.T) {
	u, err := StableURL(upstreamTemplate, "1.35")
	if err != nil || u != "https://dl.k8s.io/release/stable-1.35.txt" {
		t.Errorf("StableURL: %s %v", u, err)
	}
	if _, err := StableURL("https://x.test/kubelet-{version}", "1.35"); err == nil {
		t.Error("StableURL accepted {version} inside a path segment")
	}
	if got := ExpandURL(upstreamTemplate, "v1.35.4", "kubeadm", ""); got != "https://dl.k8s.io/release/v1.35.4/bin/linux/amd64/kubeadm" {
		t.Errorf("ExpandURL: %s", got)
	}
}

func TestRewriteURL(t *testing.T) {
	rules := []recipes.URLRewrite{
		{Prefix: "https://dl.k8s.io/", Replacement: "http://mirror.internal/k8s/"},
		{Prefix: "https://dl.k8s.io/release/", Replacement: "http://mirror.internal/releases/"},
		{Prefix: "https://github.com/", Replacement: "http://mirror.internal/gh/"},
	}
	cases := map[string]string{
		"https://dl.k8s.io/release/v1/kubelet": "http://mirror.internal/releases/v1/kubelet", // longest prefix wins
		"https://dl.k8s.io/other":              "http://mirror.internal/k8s/other",
		"https://example.test/x":               "https://example.test/x",
	}
	for in, want := range cases {
		if got := rewriteURL(rules, in); got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
}

func TestURLResolveWithoutHead(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	rs.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			http.Error(w, "no HEAD here", http.StatusMethodNotAllowed)
			return
		}
		rs.serve(w, r)
	})
	a := lockedKubelet(t, rs, s, "v1.35.4")
	if a.Size != 0 || a.SHA256 != sum(rs.files[kubeletPath]) {
		t.Errorf("%+v", a)
	}
	if _, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a}); err != nil {
		t.Fatal(err)
	}
}

func TestURLResolveMissingBinary(t *testing.T) {
	rs := newReleaseServer(t)
	s := testURLSource(t, rs)
	// The checksum is published but the binary is not: the lock refuses it (HEAD says 404).
	delete(rs.files, kubeletPath)
	_, err := s.Resolve(context.Background(), []recipes.Input{urlInput("kubelet", "v1.35.4")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), kubeletPath) {
		t.Errorf("err %v", err)
	}
}
