// Package kubebake carries the source of the programs kubebake bakes into every image from
// its own module (today the first-boot Ignition applier, cmd/kubebake-ignition), so that a
// build compiles them from the source of the kubebake that runs, never from whatever the
// current directory or $PATH holds. The lock pins the source's sha256 and the binary's
// (artifacts/self.go); a test keeps ApplierPackages equal to the applier's real imports.
//
// It lives at the module root because go:embed reaches only files below the package.
package kubebake

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ApplierMain is the applier's main package, relative to the module root.
const ApplierMain = "cmd/kubebake-ignition"

// ApplierPackages are the folders of this module the applier is compiled from: its main and
// everything it imports from kubebake. go.mod and go.sum pin the rest.
var ApplierPackages = []string{"cloudinit/ignition", "cmd/kubebake-ignition", "internal/atomicfile", "internal/redact", "internal/run"}

//go:embed go.mod go.sum cloudinit/ignition/*.go cmd/kubebake-ignition/*.go internal/atomicfile/*.go internal/redact/*.go internal/run/*.go
var applierFS embed.FS

var applierSum = sync.OnceValue(func() string {
	h := sha256.New()
	for _, f := range ApplierSource() {
		// name, NUL, length-prefixed content: no two trees hash alike.
		h.Write([]byte(f.Path + "\x00"))
		h.Write([]byte(strconv.Itoa(len(f.Data)) + "\x00"))
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
})

// SourceFile is one file of the applier's source tree.
type SourceFile struct {
	Path string // slash-separated, relative to the module root
	Data []byte
}

// ApplierSource is the applier's source tree, sorted by path: go.mod, go.sum and the
// non-test Go files of ApplierPackages. Tests are left out: they do not change the binary.
func ApplierSource() []SourceFile {
	var out []SourceFile
	_ = fs.WalkDir(applierFS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.go") {
			return err
		}
		data, err := applierFS.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, SourceFile{Path: path.Clean(p), Data: data})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// ApplierSourceSHA256 is the hex sha256 of ApplierSource, what the lock pins as the
// applier's source.
func ApplierSourceSHA256() string { return applierSum() }
