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

// Container images baked into a node image (nodes pull nothing). Each is an OCI archive
// built from artifacts the lock already pins (Debian's busybox-static, the CoreDNS binary, the
// program of a recipe's gomod image; a recipe's archive image is ArchiveSource's)
// and the lock's SOURCE_DATE_EPOCH, so it is a pure function of the lock: `kubebake lock`
// builds it once to record its sha256 and manifest digest, and Fetch rebuilds it on a
// machine whose cache lacks it and checks that it comes out byte-identical.

// SourceOCI is the source type of image artifacts: built here, from other artifacts.
const SourceOCI = "oci"

// ImageSource builds the lock's image artifacts (source type "oci") into the cache. Lock and
// Fetch use it directly: an image is built from other artifacts, so it cannot be resolved or
// fetched on its own the way the Source interface works.
type ImageSource struct {
	cache *Cache
	// builders make each image (nil: imageBuilders); tests swap in builders that need no
	// real binaries.
	builders map[string]imageBuilder
}

// NewImageSource returns the image source working in cache.
func NewImageSource(cache *Cache) *ImageSource { return &ImageSource{cache: cache} }

// Type implements Source.
func (s *ImageSource) Type() string { return SourceOCI }

// Resolve implements Source; Lock builds images itself once their inputs are resolved.
func (s *ImageSource) Resolve(context.Context, []recipes.Input, []recipes.LockedArtifact, bool) ([]recipes.LockedArtifact, error) {
	return nil, fmt.Errorf("images are built from other artifacts: artifacts.Lock builds them (a kubebake bug)")
}

// Fetch implements Source; artifacts.Fetch rebuilds images itself from their inputs.
func (s *ImageSource) Fetch(context.Context, []recipes.LockedArtifact) (map[string]string, error) {
	return nil, fmt.Errorf("images are built from other artifacts: artifacts.Fetch builds them (a kubebake bug)")
}

// imageRecipe says how one baked image is made: the artifacts it is built from and the
// builder.
type imageRecipe struct {
	name   string   // artifact name: "image/<name>"
	inputs []string // artifact names it is built from
	build  imageBuilder
}

type imageBuilder func(paths, versions map[string]string, epoch int64) (oci.NamedImage, error)

// imageBuilders make each image kubebake knows from its inputs' cache paths and versions.
var imageBuilders = map[string]imageBuilder{
	"image/busybox": func(p, v map[string]string, e int64) (oci.NamedImage, error) {
		return oci.BusyboxImage(busyboxInput(p, v, e))
	},
	"image/pause": func(p, v map[string]string, e int64) (oci.NamedImage, error) {
		return oci.PauseImage(busyboxInput(p, v, e))
	},
	"image/coredns": func(p, v map[string]string, e int64) (oci.NamedImage, error) {
		return oci.CoreDNSImage(oci.CoreDNSInput{Binary: p[recipes.CoreDNSBinary], Version: v[recipes.CoreDNSBinary], SourceDateEpoch: e})
	},
}

func busyboxInput(paths, versions map[string]string, epoch int64) oci.BusyboxInput {
	// A binary from a .deb is locked at its upstream version ("v1.35.0").
	return oci.BusyboxInput{Binary: paths[recipes.BusyboxArtifact], Version: versions[recipes.BusyboxArtifact], SourceDateEpoch: epoch}
}

// binaryImageBuilder makes a recipe's gomod image (images[].source) from its program.
func binaryImageBuilder(name string) imageBuilder {
	bin := recipes.ImageBinaryArtifact(name)
	return func(p, v map[string]string, e int64) (oci.NamedImage, error) {
		return oci.BinaryImage(oci.BinaryInput{Name: name, Binary: p[bin], Version: v[bin], SourceDateEpoch: e})
	}
}

// imageRecipeFor is how the image called name, built from inputs, is made: one kubebake
// knows, or a recipe's gomod image, whose one input is its program.
func (s *ImageSource) imageRecipeFor(name string, inputs []string) (imageRecipe, error) {
	builders := s.builders
	if builders == nil {
		builders = imageBuilders
	}
	if b, ok := builders[name]; ok {
		return imageRecipe{name: name, inputs: inputs, build: b}, nil
	}
	short := strings.TrimPrefix(name, "image/")
	if len(inputs) == 1 && inputs[0] == recipes.ImageBinaryArtifact(short) {
		return imageRecipe{name: name, inputs: inputs, build: binaryImageBuilder(short)}, nil
	}
	return imageRecipe{}, fmt.Errorf("%s: this kubebake does not know how to build that image; run \"kubebake lock\"", name)
}

// imageRecipes are the images a recipe bakes (recipes.Recipe.BakedImages).
func (s *ImageSource) imageRecipes(r *recipes.Recipe) ([]imageRecipe, error) {
	var out []imageRecipe
	for _, img := range r.BakedImages() {
		ir, err := s.imageRecipeFor(img.Name, img.Inputs)
		if err != nil {
			return nil, err
		}
		out = append(out, ir)
	}
	return out, nil
}

