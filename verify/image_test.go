package verify

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
)

// The default image for the heavy tests: $KUBEBAKE_TEST_IMAGE (an image file or build output
// folder) or, once per test binary, `kubebake build debian-12` into the kubebake cache. The
// builder keeps its own caches (artifacts, rootfs by lock), so a rebuild with nothing changed
// is quick; verify never imports the builder, it runs the command as a user would.
var testImage struct {
	once sync.Once
	path string
	err  error
}

// defaultTestImage returns the path of the default image's output folder or file.
func defaultTestImage(t *testing.T) string {
	t.Helper()
	requireQEMU(t)
	testImage.once.Do(func() {
		if p := os.Getenv("KUBEBAKE_TEST_IMAGE"); p != "" {
			testImage.path = p
			return
		}
		testImage.path, testImage.err = buildDefaultImage()
	})
	if testImage.err != nil {
		t.Fatalf("building the default image: %v", testImage.err)
	}
	return testImage.path
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func cacheDir() string {
	if d := os.Getenv("KUBEBAKE_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kubebake")
	}
	return filepath.Join(os.TempDir(), "kubebake-cache")
}

func buildDefaultImage() (string, error) {
	out := filepath.Join(cacheDir(), "verify-test-image", "debian-12")
	root := repoRoot()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	args := []string{"build", "debian-12", "--out", out}
	var cmd *exec.Cmd
	if bin := filepath.Join(root, "bin", "kubebake"); fileExists(bin) && os.Getenv("KUBEBAKE_TEST_GO_RUN") == "" {
		cmd = exec.CommandContext(ctx, bin, args...)
	} else {
		cmd = exec.CommandContext(ctx, "go", append([]string{"run", "./cmd/kubebake"}, args...)...)
	}
	cmd.Dir = root
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w", cmd.String(), err)
	}
	fmt.Fprintf(os.Stderr, "verify tests: default image ready in %s: %s\n", time.Since(start).Round(time.Second), out)
	return out, nil
}
