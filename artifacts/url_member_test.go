package artifacts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// cri-dockerd's upstream release layout: a GitHub release asset per arch holding
// cri-dockerd/cri-dockerd, and no .sha256 beside it. Tests reach it through a mirror rule to a
// server on 127.0.0.1.
const (
	criTemplate = "https://github.com/Mirantis/cri-dockerd/releases/download/v{version}/cri-dockerd-{version}.{arch}.tgz"
	criTarPath  = "/Mirantis/cri-dockerd/releases/download/v0.3.16/cri-dockerd-0.3.16.amd64.tgz"
	criUpstream = "https://github.com" + criTarPath
)

// criBinary is the member's content: a small executable.
var criBinary = []byte("#!/bin/sh\necho 'cri-dockerd 0.3.16 (test)'\n" + strings.Repeat("# padding\n", 400))

type tarEntry struct {
	name, body, link string
	typ              byte
}

// makeTGZ writes a gzip'd tar of entries (regular files unless typ says otherwise).
func makeTGZ(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o755, Typeflag: e.typ, Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		switch e.typ {
		case 0:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		case tar.TypeDir:
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// criRelease is upstream's tarball: the folder, the binary, nothing else.
func criRelease(t *testing.T, bin []byte) []byte {
	return makeTGZ(t, tarEntry{name: "cri-dockerd", typ: tar.TypeDir}, tarEntry{name: "cri-dockerd/cri-dockerd", body: string(bin)})
}

func newCRIServer(t *testing.T) *releaseServer {
	rs := newFileServer(t)
	rs.files[criTarPath] = criRelease(t, criBinary)
	return rs
}

func testCRISource(t *testing.T, rs *releaseServer, cache *Cache) *URLSource {
	if cache == nil {
		cache = newCache(t)
	}
	s := NewURLSource(cache, []recipes.URLRewrite{{Prefix: "https://github.com/", Replacement: rs.URL + "/"}})
	s.Backoff, s.MaxBackoff, s.Attempts = time.Millisecond, time.Millisecond, 3
	return s
}

// criInput is what recipes.Inputs makes of runtime.criDockerd (recipes.TestInputsCRIDockerd).
func criInput(version string) recipes.Input {
	return recipes.Input{
		Name: "cri-dockerd", Kind: recipes.InputBinary, Version: version, Package: "cri-dockerd", Arch: "amd64",
		Source: recipes.Source{Type: recipes.SourceURL, URL: criTemplate, Member: "cri-dockerd/{name}"},
	}
}

func lockCRI(t *testing.T, s *URLSource) recipes.LockedArtifact {
	t.Helper()
	arts, err := s.Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return arts[0]
}

// captureLog sends slog's output to a buffer for the test.
func captureLog(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return &buf
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sum(data)
}

// No .sha256 published: the lock pins the tarball as first downloaded, says so, and names the
// member; the fetch that follows returns the binary from the cache without a request.
func TestURLMemberLockPinsFirstDownload(t *testing.T) {
	rs := newCRIServer(t)
	s := testCRISource(t, rs, nil)
	logs := captureLog(t)
	a := lockCRI(t, s)
	tgz := rs.files[criTarPath]
	want := recipes.LockedArtifact{Name: "cri-dockerd", Kind: "binary", Source: "url", Version: "0.3.16", URL: criUpstream,
		Member: "cri-dockerd/cri-dockerd", SHA256: sum(tgz), Size: int64(len(tgz))}
	if a != want {
		t.Fatalf("locked\n %+v\nwant\n %+v", a, want)
	}
	if n := rs.gets(criTarPath + ".sha256"); n != 1 {
		t.Errorf("checksum asked %d times", n)
	}
	if !strings.Contains(logs.String(), "no checksum published") || !strings.Contains(logs.String(), a.SHA256) {
		t.Errorf("the log does not say the pin is a first download's:\n%s", logs)
	}
	paths, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	if err != nil {
		t.Fatal(err)
	}
	if got := fileSum(t, paths["cri-dockerd"]); got != sum(criBinary) {
		t.Errorf("fetched %s (sha256 %s), want the member's %s", paths["cri-dockerd"], got, sum(criBinary))
	}
	if n := rs.gets(criTarPath); n != 1 {
		t.Errorf("tarball downloaded %d times, want once (at lock)", n)
	}
}

// A published .sha256 pins the tarball without downloading it; the fetch downloads, checks and
// takes the member out.
func TestURLMemberLockPublishedChecksum(t *testing.T) {
	rs := newCRIServer(t)
	tgz := rs.files[criTarPath]
	rs.files[criTarPath+".sha256"] = []byte(sum(tgz) + "  cri-dockerd-0.3.16.amd64.tgz\n")
	s := testCRISource(t, rs, nil)
	a := lockCRI(t, s)
	if a.SHA256 != sum(tgz) || a.Size != int64(len(tgz)) || a.Member != "cri-dockerd/cri-dockerd" {
		t.Fatalf("locked %+v", a)
	}
	if n := rs.gets(criTarPath); n != 0 {
		t.Errorf("the lock downloaded the tarball (%d) though a checksum is published", n)
	}
	paths, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	if err != nil {
		t.Fatal(err)
	}
	if got := fileSum(t, paths["cri-dockerd"]); got != sum(criBinary) {
		t.Errorf("fetched sha256 %s, want the member's %s", got, sum(criBinary))
	}
}

// Once fetched, the member comes from the cache with the server gone, in this process and in
// the next (a new source on the same cache).
func TestURLMemberWarmFetchOffline(t *testing.T) {
	rs := newCRIServer(t)
	s := testCRISource(t, rs, nil)
	a := lockCRI(t, s)
	first, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
	if err != nil {
		t.Fatal(err)
	}
	rs.Close()
	for _, src := range []*URLSource{s, testCRISource(t, rs, s.Cache)} {
		paths, err := src.Fetch(context.Background(), []recipes.LockedArtifact{a})
		if err != nil {
			t.Fatalf("warm fetch with the server gone: %v", err)
		}
		if paths["cri-dockerd"] != first["cri-dockerd"] || fileSum(t, paths["cri-dockerd"]) != sum(criBinary) {
			t.Errorf("warm fetch %s, cold %s", paths["cri-dockerd"], first["cri-dockerd"])
		}
	}
}

// Fetch errors on a cold cache name the artifact, the URL and the sha256 the lock pins.
func TestURLMemberFetchErrors(t *testing.T) {
	cases := []struct {
		name    string
		breakIt func(rs *releaseServer)
		want    []string
	}{
		{"404", func(rs *releaseServer) { delete(rs.files, criTarPath) }, []string{"404", "the file is not there"}},
		{"truncated", func(rs *releaseServer) { rs.failNext(criTarPath, "truncate", "truncate", "truncate") }, []string{"gave up after 3 attempts"}},
		{"changed at its source", func(rs *releaseServer) {
			rs.set(criTarPath, criRelease(t, append([]byte("#!/bin/sh\necho other build\n"), criBinary...)))
		}, []string{"the file changed at its source"}},
		{"same size, other bytes", func(rs *releaseServer) { rs.failNext(criTarPath, "garbage") }, []string{"sha256 mismatch", "does not match its pinned checksum"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs := newCRIServer(t)
			a := lockCRI(t, testCRISource(t, rs, nil))
			c.breakIt(rs)
			s := testCRISource(t, rs, nil) // a cold cache
			_, err := s.Fetch(context.Background(), []recipes.LockedArtifact{a})
			if err == nil {
				t.Fatal("fetch succeeded")
			}
			for _, w := range append([]string{"cri-dockerd 0.3.16", a.SHA256, rs.URL + criTarPath, criUpstream}, c.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
			assertBlobDirEmpty(t, s.Cache)
		})
	}
}

// A member the tarball lacks is an error naming it and what the tarball holds (ten names at
// most): at lock when the lock downloads the tarball, at fetch otherwise.
func TestURLMemberMissing(t *testing.T) {
	entries := []tarEntry{{name: "cri-dockerd", typ: tar.TypeDir}}
	for i := range 12 {
		entries = append(entries, tarEntry{name: fmt.Sprintf("cri-dockerd/file%02d", i), body: "x"})
	}
	rs := newFileServer(t)
	rs.files[criTarPath] = makeTGZ(t, entries...)
	s := testCRISource(t, rs, nil)
	_, err := s.Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, nil, false)
	for _, w := range []string{"cri-dockerd/cri-dockerd", "cri-dockerd-0.3.16.amd64.tgz", "cri-dockerd/file00", "cri-dockerd/file09", "and 2 more", "source.member"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("lock: error does not name %q: %v", w, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "file10") {
		t.Errorf("lock: error lists more than ten names: %v", err)
	}

	rs.files[criTarPath+".sha256"] = []byte(sum(rs.files[criTarPath]))
	a := lockCRI(t, s)
	_, err = testCRISource(t, rs, nil).Fetch(context.Background(), []recipes.LockedArtifact{a})
	if err == nil || !strings.Contains(err.Error(), "holds no file cri-dockerd/cri-dockerd") || !strings.Contains(err.Error(), "cri-dockerd/file00") {
		t.Errorf("fetch: %v", err)
	}
}

// The member must be a regular file reached by a plain path: links and entries that climb
// out of the archive are refused, and so is a member template that does.
func TestURLMemberRefused(t *testing.T) {
	cases := []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"symlink", []tarEntry{{name: "bin", body: "real"}, {name: "cri-dockerd/cri-dockerd", link: "/usr/bin/evil", typ: tar.TypeSymlink}}, "symbolic link"},
		{"hard link", []tarEntry{{name: "bin", body: "real"}, {name: "cri-dockerd/cri-dockerd", link: "bin", typ: tar.TypeLink}}, "hard link"},
		{"dot-dot entry", []tarEntry{{name: "x/../cri-dockerd/cri-dockerd", body: "sneaky"}}, "absolute path or one with .."},
		{"absolute entry", []tarEntry{{name: "/cri-dockerd/cri-dockerd", body: "sneaky"}}, "absolute path or one with .."},
		{"directory", []tarEntry{{name: "cri-dockerd/cri-dockerd", typ: tar.TypeDir}}, "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs := newFileServer(t)
			rs.files[criTarPath] = makeTGZ(t, c.entries...)
			_, err := testCRISource(t, rs, nil).Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, nil, false)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "cri-dockerd/cri-dockerd") {
				t.Errorf("want an error saying %q, got %v", c.want, err)
			}
		})
	}
	rs := newCRIServer(t)
	for _, m := range []string{"../{name}", "/cri-dockerd/{name}", "cri-dockerd//{name}"} {
		in := criInput("0.3.16")
		in.Source.Member = m
		_, err := testCRISource(t, rs, nil).Resolve(context.Background(), []recipes.Input{in}, nil, false)
		if err == nil || !strings.Contains(err.Error(), "source.member") {
			t.Errorf("member %q: %v", m, err)
		}
	}
	// Not a tarball at all.
	rs.set(criTarPath, criBinary)
	_, err := testCRISource(t, rs, nil).Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "not a gzip'd tar") {
		t.Errorf("plain file with a member: %v", err)
	}
}

