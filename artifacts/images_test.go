package artifacts

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// Baked images are pinned at lock time and rebuilt byte-identically by Fetch on a machine
// whose cache lacks them; a rebuild that differs from the lock is refused by name.
func TestImagesLockedAndRebuilt(t *testing.T) {
	r := loadRecipe(t)
	srcs, _ := fakeSources(t)
	setClock(t, time.Date(2026, 11, 22, 15, 4, 5, 0, time.UTC))
	ctx := context.Background()
	l, err := Lock(ctx, r, nil, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	var images []recipes.LockedArtifact
	for _, a := range l.Artifacts {
		if a.Kind == recipes.KindImage {
			images = append(images, a)
		}
	}
	if len(images) != len(r.BakedImages()) || len(images) != 3 {
		t.Fatalf("locked images %+v, want busybox, coredns, pause", images)
	}
	for _, a := range images {
		if a.Source != SourceOCI || !ValidSHA256(a.SHA256) || !strings.HasPrefix(a.Digest, "sha256:") || a.Ref == "" || a.Size == 0 || a.Package == "" {
			t.Errorf("incomplete image entry %+v", a)
		}
	}
	// (The fake sources pin made-up versions, so only the images' own drift is looked at.)
	var de *recipes.DriftError
	if err := recipes.CheckLock(r, l); errors.As(err, &de) {
		for _, d := range de.Drifts {
			if strings.HasPrefix(d.Name, "image/") {
				t.Errorf("a fresh lock's image drifts: %+v", d)
			}
		}
	}

	// A second machine: its cache has none of the archives; Fetch rebuilds each.
	other := fakeImageSource(t)
	srcs[SourceOCI] = other
	paths, err := Fetch(ctx, l, srcs)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range images {
		data, err := os.ReadFile(paths[a.Name])
		if err != nil || sum(data) != a.SHA256 {
			t.Errorf("%s rebuilt at %s: not the locked archive (%v)", a.Name, paths[a.Name], err)
		}
	}

	// A lock whose image differs from what its inputs build is refused, naming the image.
	bad := *l
	bad.Artifacts = append([]recipes.LockedArtifact(nil), l.Artifacts...)
	for i, a := range bad.Artifacts {
		if a.Name == "image/pause" {
			bad.Artifacts[i].SHA256 = strings.Repeat("ab", 32)
		}
	}
	srcs[SourceOCI] = fakeImageSource(t)
	if _, err := Fetch(ctx, &bad, srcs); err == nil || !strings.Contains(err.Error(), "image/pause rebuilt to sha256") || !strings.Contains(err.Error(), "kubebake lock") {
		t.Errorf("tampered image: %v", err)
	}

	// Locking again with nothing changed keeps the images as they are.
	again, err := Lock(ctx, r, l, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := recipes.MarshalLock(l)
	b, _ := recipes.MarshalLock(again)
	if string(a) != string(b) {
		t.Error("re-locking changed the lock")
	}
}
