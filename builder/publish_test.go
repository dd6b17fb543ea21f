package builder

import (
	"context"
	"fmt"
	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// writeSet writes an output set (image, manifest, SBOM) whose files all say which build
// they come from.
func writeSet(t *testing.T, dir, build string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"demo.raw", "demo.qcow2", manifest.Name, manifest.SBOMName} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(build), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// setOf says which build every output in dir comes from; it fails the test on a mix.
func setOf(t *testing.T, dir string) string {
	t.Helper()
	seen := ""
	for _, n := range []string{"demo.raw", manifest.Name, manifest.SBOMName} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatalf("incomplete output set: %v", err)
		}
		if seen != "" && string(b) != seen {
			t.Fatalf("mixed output set in %s: %s is from %s, others from %s", dir, n, b, seen)
		}
		seen = string(b)
	}
	return seen
}

func TestPublishFolderNew(t *testing.T) {
	root := t.TempDir()
	staged, out := filepath.Join(root, "staged"), filepath.Join(root, "out")
	writeSet(t, staged, "new")
	if err := publishFolder(staged, out, ownedOutput("demo")); err != nil {
		t.Fatal(err)
	}
	if got := setOf(t, out); got != "new" {
		t.Fatalf("out holds %s", got)
	}
}

// A rebuild replaces the build's own files and keeps everything else in the folder.
func TestPublishFolderCarriesOver(t *testing.T) {
	root := t.TempDir()
	staged, out := filepath.Join(root, "staged"), filepath.Join(root, "out")
	writeSet(t, out, "old")
	writeSet(t, staged, "new")
	if err := os.MkdirAll(filepath.Join(out, "verify", "node"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(out, "verify", "node", "serial.log"), []byte("log"), 0o600)
	os.WriteFile(filepath.Join(out, "notes.txt"), []byte("mine"), 0o644)
	os.Symlink("demo.raw", filepath.Join(out, "latest.raw"))
	os.WriteFile(filepath.Join(out, "demo.vhd"), []byte("old"), 0o644) // a format the new build did not write

	if err := publishFolder(staged, out, ownedOutput("demo")); err != nil {
		t.Fatal(err)
	}
	if got := setOf(t, out); got != "new" {
		t.Fatalf("out holds %s", got)
	}
	for name, want := range map[string]string{"notes.txt": "mine", "verify/node/serial.log": "log", "latest.raw": "new"} {
		if b, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}
	if st, err := os.Stat(filepath.Join(out, "verify", "node")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("verify/node mode: %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(out, "demo.vhd")); err == nil {
		t.Error("an output the new manifest does not describe was kept")
	}
	// The old set is where the staging folder was, for the caller to remove.
	if got := setOf(t, staged); got != "old" {
		t.Errorf("staged holds %s", got)
	}
}

// crashEnv makes the test binary a publisher that kills itself at a publish point.
const crashEnv = "KUBEBAKE_TEST_PUBLISH_CRASH"

func init() {
	point := os.Getenv(crashEnv)
	if point == "" {
		return
	}
	staged, out, _ := strings.Cut(os.Getenv(crashEnv+"_DIRS"), "\n")
	publishHook = func(p string) error {
		if p == point {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		return nil
	}
	err := publishFolder(staged, out, ownedOutput("demo"))
	fmt.Println("publish returned:", err)
	os.Exit(3)
}

// A build killed (SIGKILL) at any point of publishing leaves a complete set: the previous one
// before the exchange, the new one after it. The next build cleans up the work folder.
func TestPublishKilled(t *testing.T) {
	for point, want := range map[string]string{"before-exchange": "old", "after-exchange": "new"} {
		t.Run(point, func(t *testing.T) {
			root := t.TempDir()
			out := filepath.Join(root, "out")
			work := workPrefix(out) + "1234"
			staged := filepath.Join(work, "out")
			writeSet(t, out, "old")
			writeSet(t, staged, "new")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), crashEnv+"="+point, crashEnv+"_DIRS="+staged+"\n"+out)
			outp, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("the publisher was not killed: %v\n%s", err, outp)
			}
			if got := setOf(t, out); got != want {
				t.Fatalf("killed at %s: out holds the %s set, want %s", point, got, want)
			}
			unlock, err := lockOutDir(context.Background(), out)
			if err != nil {
				t.Fatal(err)
			}
			unlock()
			if _, err := os.Stat(work); !os.IsNotExist(err) {
				t.Errorf("the dead build's work folder is still there: %v", err)
			}
			if got := setOf(t, out); got != want {
				t.Fatalf("after cleanup: %s", got)
			}
		})
	}
}

func TestCheckOutDir(t *testing.T) {
	if err := checkOutDir(filepath.Join(t.TempDir(), "absent")); err != nil {
		t.Errorf("absent folder: %v", err)
	}
	if err := checkOutDir(t.TempDir()); err != nil {
		t.Errorf("plain folder: %v", err)
	}
	// /proc is a mount point on every Linux machine.
	if err := checkOutDir("/proc"); err == nil || !strings.Contains(err.Error(), "mount point") {
		t.Errorf("/proc: %v", err)
	}
}

// An --out that is a symlink publishes into its target: exchanging the link itself would
// leave the target stale and turn the link into a folder.
func TestCheckOptionsFollowsSymlinkedOut(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	o := Options{Recipe: &recipes.Recipe{}, Lock: &recipes.Lock{}, Layer: &roles.Layer{}, Store: artifactsStub{}, OutDir: filepath.Join(root, "link")}
	if err := checkOptions(&o); err != nil {
		t.Fatal(err)
	}
	if want, _ := filepath.EvalSymlinks(filepath.Join(root, "real")); o.OutDir != want {
		t.Errorf("OutDir %s, want the link's target %s", o.OutDir, want)
	}
}

type artifactsStub struct{}

func (artifactsStub) Scratch(string) (string, error)               { return "", nil }
func (artifactsStub) Lock(context.Context, string) (func(), error) { return func() {}, nil }
func (artifactsStub) FetchRootfs(context.Context, string, string) (bool, error) {
	return false, nil
}
func (artifactsStub) ShareRootfs(context.Context, string, string) {}