// cri-dockerd has no stable-<minor>.txt: a track is refused before any request.
func TestURLMemberExactVersionRequired(t *testing.T) {
	rs := newCRIServer(t)
	for _, v := range []string{"0.3", "latest"} {
		_, err := testCRISource(t, rs, nil).Resolve(context.Background(), []recipes.Input{criInput(v)}, nil, false)
		if err == nil || !strings.Contains(err.Error(), "not an exact release") || !strings.Contains(err.Error(), "runtime.criDockerd.version") {
			t.Errorf("version %s: %v", v, err)
		}
	}
	if n := rs.totalGets(); n != 0 {
		t.Errorf("%d requests for a version that cannot be resolved", n)
	}
}

// A lock entry whose member is not the recipe's is pinned again, even without --update.
func TestURLMemberStillMatches(t *testing.T) {
	rs := newCRIServer(t)
	s := testCRISource(t, rs, nil)
	a := lockCRI(t, s)
	kept, err := s.Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, []recipes.LockedArtifact{a}, false)
	if err != nil || kept[0] != a {
		t.Fatalf("an unchanged entry was not kept: %+v %v", kept, err)
	}
	if n := rs.gets(criTarPath + ".sha256"); n != 1 {
		t.Errorf("keeping the entry asked the server (%d checksum requests in all)", n)
	}
	old := a
	old.Member = "cri-dockerd"
	again, err := s.Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, []recipes.LockedArtifact{old}, false)
	if err != nil || again[0] != a {
		t.Fatalf("an entry with another member was kept: %+v %v", again, err)
	}
	if n := rs.gets(criTarPath + ".sha256"); n != 2 {
		t.Errorf("the entry with another member was not pinned again (%d checksum requests in all)", n)
	}
}

