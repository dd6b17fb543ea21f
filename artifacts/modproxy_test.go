package artifacts

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/kubebake/kubebake/internal/testenv"
)

// A Go module proxy on disk (GOPROXY=file://...), so that gomod builds of a module made up
// by a test need no network: the layout the go command reads, module/@v/list, .info, .mod and
// .zip, for one version of one module.

// modProxy writes module@version with files (path in the module -> content; go.mod among
// them) into a proxy folder and returns a GoModSource that builds from it alone: no module
// proxy, no checksum database, a module cache of its own. The Go build cache is the user's,
// as for every gomod test (the standard library is built once).
func modProxy(t *testing.T, cache *Cache, module, version string, files map[string]string) *GoModSource {
	t.Helper()
	testenv.NeedTool(t, "go")
	proxy := t.TempDir()
	dir := filepath.Join(proxy, filepath.FromSlash(module), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w, err := zw.Create(module + "@" + version + "/" + n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[n]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"list":            []byte(version + "\n"),
		version + ".info": []byte(`{"Version":"` + version + `","Time":"2026-01-02T03:04:05Z"}`),
		version + ".mod":  []byte(files["go.mod"]),
		version + ".zip":  zbuf.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := newGoModSource(cache)
	s.env = []string{
		"GOPROXY=file://" + proxy, "GOSUMDB=off", "GONOSUMDB=", "GOPRIVATE=", "GONOPROXY=",
		"GOMODCACHE=" + t.TempDir(),
		// -modcacherw: the test's module cache must be removable; it changes no binary.
		"GOFLAGS=-mod=mod -buildvcs=false -modcacherw",
	}
	return s
}
