package aws

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/internal/testimage"
	"github.com/kubebake/kubebake/manifest"
)

// defaultBuild returns the real default image as a Build in a private folder (symlinks).
func defaultBuild(t *testing.T) *Build {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no image build")
	}
	// The same image as verify's (testimage.Default); the test never writes into its folder:
	// it publishes from a folder of symlinks to it.
	path, err := testimage.Default()
	if err != nil {
		testenv.Missing(t, "the default image ("+err.Error()+")", "run make deps, or set KUBEBAKE_TEST_IMAGE to a kubebake build output folder")
	}
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		path = filepath.Dir(path)
	}
	src, err := ReadBuild(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{manifest.Name, filepath.Base(src.RawPath)} {
		abs, err := filepath.Abs(filepath.Join(path, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(abs, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := ReadBuild(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The must-show test: the real default image, published end to end to the local endpoints
// with the default workers: the snapshot's bytes are the image's, the AMI and snapshot carry
// the tags, zero blocks are skipped (and counted), a second publish reuses the AMI, and the
// copies in two more regions carry the tags.
func TestPublishDefaultImage(t *testing.T) {
	b := defaultBuild(t)
	srv := startFake(t)
	s := session(t, srv, "", RetryPolicy{})
	s.poll = 10 * time.Millisecond
	regions := []string{"eu-west-1", "ap-southeast-2"}
	var last UploadProgress
	var mu sync.Mutex
	res := mustPublish(t, s, PublishRequest{Build: b, CopyRegions: regions, Events: func(e Event) {
		if e.Upload != nil {
			mu.Lock()
			last = *e.Upload
			mu.Unlock()
		}
	}})
	up := res.Upload
	if up == nil || up.Method != "ebs-direct" || up.Workers != DefaultWorkers {
		t.Fatalf("upload %+v", up)
	}
	t.Logf("%s: %d MiB image, %d blocks, %d written (%d MiB), %d all-zero skipped (%.1f%%), %.1f s, %.1f MiB/s",
		b.Recipe, b.Size>>20, up.Blocks, up.BlocksWritten, up.UploadedBytes>>20, up.BlocksSkipped, 100*up.SkippedShare(), up.Seconds, up.MiBPerSecond)
	if up.Blocks != int(b.Size/BlockSize) || up.BlocksWritten+up.BlocksSkipped != up.Blocks || up.BlocksSkipped == 0 ||
		up.UploadedBytes != int64(up.BlocksWritten)*BlockSize {
		t.Errorf("block counts do not add up: %+v", up)
	}
	if srv.Calls("ebs:PutSnapshotBlock") != up.BlocksWritten {
		t.Errorf("the server saw %d blocks, the upload says it wrote %d", srv.Calls("ebs:PutSnapshotBlock"), up.BlocksWritten)
	}
	if last.Done != up.Blocks || last.Skipped != up.BlocksSkipped {
		t.Errorf("last progress %+v", last)
	}
	// The bytes the server assembled are the image's.
	checkSnapshotBytes(t, srv, home, res.Regions[0].SnapshotIDs[0], b)
	for _, r := range res.Regions {
		if r.Error != "" {
			t.Fatalf("%s: %s", r.Region, r.Error)
		}
		img := checkAMI(t, srv, r.Region, r, b)
		if img.Tags[TagImageSHA256] != b.SHA256 || img.Tags[TagRecipe] != "debian-12" || img.Tags[TagKubernetesVersion] == "" {
			t.Errorf("%s: tags %v", r.Region, img.Tags)
		}
	}

	again := mustPublish(t, s, PublishRequest{Build: b, CopyRegions: regions})
	if again.Upload != nil || srv.Calls("ebs:StartSnapshot") != 1 {
		t.Errorf("the second publish uploaded again")
	}
	for i, r := range again.Regions {
		if !r.Reused || r.ImageID != res.Regions[i].ImageID {
			t.Errorf("second publish, %s: %+v", r.Region, r)
		}
	}
}
