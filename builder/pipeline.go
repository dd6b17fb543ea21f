package builder

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
)

// Request is a build as `kubebake build`, the Packer builder and the rebase job ask for it:
// a recipe by name or path, and where the outputs go. Run does everything else.
type Request struct {
	// Recipe is a recipe name ("debian-12") or the path of its YAML.
	Recipe string
	// OutDir receives the outputs; empty: out/<recipe name>.
	OutDir string
	// Formats to write; empty: the recipe's image.formats.
	Formats []string
	// AllowDrift builds from a lock that no longer matches the recipe (with a warning)
	// instead of refusing.
	AllowDrift bool
	// Cache holds artifacts, rootfs tarballs and Go-built binaries.
	Cache *artifacts.Cache
	// Sources resolve and fetch the lock's artifacts; nil: artifacts.RecipeSources.
	Sources map[string]artifacts.Source
	// Progress receives stage events; nil: none.
	Progress func(Event)
	// Version is kubebake's version, for the output folder's manifest.
	Version string
	// HostBootloader: see Options.
	HostBootloader string
}

// pipelineValues are what the front stages hand on, one field per stage.
type pipelineValues struct {
	recipe *recipes.Recipe             // load
	lock   *recipes.Lock               // lock
	srcs   map[string]artifacts.Source // fetch: the sources that fetched them
	paths  map[string]string           // fetch: cache path of each artifact
	debs   map[string]string           // fetch: cache path of each pinned .deb, by sha256
	layer  *roles.Layer                // render
}

// Run is the one build pipeline: load the recipe, lint it (errors refuse the build, with
// their positions), check its lock, fetch the artifacts, render the node layer, then bake
// and publish (bakeStages). Every stage is timed in the progress events and the manifest.
func Run(ctx context.Context, req Request) (*Result, error) {
	if req.Cache == nil {
		return nil, fmt.Errorf("build: no artifact cache")
	}
	s := &state{start: time.Now()}
	v := &pipelineValues{}
	return s.run(ctx, append(frontStages(s, req, v), s.bakeStages()...), req.Progress)
}

// frontStages prepare the bake: each reads what an earlier one gave (v) and gives its own.
// The last one initialises the bake's state s.
func frontStages(s *state, req Request, v *pipelineValues) []stage {
	return []stage{
		{"load", func(ctx context.Context) (err error) {
			if v.recipe, err = recipes.Load(req.Recipe); err == nil {
				s.redactor = redact.New(mirrorSecrets(v.recipe, "")...)
			}
			return err
		}},
		{"lint", func(ctx context.Context) error { return lintForBuild(v.recipe, s.log) }},
		{"lock", func(ctx context.Context) (err error) {
			v.lock, err = checkedLock(v.recipe, req.AllowDrift, s.log)
			return err
		}},
		{"fetch", func(ctx context.Context) (err error) {
			if v.srcs, err = sources(req, v.recipe); err != nil {
				return err
			}
			s.log(fmt.Sprintf("%d artifacts of %s", len(v.lock.Artifacts), v.recipe.Name))
			if v.paths, err = artifacts.Fetch(ctx, v.lock, v.srcs); err != nil {
				return artifacts.NameRecipe(err, recipeFile(v.recipe))
			}
			if len(v.lock.Packages) > 0 {
				s.log(fmt.Sprintf("%d Debian packages of the rootfs", len(v.lock.Packages)))
			}
			v.debs, err = artifacts.FetchPackages(ctx, v.lock, v.srcs, recipes.LockPath(recipeFile(v.recipe)))
			return err
		}},
		{"render", func(ctx context.Context) (err error) {
			if v.layer, err = roles.Render(v.recipe, v.lock); err != nil {
				return err
			}
			if err := pinMembers(ctx, v.layer, v.lock, v.paths); err != nil {
				return err
			}
			opts := bakeOptions(req, v)
			if opts.Mirror == "" { // the recipe names none: this machine's apt mirror
				if opts.Mirror, err = artifacts.SystemDebianMirror(); err != nil {
					return err
				}
			}
			if debs, ok := v.srcs[recipes.SourceDeb].(*artifacts.DebSource); ok {
				opts.SecurityMirror = debs.SecurityMirror
			}
			return s.init(opts)
		}},
	}
}

