package artifacts

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// pinnedSet pins conntrack (from bookworm-updates, the newer) and socat of the synthetic
// archive, as the lock's package set.
func pinnedSet(t *testing.T, s *DebSource, a *synthArchive) []recipes.LockedPackage {
	t.Helper()
	refs := []PackageRef{{"socat", "1.7.4.4-2", "amd64"}, {"conntrack", "1:1.4.7-1+b3", "amd64"}, {"ca-certificates", "20230311", "all"}}
	pkgs, err := s.pinPackages(context.Background(), refs, a.srv.URL, []string{"bookworm", "bookworm-updates"}, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func TestPinPackages(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	s := a.source(t, newCache(t))
	pkgs := pinnedSet(t, s, a)
	if len(pkgs) != 3 || pkgs[0].Name != "ca-certificates" || pkgs[1].Name != "conntrack" || pkgs[2].Name != "socat" {
		t.Fatalf("not sorted by name: %+v", pkgs)
	}
	c := pkgs[1]
	if c.Suite != "bookworm-updates" || c.URL != "pool/main/c/conntrack/conntrack_1.4.7-1+b3_amd64.deb" || c.SHA256 != sum([]byte("conntrack deb (updates)")) || c.Arch != "amd64" || c.Size != int64(len("conntrack deb (updates)")) {
		t.Errorf("conntrack pinned as %+v", c)
	}
	if pkgs[0].Arch != "all" {
		t.Errorf("an arch-all package pinned as %+v", pkgs[0])
	}

	// The mirror still lists them; a version it dropped is named.
	suites := []string{"bookworm", "bookworm-updates"}
	if err := s.CheckPackagesServed(context.Background(), pkgs, suites, "amd64"); err != nil {
		t.Errorf("CheckPackagesServed: %v", err)
	}
	dropped := slices.Clone(pkgs)
	dropped[2].Version = "1.7.4.4-1"
	if err := s.CheckPackagesServed(context.Background(), dropped, suites, "amd64"); err == nil || !strings.Contains(err.Error(), "socat 1.7.4.4-1") {
		t.Errorf("a dropped version: err = %v", err)
	}

	// Versions the indexes do not list are all named.
	_, err := s.pinPackages(context.Background(), []PackageRef{{"socat", "9.9-1", "amd64"}, {"nosuch", "1", "amd64"}}, a.srv.URL, []string{"bookworm"}, "amd64")
	if err == nil || !strings.Contains(err.Error(), "socat 9.9-1, nosuch 1") {
		t.Errorf("err = %v", err)
	}
	// One name at two versions is refused rather than half-pinned.
	_, err = s.pinPackages(context.Background(), []PackageRef{{"conntrack", "1:1.4.7-1+b2", "amd64"}, {"conntrack", "1:1.4.7-1+b3", "amd64"}}, a.srv.URL, []string{"bookworm", "bookworm-updates"}, "amd64")
	if err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("err = %v", err)
	}
}

func TestCoversIncludes(t *testing.T) {
	set := []recipes.LockedPackage{{Name: "socat", Version: "1.7.4.4-2"}, {Name: "libc6", Version: "2.36-9"}}
	if !coversIncludes(set, []string{"socat=1.7.4.4-2"}) {
		t.Error("a set holding the pin does not cover it")
	}
	if coversIncludes(set, []string{"socat=1.7.4.4-3"}) || coversIncludes(set, []string{"conntrack=1"}) || coversIncludes(nil, nil) {
		t.Error("a set covers a pin it lacks, or an empty set covers anything")
	}
}

// TestFetchPackages: the set goes into the cache; a warm fetch downloads nothing; with the
// cache empty and the mirror no longer serving the files, every missing one is named with the
// lock; a file whose bytes differ from the lock is refused.
func TestFetchPackages(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	cache := newCache(t)
	s := a.source(t, cache)
	l := &recipes.Lock{Packages: pinnedSet(t, s, a)}
	srcs := map[string]Source{recipes.SourceDeb: s}
	ctx := context.Background()
	paths, err := FetchPackages(ctx, l, srcs, "recipes/x.lock")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Packages {
		got, err := os.ReadFile(paths[p.SHA256])
		if err != nil || sum(got) != p.SHA256 {
			t.Errorf("%s: %v (sha256 %s)", p.Name, err, sum(got))
		}
	}
	if _, err := FetchPackages(ctx, l, srcs, "recipes/x.lock"); err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Packages {
		if n := a.srv.gets("/" + p.URL); n != 1 {
			t.Errorf("%s downloaded %d times, want once (the second fetch is warm)", p.Name, n)
		}
	}

	// The mirror moved on: two of the three files are gone from it, and the cache is empty.
	a.srv.mu.Lock()
	delete(a.srv.files, "/"+l.Packages[1].URL)
	delete(a.srv.files, "/"+l.Packages[2].URL)
	a.srv.mu.Unlock()
	_, err = FetchPackages(ctx, l, map[string]Source{recipes.SourceDeb: a.source(t, newCache(t))}, "recipes/x.lock")
	var md *MissingDebsError
	if !errors.As(err, &md) || !strings.Contains(err.Error(), "recipes/x.lock pins 2 Debian package file(s)") ||
		!strings.Contains(err.Error(), "conntrack 1:1.4.7-1+b3, socat 1.7.4.4-2") || !strings.Contains(err.Error(), "kubebake lock --update") {
		t.Errorf("err = %v", err)
	}
	// ... but the cache that has them still builds: nothing is asked of the mirror.
	if _, err := FetchPackages(ctx, l, srcs, "recipes/x.lock"); err != nil {
		t.Errorf("a warm cache needs the mirror: %v", err)
	}

	// An unreachable mirror: the files are named, and why.
	gone := a.source(t, newCache(t))
	gone.Mirror = "http://127.0.0.1:1"
	_, err = FetchPackages(ctx, l, map[string]Source{recipes.SourceDeb: gone}, "recipes/x.lock")
	if !errors.As(err, &md) || len(md.Packages) != 3 || md.Cause == nil {
		t.Errorf("err = %v", err)
	}

	// Different bytes of the pinned length under the pinned name: refused, not cached.
	a.srv.set("/"+l.Packages[0].URL, []byte(strings.Repeat("x", int(l.Packages[0].Size))))
	_, err = FetchPackages(ctx, &recipes.Lock{Packages: l.Packages[:1]}, map[string]Source{recipes.SourceDeb: a.source(t, newCache(t))}, "recipes/x.lock")
	var ce *ChecksumError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "ca-certificates") {
		t.Errorf("err = %v", err)
	}
}

func TestLockDiffShowsPackages(t *testing.T) {
	prev := &recipes.Lock{Packages: []recipes.LockedPackage{{Name: "libc6", Version: "2.36-9+deb12u13", SHA256: "aa"}, {Name: "gone", Version: "1"}}}
	next := &recipes.Lock{Packages: []recipes.LockedPackage{{Name: "libc6", Version: "2.36-9+deb12u14", SHA256: "bb"}, {Name: "new", Version: "2"}}}
	var got []string
	for _, c := range Diff(prev, next) {
		got = append(got, c.String())
	}
	want := "package/gone 1 (removed)|package/libc6 2.36-9+deb12u13 -> 2.36-9+deb12u14|package/new 2 (new)"
	if strings.Join(got, "|") != want {
		t.Errorf("Diff = %q, want %q", strings.Join(got, "|"), want)
	}
}
