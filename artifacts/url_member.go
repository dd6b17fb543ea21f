package artifacts

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/recipes"
)

// Members of url artifacts (source.member): one file taken out of a downloaded .tar.gz, e.g.
// cri-dockerd/cri-dockerd out of cri-dockerd-0.3.16.amd64.tgz. The lock pins the tarball (its
// URL, sha256 and size: what upstream serves) and names the member; the artifact a fetch
// returns is the member, so the node layer gets the binary, not the tarball.
//
// As for binaries out of .deb files (deb_extract.go), the member is cached as a blob of its
// own and a small index in scratch/url-extract maps the tarball's sha256 and the member to
// the member's sha256, so a warm fetch reads neither the network nor the tarball.

// maxMembersShown bounds the names a "no such member" error lists.
const maxMembersShown = 10

// checkMemberPath refuses a member that is not a plain relative path inside the archive.
func checkMemberPath(m string) error {
	switch {
	case m == "":
		return errors.New("is empty: name the file inside the archive, e.g. cri-dockerd/cri-dockerd")
	case path.IsAbs(m):
		return errors.New("is an absolute path: name the file inside the archive, e.g. cri-dockerd/cri-dockerd")
	case slices.Contains(strings.Split(m, "/"), ".."):
		return errors.New("has a .. segment: name a file inside the archive")
	case path.Clean(m) != m:
		return fmt.Errorf("is not a clean path: write %q", path.Clean(m))
	}
	return nil
}

// memberIndex is where the index of a's member lives. The member is path-escaped: one file
// name per (tarball, member), whatever slashes the member has.
func (s *URLSource) memberIndex(a recipes.LockedArtifact) string {
	return filepath.Join(s.Cache.Dir(), scratchDir, "url-extract", a.SHA256+"-"+url.PathEscape(a.Member))
}

// extractedMember finds a member taken out of its tarball before (warm path).
func (s *URLSource) extractedMember(a recipes.LockedArtifact) (string, bool) {
	return s.Cache.extracted(s.memberIndex(a))
}

// extractMember takes a.Member out of the verified .tar.gz at tgz, caches it as a blob and
// records it in the index; it returns the blob's path. The member must be a regular file:
// a link is refused (its target is another entry, or outside the archive), and so is an
// entry that names the member through an absolute path or "..".
func (s *URLSource) extractMember(a recipes.LockedArtifact, tgz string) (string, error) {
	file := path.Base(a.URL)
	if err := checkMemberPath(a.Member); err != nil {
		return "", fmt.Errorf("%s: member %q %w", a.Name, a.Member, err)
	}
	if _, err := s.Cache.Scratch("url-extract"); err != nil {
		return "", err
	}
	f, err := os.Open(tgz)
	if err != nil {
		return "", fmt.Errorf("%s: %w", a.Name, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", fmt.Errorf("%s: %s is not a gzip'd tar (%v): source.member takes a file out of a .tar.gz or .tgz download; leave member out for a plain file", a.Name, file, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var names []string
	others := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("%s: reading %s as a gzip'd tar: %w", a.Name, file, err)
		}
		unsafe := path.IsAbs(h.Name) || slices.Contains(strings.Split(h.Name, "/"), "..")
		if cleanMember(h.Name) != a.Member {
			if h.Typeflag == tar.TypeReg && !unsafe {
				if others++; others <= maxMembersShown {
					names = append(names, h.Name)
				}
			}
			continue
		}
		switch {
		case unsafe:
			return "", fmt.Errorf("%s: %s names %s as %q, an absolute path or one with ..; refused", a.Name, file, a.Member, h.Name)
		case h.Typeflag == tar.TypeSymlink:
			return "", fmt.Errorf("%s: in %s, %s is a symbolic link to %q, not a regular file; refused: name a regular file in source.member", a.Name, file, a.Member, h.Linkname)
		case h.Typeflag == tar.TypeLink:
			return "", fmt.Errorf("%s: in %s, %s is a hard link to %q, not a regular file; refused: name a regular file in source.member", a.Name, file, a.Member, h.Linkname)
		case h.Typeflag != tar.TypeReg:
			return "", fmt.Errorf("%s: in %s, %s is not a regular file (tar type %q); name a regular file in source.member", a.Name, file, a.Member, string(h.Typeflag))
		}
		sum, p, err := s.Cache.put(tr, "")
		if err != nil {
			return "", fmt.Errorf("%s: taking %s out of %s: %w", a.Name, a.Member, file, err)
		}
		if err := atomicfile.WriteFile(s.memberIndex(a), []byte(sum+"\n"), 0o644); err != nil {
			return "", err
		}
		return p, nil
	}
	holds := "no regular file"
	if len(names) > 0 {
		holds = strings.Join(names, ", ")
		if others > len(names) {
			holds += fmt.Sprintf(" and %d more", others-len(names))
		}
	}
	return "", fmt.Errorf("%s: %s holds no file %s (it holds %s); check source.member in the recipe", a.Name, file, a.Member, holds)
}
