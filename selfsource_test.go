package kubebake

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestApplierPackagesAreItsImports keeps the embedded source list equal to what the applier
// really imports from this module: a new import must be embedded, or the build breaks.
func TestApplierPackagesAreItsImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./"+ApplierMain).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var got []string
	for _, p := range strings.Fields(string(out)) {
		if rel, ok := strings.CutPrefix(p, "github.com/kubebake/kubebake/"); ok {
			got = append(got, rel)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, ApplierPackages) {
		t.Fatalf("the applier imports %v from this module, ApplierPackages (and the go:embed line) say %v", got, ApplierPackages)
	}
	var dirs []string
	for _, f := range ApplierSource() {
		if d, _, ok := strings.Cut(f.Path, "/"); ok && d != "" {
			dir := f.Path[:strings.LastIndex(f.Path, "/")]
			if !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
	}
	slices.Sort(dirs)
	if !slices.Equal(dirs, ApplierPackages) {
		t.Fatalf("embedded folders %v, want %v", dirs, ApplierPackages)
	}
}

func TestApplierSourceSHA256(t *testing.T) {
	src := ApplierSource()
	if len(src) < 4 || src[0].Path != "cloudinit/ignition/apply.go" {
		t.Fatalf("unexpected source tree: %d files, first %q", len(src), src[0].Path)
	}
	for _, f := range src {
		if strings.HasSuffix(f.Path, "_test.go") {
			t.Errorf("%s: tests are not part of the applier's source", f.Path)
		}
	}
	if s := ApplierSourceSHA256(); len(s) != 64 || s != ApplierSourceSHA256() {
		t.Fatalf("sha256 %q", s)
	}
}
