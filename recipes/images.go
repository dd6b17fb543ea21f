package recipes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// A recipe's own container images (images:). An archive image is an input of its own (source
// type archive: the file beside the recipe); a gomod image is a binary input built like every
// gomod binary, from which the lock makes the image as it makes CoreDNS's (BakedImages).

// SourceArchive is the source type of images[].archive inputs: an image archive in the
// recipe's folder. Recipes do not name it; Inputs sets it.
const SourceArchive = "archive"

// BuiltinImages are the images kubebake bakes itself: a recipe's own may not take their names.
var BuiltinImages = []string{"busybox", "pause", "coredns"}

// ImageArtifact is the lock name of a baked image: "image/<name>".
func ImageArtifact(name string) string { return "image/" + name }

// ImageBinaryArtifact is the lock name of the program a gomod image is made of.
func ImageBinaryArtifact(name string) string { return "image-bin/" + name }

// GoMainPackage is the import path of images[].source.package in module: "." is the module's
// root, "./cmd/agent" is below it, anything else is taken as a full import path.
func GoMainPackage(module, pkg string) string {
	switch {
	case pkg == "." || pkg == "./":
		return module
	case strings.HasPrefix(pkg, "./"):
		return path.Join(module, pkg)
	}
	return pkg
}

// RecipeDir is the folder a recipe's relative paths (images[].archive) start from.
func RecipeDir(r *Recipe) string { return filepath.Dir(r.File) }

// ImageArchivePath is where images[].archive rel is: inside the recipe's folder dir, which it
// may not leave, not even through a symlink. The lock records rel, so the recipe's folder
// (the recipe, its lock, its archives) is what version control and another machine need.
// A file that does not exist is an error that wraps fs.ErrNotExist.
func ImageArchivePath(dir, rel string) (string, error) {
	shown := dir // the folder as messages name it
	if abs, err := filepath.Abs(dir); err == nil {
		shown = abs
	}
	switch {
	case rel == "":
		return "", errors.New("no archive path")
	case filepath.IsAbs(rel):
		return "", fmt.Errorf("%s is an absolute path: write it relative to the recipe's folder (%s)", rel, shown)
	}
	clean := filepath.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%s leaves the recipe's folder (%s): keep the archive beside the recipe, e.g. images/NAME.tar", rel, shown)
	}
	full := filepath.Join(dir, clean)
	real, err := filepath.EvalSymlinks(full)
	if errors.Is(err, fs.ErrNotExist) {
		return full, notExistError(fmt.Sprintf("%s does not exist in %s (archive paths are relative to the recipe's folder)", rel, shown))
	}
	if err != nil {
		return full, err
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return full, err
	}
	if r, err := filepath.Rel(realDir, real); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
		return full, fmt.Errorf("%s is a symlink to %s, outside the recipe's folder (%s): copy the archive into the folder", rel, real, shown)
	}
	st, err := os.Stat(full)
	if err != nil {
		return full, err
	}
	if !st.Mode().IsRegular() {
		return full, fmt.Errorf("%s is not a regular file", rel)
	}
	return full, nil
}

// notExistError is a missing archive, said once (errors.Is(err, fs.ErrNotExist) holds).
type notExistError string

func (e notExistError) Error() string { return string(e) }
func (e notExistError) Unwrap() error { return fs.ErrNotExist }

// HashImageArchive finds images[].archive rel in dir (ImageArchivePath) and returns its path
// and the hex sha256 of its content, what the lock pins as the archive's sourceSha256.
func HashImageArchive(dir, rel string) (string, string, error) {
	p, err := ImageArchivePath(dir, rel)
	if err != nil {
		return p, "", err
	}
	f, err := os.Open(p)
	if err != nil {
		return p, "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return p, "", fmt.Errorf("reading %s: %w", p, err)
	}
	return p, hex.EncodeToString(h.Sum(nil)), nil
}
