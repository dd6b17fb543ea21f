package artifacts

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// The mirror moves on a week after the lock: a superseded version leaves the index and the
// pool. Both the index check (before mmdebstrap) and Fetch name every package gone at once.
func TestDebMirrorDroppedLockedVersions(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	s := a.source(t, newCache(t))
	var locked []recipes.LockedArtifact
	for _, p := range []string{"conntrack", "socat", "ca-certificates", "iptables"} {
		locked = append(locked, resolveOne(t, s, debInput(p)))
	}
	suites := []string{"bookworm", "bookworm-updates"}
	if err := s.CheckServed(context.Background(), locked, suites, "amd64"); err != nil {
		t.Fatalf("fresh lock: %v", err)
	}

	// A week later: socat and conntrack have new versions, their old files are gone; the
	// ca-certificates of bookworm-updates moved into bookworm (a point release), same file.
	a.suites["bookworm"] = []synthPkg{
		{"socat", "1.7.4.4-3", "amd64", []byte("socat deb, newer")},
		{"iptables", "1.8.9-2", "amd64", []byte("iptables deb")},
		{"ca-certificates", "20230311", "all", []byte("ca-certificates deb")},
	}
	a.suites["bookworm-updates"] = []synthPkg{{"conntrack", "1:1.4.7-1+b4", "amd64", []byte("conntrack deb (newer)")}}
	for _, p := range []string{locked[0].URL, locked[1].URL} {
		a.srv.mu.Lock()
		delete(a.srv.files, "/"+p)
		a.srv.mu.Unlock()
	}
	a.publish(t)
	later := a.source(t, newCache(t))
	err := later.CheckServed(context.Background(), locked, suites, "amd64")
	var mp *MissingPackagesError
	if !errors.As(err, &mp) {
		t.Fatalf("index check: got %v, want a MissingPackagesError", err)
	}
	want := []string{"conntrack 1:1.4.7-1+b3", "socat 1.7.4.4-2"}
	if strings.Join(mp.Packages, ",") != strings.Join(want, ",") {
		t.Errorf("index check names %q, want %q", mp.Packages, want)
	}
	msg := NameRecipe(err, "recipes/x.yaml").Error()
	for _, w := range append(want, `kubebake lock --update recipes/x.yaml`) {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q does not name %q", msg, w)
		}
	}

	// Same sha256 or nothing: a mirror serving other bytes under the locked version is not
	// serving the locked package.
	tampered := append([]recipes.LockedArtifact(nil), locked[2:]...)
	tampered[0].SHA256 = strings.Repeat("0", 64)
	if err := later.CheckServed(context.Background(), tampered, suites, "amd64"); !errors.As(err, &mp) || len(mp.Packages) != 1 {
		t.Errorf("another file under the locked version: got %v", err)
	}

	// A fresh cache fetching the old lock: every 404 is collected, not only the first.
	_, err = later.Fetch(context.Background(), locked)
	if !errors.As(err, &mp) {
		t.Fatalf("fetch: got %v, want a MissingPackagesError", err)
	}
	if strings.Join(mp.Packages, ",") != strings.Join(want, ",") {
		t.Errorf("fetch names %q, want %q", mp.Packages, want)
	}
}

// TestEmbeddedLocksServedByMirror asks this machine's Debian mirror whether it still serves
// every package the embedded recipes' locks pin: when it has moved on, the locks no longer
// build on a fresh machine, and this test names the packages and the fix (relock). An
// unreachable mirror skips it, loudly, outside CI and fails it in CI.
func TestEmbeddedLocksServedByMirror(t *testing.T) {
	if testing.Short() {
		t.Skip("network: the machine's Debian mirror")
	}
	c := newCache(t)
	for _, name := range recipes.EmbeddedNames() {
		t.Run(name, func(t *testing.T) {
			r, err := recipes.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			l, err := recipes.ReadRecipeLock(r)
			if err != nil {
				t.Fatal(err)
			}
			srcs, err := RecipeSources(c, r)
			if err != nil {
				testenv.Missing(t, "a Debian mirror in this machine's apt sources", err.Error())
			}
			debs := srcs[recipes.SourceDeb].(*DebSource)
			err = debs.CheckServed(context.Background(), l.Artifacts, r.Base.Suites, r.Base.Arch)
			if err == nil {
				// A cold build fetches the whole package set from the mirror too.
				err = debs.CheckPackagesServed(context.Background(), l.Packages, r.Base.Suites, r.Base.Arch)
			}
			var mp *MissingPackagesError
			switch {
			case errors.As(err, &mp):
				t.Errorf("%v", NameRecipe(err, r.File))
			case err != nil:
				testenv.Missing(t, "the Debian mirror (unreachable: the locks were not checked)", err.Error())
			}
		})
	}
}
