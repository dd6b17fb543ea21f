// Package testimage gives the tests that need a real image (verify's boots, the AWS publish
// test) the default one, made as a user makes it: `kubebake build debian-12` (bin/kubebake
// from make build, else go run) into the kubebake cache, once per test binary. The builder's
// caches make a rebuild with nothing changed quick, and a build is reproducible, so every
// package that asks gets the same bytes. $KUBEBAKE_TEST_IMAGE names a ready image instead.
package testimage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/artifacts"
)

// RepoRoot is the kubebake checkout the tests run in.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Dir is where test images and their recipes are built: verify-test-image in the kubebake
// cache.
func Dir() string { return filepath.Join(artifacts.DefaultCacheDir(), "verify-test-image") }

// Kubebake runs the kubebake command in the checkout as a user would: bin/kubebake (make
// build), else go run (also when KUBEBAKE_TEST_GO_RUN is set). Its output goes to stderr.
func Kubebake(timeout time.Duration, args ...string) error {
	root := RepoRoot()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var cmd *exec.Cmd
	if bin := filepath.Join(root, "bin", "kubebake"); isFile(bin) && os.Getenv("KUBEBAKE_TEST_GO_RUN") == "" {
		cmd = exec.CommandContext(ctx, bin, args...)
	} else {
		cmd = exec.CommandContext(ctx, "go", append([]string{"run", "./cmd/kubebake"}, args...)...)
	}
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", cmd.String(), err)
	}
	fmt.Fprintf(os.Stderr, "tests: kubebake %s done in %s\n", strings.Join(args, " "), time.Since(start).Round(time.Second))
	return nil
}

var embeddedImages struct {
	mu     sync.Mutex
	built  map[string]string
	failed map[string]error
}

// Default is the default image: $KUBEBAKE_TEST_IMAGE (an image file or a build output
// folder), else Embedded("debian-12").
func Default() (string, error) {
	if p := os.Getenv("KUBEBAKE_TEST_IMAGE"); p != "" {
		return p, nil
	}
	return Embedded("debian-12")
}

// Embedded is the output folder of `kubebake build NAME` (an embedded recipe) in Dir(),
// built once per test binary.
func Embedded(name string) (string, error) {
	embeddedImages.mu.Lock()
	defer embeddedImages.mu.Unlock()
	if p, ok := embeddedImages.built[name]; ok {
		return p, nil
	}
	if err, ok := embeddedImages.failed[name]; ok {
		return "", err
	}
	out := filepath.Join(Dir(), name)
	if err := Kubebake(60*time.Minute, "build", name, "--out", out); err != nil {
		if embeddedImages.failed == nil {
			embeddedImages.failed = map[string]error{}
		}
		embeddedImages.failed[name] = err
		return "", err
	}
	if embeddedImages.built == nil {
		embeddedImages.built = map[string]string{}
	}
	embeddedImages.built[name] = out
	return out, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
