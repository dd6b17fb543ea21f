// Package gomain holds the Go main packages that kubebake provides for gomod inputs whose
// module has no main package fit for a node: flannel's own main imports cloud backends whose
// SDKs the module proxy refuses, CoreDNS's own main imports every plugin (112 MB). Each main
// here imports the module's library packages and is built against the locked module version
// by the gomod source in artifacts, with the same flags as every gomod binary.
//
// Each main is <name>/main.go and starts with "//go:build ignore": kubebake's go build,
// go vet and go mod tidy skip files with that tag, which they must, because the mains import
// modules that are not (and must not be) in kubebake's go.mod. BuildSource returns the file
// without that line, as it is written into the build's work folder.
//
// The package imports nothing of kubebake, so that recipes (at the bottom of the import
// graph) can pin each main's sha256 in the inputs it derives: changing a main changes the
// lock.
package gomain

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

//go:embed flanneld/main.go coredns/main.go
var files embed.FS

// Names of the mains kubebake provides; the name is also the binary's file name.
const (
	Flanneld = "flanneld"
	CoreDNS  = "coredns"
)

// ignoreLine is the build constraint every main starts with.
const ignoreLine = "//go:build ignore\n"

// Names lists the provided mains, sorted.
func Names() []string {
	ents, _ := files.ReadDir(".")
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

// Path is where a main's source lives in kubebake's tree, for messages.
func Path(name string) string { return "artifacts/gomain/" + name + "/main.go" }

// Source returns a main's file as it is in kubebake's tree.
func Source(name string) ([]byte, error) {
	data, err := files.ReadFile(name + "/main.go")
	if err != nil {
		return nil, fmt.Errorf("kubebake provides no main %q (it has %s)", name, strings.Join(Names(), ", "))
	}
	return data, nil
}

// SHA256 is the hex sha256 of a main's file (Source): what the lock records to identify it.
// It is "" for a name kubebake does not provide.
func SHA256(name string) string {
	data, err := Source(name)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// BuildSource is a main's file without its leading "//go:build ignore" line: what the build
// compiles.
func BuildSource(name string) ([]byte, error) {
	data, err := Source(name)
	if err != nil {
		return nil, err
	}
	rest, ok := bytes.CutPrefix(data, []byte(ignoreLine))
	if !ok {
		return nil, fmt.Errorf("%s must start with %q so that kubebake's own build skips it", Path(name), strings.TrimSpace(ignoreLine))
	}
	return rest, nil
}