func (s *state) log(msg string) { s.emit(Event{Kind: EventLog, Message: msg}) }

// lintForBuild refuses a recipe with lint errors, naming each with its position; warnings are
// logged. A locked recipe edited to a pitfall (ip_forward 0, a missing module) stops here.
func lintForBuild(r *recipes.Recipe, log func(string)) error {
	findings := recipes.Lint(r)
	for _, f := range findings {
		if f.Severity == recipes.SeverityWarning {
			log(f.String())
		}
	}
	if err := recipes.LintError(findings); err != nil {
		return fmt.Errorf("%s does not pass lint, nothing built:\n%w", r.File, err)
	}
	return nil
}

// checkedLock reads the recipe's lock and refuses one that no longer matches the recipe,
// unless allowDrift (then it warns and the lock is used as it is).
func checkedLock(r *recipes.Recipe, allowDrift bool, log func(string)) (*recipes.Lock, error) {
	l, err := recipes.ReadRecipeLock(r)
	if err != nil {
		return nil, err
	}
	if err := recipes.CheckLock(r, l); err != nil {
		if !allowDrift {
			return nil, err
		}
		log("building from a lock that does not match the recipe: " + err.Error())
	}
	return l, nil
}

// sources are the request's artifact sources, else the recipe's.
func sources(req Request, r *recipes.Recipe) (map[string]artifacts.Source, error) {
	if req.Sources != nil {
		return req.Sources, nil
	}
	return artifacts.RecipeSources(req.Cache, r)
}

// mirrorCheck asks the deb source whether the mirror still serves every Debian package of
// the lock (nil when the sources have no deb source to ask).
func mirrorCheck(srcs map[string]artifacts.Source, r *recipes.Recipe, l *recipes.Lock) func(context.Context) error {
	debs, ok := srcs[recipes.SourceDeb].(*artifacts.DebSource)
	if !ok {
		return nil
	}
	var pkgs []recipes.LockedArtifact
	for _, a := range l.Artifacts {
		if a.Kind == recipes.InputDeb {
			pkgs = append(pkgs, a)
		}
	}
	return func(ctx context.Context) error {
		return artifacts.NameRecipe(debs.CheckServed(ctx, pkgs, r.Base.Suites, r.Base.Arch), recipeFile(r))
	}
}

// bakeOptions are the bake's options from the request and what the front stages gave.
func bakeOptions(req Request, v *pipelineValues) Options {
	out := req.OutDir
	if out == "" {
		out = filepath.Join("out", v.recipe.Name)
	}
	return Options{
		Recipe: v.recipe, Lock: v.lock, Layer: v.layer, Open: openFrom(v.paths), Debs: v.debs, Store: req.Cache,
		Mirror: v.recipe.Base.Mirror, OutDir: out, Formats: req.Formats, Version: req.Version,
		HostBootloader: req.HostBootloader, MirrorCheck: mirrorCheck(v.srcs, v.recipe, v.lock),
	}
}

// pinMembers gives the layer's files of an artifact taken out of an archive (a url artifact
// with a member: cri-dockerd out of upstream's tarball) the sha256 and size of the file fetch
// took out, not the archive's that the lock pins: the layer holds the file, and WriteTar
// checks every byte it writes against them.
func pinMembers(ctx context.Context, layer *roles.Layer, l *recipes.Lock, paths map[string]string) error {
	members := map[string]bool{}
	for _, a := range l.Artifacts {
		if a.Member != "" {
			members[a.Name] = true
		}
	}
	for i, f := range layer.Files {
		if f.Artifact == "" || !members[f.Artifact] {
			continue
		}
		p, ok := paths[f.Artifact]
		if !ok {
			return fmt.Errorf("artifact %s was not fetched", f.Artifact)
		}
		sum, size, err := fileSHA256Size(ctx, p)
		if err != nil {
			return fmt.Errorf("artifact %s: %w", f.Artifact, err)
		}
		layer.Files[i].SHA256, layer.Files[i].Size = sum, size
	}
	return nil
}

// openFrom opens artifacts by name from their fetched paths.
func openFrom(paths map[string]string) roles.OpenFunc {
	return func(name string) (io.ReadCloser, error) {
		p, ok := paths[name]
		if !ok {
			return nil, fmt.Errorf("artifact %s is not in the lock", name)
		}
		return os.Open(p)
	}
}
