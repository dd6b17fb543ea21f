package artifacts

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
)

// Binaries from Debian packages (an input of kind "binary" whose source type is deb, e.g.
// the CNI plugins from containernetworking-plugins).
//
// Resolving: the input's Version is a recipe constraint ("1.1" or "v1.1.1") on the package's
// upstream version: epoch, Debian revision and repack suffixes (+ds1, ~dfsg) are ignored, so
// 1.1.1+ds1-3+b2 counts as v1.1.1. The newest package whose upstream version matches wins.
// The lock records Version as that upstream version (v1.1.1, what the recipe constrains),
// Package as the exact Debian pin ("containernetworking-plugins=1.1.1+ds1-3+b2"), and the
// .deb's pool path, sha256 and size.
//
// Fetching downloads the .deb (checked against the lock), takes the file named like the input
// (path.Base of its name: "cni/bridge" -> bridge) out of its data archive with dpkg-deb, and
// caches it as a blob of its own; a small index in scratch/deb-extract maps .deb sha256 and
// member to the binary's sha256, so a warm fetch reads neither the .deb nor the binary.

// debUpstreamVersion turns a Debian version into a recipe-style version: "1:1.1.1+ds1-3+b2"
// -> "v1.1.1".
func debUpstreamVersion(v string) string {
	_, up, _ := splitDebVersion(v)
	if i := strings.IndexAny(up, "+~"); i >= 0 {
		up = up[:i]
	}
	return "v" + up
}

// binaryMember is the file a binary input takes out of its package.
func binaryMember(name string) string { return path.Base(name) }

// preferredBinDirs rank candidate members when a package has several files of that name.
var preferredBinDirs = []string{"usr/bin", "usr/sbin", "bin", "sbin", "usr/lib/cni", "usr/libexec/cni", "opt/cni/bin", "usr/local/bin"}

// extractedBinary finds a binary taken out of its package before (warm path).
func (s *DebSource) extractedBinary(a recipes.LockedArtifact) (string, bool) {
	return s.Cache.extracted(filepath.Join(s.Cache.Dir(), scratchDir, "deb-extract", a.SHA256+"-"+binaryMember(a.Name)))
}

// extracted reads an extraction index (a file naming, by sha256, the blob taken out of an
// archive) and returns that blob's path when the cache still has it.
func (c *Cache) extracted(index string) (string, bool) {
	data, err := os.ReadFile(index)
	if err != nil {
		return "", false
	}
	h := strings.TrimSpace(string(data))
	if !ValidSHA256(h) {
		return "", false
	}
	p, ok, err := c.Lookup(h)
	return p, ok && err == nil
}

// fetchBinaryFromDeb returns the cache path of a binary inside the verified .deb at debPath.
func (s *DebSource) fetchBinaryFromDeb(ctx context.Context, a recipes.LockedArtifact, debPath string) (string, error) {
	member := binaryMember(a.Name)
	idxDir, err := s.Cache.Scratch("deb-extract")
	if err != nil {
		return "", err
	}
	idx := filepath.Join(idxDir, a.SHA256+"-"+member)
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return "", fmt.Errorf("%s: taking %s out of %s needs dpkg-deb: apt-get install dpkg", a.Name, member, path.Base(a.URL))
	}
	tarFile, err := os.CreateTemp(idxDir, ".fsys-*.tar")
	if err != nil {
		return "", err
	}
	defer os.Remove(tarFile.Name())
	defer tarFile.Close()
	if err := (&run.Cmd{Name: "dpkg-deb", Args: []string{"--fsys-tarfile", debPath}, Stdout: tarFile}).Run(ctx); err != nil {
		return "", fmt.Errorf("%s: unpacking %s: %w", a.Name, path.Base(a.URL), err)
	}
	if _, err := tarFile.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	want, err := findMember(tar.NewReader(tarFile), member)
	if err != nil {
		return "", fmt.Errorf("%s: %s: %w", a.Name, path.Base(a.URL), err)
	}
	if _, err := tarFile.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	tr := tar.NewReader(tarFile)
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("%s: %s: reading %s again: %w", a.Name, path.Base(a.URL), want, err)
		}
		if cleanMember(h.Name) != want {
			continue
		}
		sum, p, err := s.Cache.put(tr, "")
		if err != nil {
			return "", err
		}
		if err := atomicfile.WriteFile(idx, []byte(sum+"\n"), 0o644); err != nil {
			return "", err
		}
		return p, nil
	}
}

func cleanMember(name string) string { return strings.TrimPrefix(path.Clean("/"+name), "/") }

// findMember picks the regular file named base: the only one, or the one in the most
// preferred bin folder.
func findMember(tr *tar.Reader, base string) (string, error) {
	var found []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
		if h.Typeflag == tar.TypeReg && path.Base(h.Name) == base {
			found = append(found, cleanMember(h.Name))
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("the package holds no file named %q; check the source package in the recipe", base)
	case 1:
		return found[0], nil
	}
	for _, dir := range preferredBinDirs {
		for _, f := range found {
			if path.Dir(f) == dir {
				return f, nil
			}
		}
	}
	return "", fmt.Errorf("the package holds several files named %q (%s) and none in a bin folder", base, strings.Join(found, ", "))
}
