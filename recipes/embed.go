package recipes

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

// The embedded recipes are plain YAML files in this folder, the examples people copy, and
// their locks beside them (debian-12.lock) once `kubebake lock` has written them.
//
//go:embed debian-*
var embedded embed.FS

// EmbeddedDir is the folder of the embedded recipes in the source tree. Messages name an
// embedded recipe by its path there ("recipes/debian-12.yaml"), and its lock is written there.
const EmbeddedDir = "recipes"

// Summary describes one embedded recipe for `recipe list`.
type Summary struct {
	Name       string `json:"name"`
	File       string `json:"file"`
	Release    string `json:"release"`
	Kubernetes string `json:"kubernetes"`
}

// List parses every embedded recipe. An embedded recipe that fails to parse is a bug; the
// tests keep it from happening and List reports it rather than hiding it.
func List() ([]Summary, error) {
	var out []Summary
	for _, name := range EmbeddedNames() {
		r, err := loadEmbedded(name)
		if err != nil {
			return nil, err
		}
		out = append(out, Summary{Name: name, File: r.File, Release: r.Base.Release, Kubernetes: r.Kubernetes.Version})
	}
	return out, nil
}

// EmbeddedNames are the names of the embedded recipes, sorted ("debian-12", "debian-13").
func EmbeddedNames() []string {
	ents, _ := fs.ReadDir(embedded, ".")
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Load reads a recipe: nameOrPath is read from disk when such a file exists, else it names an
// embedded recipe ("debian-12", "debian-12.yaml" or "recipes/debian-12.yaml"). The recipe is
// parsed strictly and defaulted, not linted.
func Load(nameOrPath string) (*Recipe, error) {
	data, err := os.ReadFile(nameOrPath)
	if err == nil {
		return Parse(nameOrPath, data)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if name, ok := embeddedName(nameOrPath); ok {
		return loadEmbedded(name)
	}
	if strings.ContainsRune(nameOrPath, '/') || strings.HasSuffix(nameOrPath, ".yaml") || strings.HasSuffix(nameOrPath, ".yml") {
		return nil, fmt.Errorf("%s: no such file", nameOrPath)
	}
	return nil, fmt.Errorf("%q is neither a file nor an embedded recipe; embedded: %s", nameOrPath, strings.Join(EmbeddedNames(), ", "))
}

// embeddedName maps the accepted spellings of an embedded recipe to its name.
func embeddedName(s string) (string, bool) {
	n := strings.TrimPrefix(s, EmbeddedDir+"/")
	n = strings.TrimSuffix(n, ".yaml")
	for _, e := range EmbeddedNames() {
		if e == n {
			return n, true
		}
	}
	return "", false
}

func loadEmbedded(name string) (*Recipe, error) {
	data, err := embedded.ReadFile(name + ".yaml")
	if err != nil {
		return nil, err
	}
	r, err := Parse(path.Join(EmbeddedDir, name+".yaml"), data)
	if err != nil {
		return nil, err
	}
	r.Embedded = true
	return r, nil
}

// EmbeddedFile returns the bytes of an embedded file ("debian-12.yaml", "debian-12.lock").
func EmbeddedFile(name string) ([]byte, error) { return embedded.ReadFile(name) }
