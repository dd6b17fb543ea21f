package artifacts

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubebake/kubebake/artifacts/oci"
	"github.com/kubebake/kubebake/recipes"
)

// ArchiveSource pins a recipe's image archives (images[].archive, source type archive): the
// file beside the recipe by its sha256 (sourceSha256), and the archive kubebake writes from
// it (oci.RewriteArchive: the same image under kubebake.local/<name>:<tag>, every blob checked)
// by its sha256, manifest digest and reference. The rewritten archive is what the node image
// carries; Fetch makes it again from the recipe's file on a machine whose cache lacks it.
type ArchiveSource struct {
	cache *Cache
	dir   string // the recipe's folder: archive paths are relative to it
}

// NewArchiveSource returns the archive source working in cache for the recipe in dir.
func NewArchiveSource(cache *Cache, dir string) *ArchiveSource {
	if dir == "" {
		dir = "."
	}
	return &ArchiveSource{cache: cache, dir: dir}
}

// Type implements Source.
func (s *ArchiveSource) Type() string { return recipes.SourceArchive }

// Resolve implements Source. An archive has no newer version to move to: a locked entry is
// kept while the file still has the sha256 it had, whatever update says.
func (s *ArchiveSource) Resolve(ctx context.Context, inputs []recipes.Input, prev []recipes.LockedArtifact, update bool) ([]recipes.LockedArtifact, error) {
	prevByName := map[string]recipes.LockedArtifact{}
	for _, p := range prev {
		prevByName[p.Name] = p
	}
	var out []recipes.LockedArtifact
	for _, in := range inputs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if in.Kind != recipes.KindImage || !strings.HasPrefix(in.Name, "image/") {
			return nil, fmt.Errorf("archive input %q: kind %q; archives hold images (a kubebake bug)", in.Name, in.Kind)
		}
		if in.Arch != "" && in.Arch != oci.Platform.Architecture {
			return nil, fmt.Errorf("%s: base.arch is %s, but images are baked for %s/%s only", in.Name, in.Arch, oci.Platform.OS, oci.Platform.Architecture)
		}
		file, sum, err := recipes.HashImageArchive(s.dir, in.Package)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.Name, err)
		}
		if p, ok := prevByName[in.Name]; ok && p.Source == recipes.SourceArchive && p.Kind == recipes.KindImage &&
			p.Package == in.Package && p.SourceSHA256 == sum && ValidSHA256(p.SHA256) && p.Ref != "" && p.Digest != "" {
			out = append(out, p)
			continue
		}
		a, _, err := s.rewrite(in.Name, in.Package, file, sum)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Fetch implements Source. An archive missing from the cache is written again from the
// recipe's file, which must still be the one the lock read, and must come out byte-identical.
func (s *ArchiveSource) Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range arts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !ValidSHA256(a.SHA256) || !ValidSHA256(a.SourceSHA256) || a.Package == "" {
			return nil, fmt.Errorf("lock entry %q: archive %q, sha256 %q or sourceSha256 %q missing or not valid; run \"kubebake lock\"", a.Name, a.Package, a.SHA256, a.SourceSHA256)
		}
		if p, ok, err := s.cache.Lookup(a.SHA256); err != nil {
			return nil, err
		} else if ok {
			out[a.Name] = p
			continue
		}
		file, sum, err := recipes.HashImageArchive(s.dir, a.Package)
		if err != nil {
			return nil, fmt.Errorf("%s: the cache lacks its archive and the recipe's file cannot be read: %w", a.Name, err)
		}
		if sum != a.SourceSHA256 {
			return nil, fmt.Errorf("%s: %s has sha256 %s, the lock read one with %s: the archive changed since the lock was written; run \"kubebake lock\"", a.Name, file, short(sum), short(a.SourceSHA256))
		}
		got, p, err := s.rewrite(a.Name, a.Package, file, sum)
		if err != nil {
			return nil, err
		}
		if got.SHA256 != a.SHA256 || got.Digest != a.Digest || got.Ref != a.Ref {
			return nil, fmt.Errorf("%s: %s rewritten to sha256 %s (%s at %s), but the lock pins %s (%s at %s): this kubebake writes archives differently from the one that locked it; run \"kubebake lock\"",
				a.Name, a.Package, short(got.SHA256), got.Ref, got.Digest, short(a.SHA256), a.Ref, a.Digest)
		}
		out[a.Name] = p
	}
	return out, nil
}

// rewrite writes the image of the archive file (rel in the recipe's folder, sha256 sum) into
// the cache under its kubebake.local name and returns its lock entry and cache path.
func (s *ArchiveSource) rewrite(artifact, rel, file, sum string) (recipes.LockedArtifact, string, error) {
	tmp, err := s.cache.Scratch("images")
	if err != nil {
		return recipes.LockedArtifact{}, "", err
	}
	name := strings.TrimPrefix(artifact, "image/")
	dst := filepath.Join(tmp, "archive-"+name+".tar")
	defer os.Remove(dst)
	arc, err := oci.RewriteArchive(file, dst, name)
	if err != nil {
		return recipes.LockedArtifact{}, "", fmt.Errorf("%s: %w", artifact, err)
	}
	sha, p, err := s.cache.PutFile(dst)
	if err != nil {
		return recipes.LockedArtifact{}, "", fmt.Errorf("%s: caching the archive: %w", artifact, err)
	}
	img := arc.Images[0]
	tag := img.Ref[strings.LastIndexByte(img.Ref, ':')+1:]
	return recipes.LockedArtifact{
		Name: artifact, Kind: recipes.KindImage, Source: recipes.SourceArchive, Version: tag,
		Package: rel, Ref: img.Ref, Digest: img.Digest, SourceSHA256: sum, SHA256: sha, Size: arc.Size,
	}, p, nil
}