// lockImages builds the recipe's images from the resolved artifacts and returns their lock
// entries. It fetches the artifacts they are built from (a .deb, a Go build already done).
func lockImages(ctx context.Context, cache *Cache, irs []imageRecipe, arts []recipes.LockedArtifact, epoch int64, sources map[string]Source) ([]recipes.LockedArtifact, error) {
	paths, versions, err := fetchImageInputs(ctx, irs, arts, sources)
	if err != nil {
		return nil, err
	}
	var out []recipes.LockedArtifact
	for _, ir := range irs {
		a, _, err := buildImage(cache, ir, paths, versions, epoch)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// fetchImageInputs fetches what the images are built from, by artifact name.
func fetchImageInputs(ctx context.Context, irs []imageRecipe, arts []recipes.LockedArtifact, sources map[string]Source) (paths, versions map[string]string, err error) {
	byName := map[string]recipes.LockedArtifact{}
	for _, a := range arts {
		byName[a.Name] = a
	}
	need := &recipes.Lock{}
	seen := map[string]bool{}
	for _, ir := range irs {
		for _, in := range ir.inputs {
			a, ok := byName[in]
			if !ok {
				return nil, nil, fmt.Errorf("%s is built from %s, which the lock does not pin; run \"kubebake lock\"", ir.name, in)
			}
			if !seen[in] {
				seen[in] = true
				need.Artifacts = append(need.Artifacts, a)
			}
		}
	}
	paths, err = Fetch(ctx, need, sources)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching what the baked images are built from: %w", err)
	}
	versions = map[string]string{}
	for _, a := range need.Artifacts {
		versions[a.Name] = a.Version
	}
	return paths, versions, nil
}

// buildImage builds one image archive into the cache and returns its lock entry and path.
func buildImage(cache *Cache, ir imageRecipe, paths, versions map[string]string, epoch int64) (recipes.LockedArtifact, string, error) {
	ni, err := ir.build(paths, versions, epoch)
	if err != nil {
		return recipes.LockedArtifact{}, "", fmt.Errorf("%s: %w", ir.name, err)
	}
	tmp, err := cache.Scratch("images")
	if err != nil {
		return recipes.LockedArtifact{}, "", err
	}
	file := filepath.Join(tmp, strings.TrimPrefix(ir.name, "image/")+".tar")
	arc, err := oci.WriteArchive(file, []oci.NamedImage{ni})
	if err != nil {
		return recipes.LockedArtifact{}, "", fmt.Errorf("%s: %w", ir.name, err)
	}
	defer os.Remove(file)
	sum, path, err := cache.PutFile(file)
	if err != nil {
		return recipes.LockedArtifact{}, "", fmt.Errorf("%s: caching the archive: %w", ir.name, err)
	}
	version := versions[ir.inputs[0]]
	return recipes.LockedArtifact{
		Name: ir.name, Kind: recipes.KindImage, Source: SourceOCI, Version: version,
		Package: strings.Join(ir.inputs, ","), Ref: ni.Ref, Digest: arc.Images[0].Digest,
		SHA256: sum, Size: arc.Size,
	}, path, nil
}

// fetchImages makes the lock's image archives present in the cache, rebuilding a missing
// one from its inputs, and returns their paths by artifact name. A rebuild that does not
// reproduce the locked sha256 is an error: the image would differ from the lock's.
func fetchImages(ctx context.Context, src *ImageSource, l *recipes.Lock, images []recipes.LockedArtifact, sources map[string]Source) (map[string]string, error) {
	cache := src.cache
	out := map[string]string{}
	var missing []recipes.LockedArtifact
	for _, a := range images {
		if p, ok, err := cache.Lookup(a.SHA256); err == nil && ok {
			out[a.Name] = p
			continue
		}
		missing = append(missing, a)
	}
	if len(missing) == 0 {
		return out, nil
	}
	all := map[string]imageRecipe{}
	var irs []imageRecipe
	for _, a := range missing {
		ir, err := src.imageRecipeFor(a.Name, strings.Split(a.Package, ","))
		if err != nil {
			return nil, err
		}
		all[a.Name] = ir
		irs = append(irs, ir)
	}
	paths, versions, err := fetchImageInputs(ctx, irs, l.Artifacts, sources)
	if err != nil {
		return nil, err
	}
	for _, a := range missing {
		got, p, err := buildImage(cache, all[a.Name], paths, versions, l.SourceDateEpoch)
		if err != nil {
			return nil, err
		}
		if got.SHA256 != a.SHA256 {
			return nil, fmt.Errorf("%s rebuilt to sha256 %s, but the lock pins %s (digest %s): its inputs or the image builder changed; run \"kubebake lock\" to pin the new image", a.Name, short(got.SHA256), short(a.SHA256), a.Digest)
		}
		out[a.Name] = p
	}
	return out, nil
}

// lockedImages pins the recipe's images. When the other artifacts did not change (unchanged)
// the previous lock's entries are kept as they are, so that locking again is byte-identical
// and cheap; otherwise each image is built from the resolved artifacts.
func lockedImages(ctx context.Context, r *recipes.Recipe, prev *recipes.Lock, unchanged bool, arts []recipes.LockedArtifact, epoch int64, sources map[string]Source) ([]recipes.LockedArtifact, error) {
	if len(r.BakedImages()) == 0 {
		return nil, nil
	}
	src, _ := sources[SourceOCI].(*ImageSource)
	if src == nil {
		return nil, fmt.Errorf("recipe %s bakes container images, but no image source is configured here (a kubebake bug)", r.Name)
	}
	irs, err := src.imageRecipes(r)
	if err != nil {
		return nil, err
	}
	if unchanged {
		kept := map[string]recipes.LockedArtifact{}
		for _, a := range prev.Artifacts {
			kept[a.Name] = a
		}
		var out []recipes.LockedArtifact
		for _, ir := range irs {
			if a, ok := kept[ir.name]; ok && a.Kind == recipes.KindImage && a.Package == strings.Join(ir.inputs, ",") {
				out = append(out, a)
			}
		}
		if len(out) == len(irs) {
			return out, nil
		}
	}
	return lockImages(ctx, src.cache, irs, arts, epoch, sources)
}
