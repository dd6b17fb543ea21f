package aws

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/manifest"
)

// The real default image for the end-to-end test: $KUBEBAKE_TEST_IMAGE (a build output
// folder, or an image file in one) or, once per test binary, `kubebake build debian-12
// --format raw` into the kubebake cache (aws-test-image/). The builder's caches make a
// rebuild with nothing changed quick. The test never writes into that folder: it publishes
// from a folder of symlinks to it.
var realImage struct {
	once sync.Once
	dir  string
	err  error
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func kubebakeCache() string {
	if d := os.Getenv("KUBEBAKE_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kubebake")
	}
	return filepath.Join(os.TempDir(), "kubebake-cache")
}

func buildDefaultImage() (string, error) {
	out := filepath.Join(kubebakeCache(), "aws-test-image", "debian-12")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	args := []string{"build", "debian-12", "--format", "raw", "--out", out}
	root := repoRoot()
	var cmd *exec.Cmd
	if bin := filepath.Join(root, "bin", "kubebake"); fileExists(bin) && os.Getenv("KUBEBAKE_TEST_GO_RUN") == "" {
		cmd = exec.CommandContext(ctx, bin, args...)
	} else {
		cmd = exec.CommandContext(ctx, "go", append([]string{"run", "./cmd/kubebake"}, args...)...)
	}
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w", cmd.String(), err)
	}
	fmt.Fprintf(os.Stderr, "aws tests: default image ready in %s: %s\n", time.Since(start).Round(time.Second), out)
	return out, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// defaultBuild returns the real default image as a Build in a private folder (symlinks).
func defaultBuild(t *testing.T) *Build {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no image build")
	}
	realImage.once.Do(func() {
		if p := os.Getenv("KUBEBAKE_TEST_IMAGE"); p != "" {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				p = filepath.Dir(p)
			}
			realImage.dir = p
			return
		}
		realImage.dir, realImage.err = buildDefaultImage()
	})
	if realImage.err != nil {
		testenv.Missing(t, "the default image ("+realImage.err.Error()+")", "run make deps, or set KUBEBAKE_TEST_IMAGE to a kubebake build output folder")
	}
	src, err := ReadBuild(realImage.dir)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{manifest.Name, filepath.Base(src.RawPath)} {
		abs, err := filepath.Abs(filepath.Join(realImage.dir, name))
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