// Only a missing checksum (404) means "pin the first download": a failing checksum request
// stays an error, and so does a first download that fails; nothing half is cached.
func TestURLMemberLockErrors(t *testing.T) {
	rs := newCRIServer(t)
	rs.files[criTarPath+".sha256"] = []byte(sum(rs.files[criTarPath]))
	rs.failNext(criTarPath+".sha256", "500", "500", "500")
	s := testCRISource(t, rs, nil)
	_, err := s.Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "reading its checksum") || !strings.Contains(err.Error(), "500") {
		t.Errorf("checksum 500: %v", err)
	}
	if n := rs.gets(criTarPath); n != 0 {
		t.Errorf("a failing checksum request fell back to pinning a download (%d GETs)", n)
	}

	rs = newCRIServer(t)
	rs.failNext(criTarPath, "truncate", "truncate", "truncate")
	s = testCRISource(t, rs, nil)
	_, err = s.Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") || !strings.Contains(err.Error(), rs.URL+criTarPath) {
		t.Errorf("truncated first download: %v", err)
	}
	assertBlobDirEmpty(t, s.Cache)

	delete(rs.files, criTarPath)
	_, err = s.Resolve(context.Background(), []recipes.Input{criInput("0.3.16")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), criUpstream) {
		t.Errorf("no release file: %v", err)
	}
}
