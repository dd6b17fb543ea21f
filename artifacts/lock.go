package artifacts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// timeNow is the clock Lock uses for a new SourceDateEpoch (tests replace it).
var timeNow = time.Now

// Lock resolves every input of r to a pinned artifact and returns the new lock. prev is the
// current lock (nil when there is none): with update false its entries are kept wherever
// they still satisfy the recipe, with update true each input moves to the newest version its
// constraint allows. Inputs are grouped by source type and each Source resolves its batch;
// the sources run concurrently.
//
// SourceDateEpoch is kept from prev when no artifact changed, so that locking again is
// byte-identical. Otherwise it is $SOURCE_DATE_EPOCH when set, else the current time
// truncated to the day (UTC): artifacts carry no release time that every source knows.
func Lock(ctx context.Context, r *recipes.Recipe, prev *recipes.Lock, update bool, sources map[string]Source) (*recipes.Lock, error) {
	inputs := r.Inputs()
	if prev != nil && prev.Recipe != r.Name {
		prev = nil // a lock of another recipe pins nothing of this one
	}
	prevByName := map[string]recipes.LockedArtifact{}
	if prev != nil {
		for _, a := range prev.Artifacts {
			prevByName[a.Name] = a
		}
	}

	type group struct {
		src    Source
		inputs []recipes.Input
		prev   []recipes.LockedArtifact
		out    []recipes.LockedArtifact
		err    error
	}
	groups := map[string]*group{}
	var types []string
	for _, in := range inputs {
		t := in.Source.Type
		g, ok := groups[t]
		if !ok {
			src, ok := sources[t]
			if !ok || src == nil {
				return nil, fmt.Errorf("%s: source type %q has no implementation here (have: %s)", in.Name, t, strings.Join(sortedSourceTypes(sources), ", "))
			}
			g = &group{src: src}
			groups[t] = g
			types = append(types, t)
		}
		g.inputs = append(g.inputs, in)
		if p, ok := prevByName[in.Name]; ok && p.Source == t {
			g.prev = append(g.prev, p)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, t := range types {
		g := groups[t]
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.out, g.err = g.src.Resolve(ctx, g.inputs, g.prev, update)
			if g.err != nil {
				cancel() // no point finishing the others
			}
		}()
	}
	wg.Wait()

	var errs []error
	var arts []recipes.LockedArtifact
	for _, t := range types {
		g := groups[t]
		if g.err != nil {
			errs = append(errs, fmt.Errorf("resolving %s inputs: %w", t, g.err))
			continue
		}
		if err := checkResolved(t, g.inputs, g.out); err != nil {
			errs = append(errs, err)
			continue
		}
		arts = append(arts, g.out...)
	}
	if len(errs) > 0 {
		return nil, pickErrors(errs)
	}
	sort.Slice(arts, func(i, j int) bool { return arts[i].Name < arts[j].Name })

	l := &recipes.Lock{
		APIVersion:   recipes.APIVersion,
		Kind:         recipes.KindLock,
		Recipe:       r.Name,
		InputsDigest: r.InputsDigest(),
		Artifacts:    arts,
	}
	// prev without the images built from the rest (an archive image is an input of its own).
	var prevBase []recipes.LockedArtifact
	if prev != nil {
		prevBase = slices.DeleteFunc(slices.Clone(prev.Artifacts), func(a recipes.LockedArtifact) bool { return a.Source == SourceOCI })
	}
	var err error
	if l.Packages, err = lockPackages(ctx, r, arts, prev, update, sources); err != nil {
		return nil, err
	}
	unchanged := prev != nil && prev.SourceDateEpoch != 0 && sameArtifacts(prevBase, arts) && slices.Equal(prev.Packages, l.Packages)
	if unchanged {
		l.SourceDateEpoch = prev.SourceDateEpoch
	} else {
		epoch, err := newSourceDateEpoch()
		if err != nil {
			return nil, err
		}
		l.SourceDateEpoch = epoch
	}
	images, err := lockedImages(ctx, r, prev, unchanged, arts, l.SourceDateEpoch, sources)
	if err != nil {
		return nil, err
	}
	l.Artifacts = append(l.Artifacts, images...)
	sort.Slice(l.Artifacts, func(i, j int) bool { return l.Artifacts[i].Name < l.Artifacts[j].Name })
	return l, nil
}

// pickErrors drops the cancellations that the first real error caused in the other groups.
func pickErrors(errs []error) error {
	var real []error
	for _, e := range errs {
		if !errors.Is(e, context.Canceled) {
			real = append(real, e)
		}
	}
	if len(real) == 0 {
		real = errs
	}
	return errors.Join(real...)
}

func newSourceDateEpoch() (int64, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a positive number of seconds; unset it or fix it", s)
		}
		return v, nil
	}
	return timeNow().UTC().Truncate(24 * time.Hour).Unix(), nil
}

// checkResolved makes sure a source answered every input exactly once with a usable pin.
func checkResolved(typ string, inputs []recipes.Input, out []recipes.LockedArtifact) error {
	want := map[string]bool{}
	for _, in := range inputs {
		want[in.Name] = true
	}
	seen := map[string]bool{}
	for _, a := range out {
		switch {
		case !want[a.Name]:
			return fmt.Errorf("%s source returned %q, which the recipe does not ask for (a bug in the source)", typ, a.Name)
		case seen[a.Name]:
			return fmt.Errorf("%s source returned %q twice (a bug in the source)", typ, a.Name)
		case !ValidSHA256(a.SHA256) || a.Version == "":
			return fmt.Errorf("%s source pinned %q without a version or sha256 (a bug in the source)", typ, a.Name)
		}
		seen[a.Name] = true
	}
	for _, in := range inputs {
		if !seen[in.Name] {
			return fmt.Errorf("%s source did not pin %q (a bug in the source)", typ, in.Name)
		}
	}
	return nil
}

func sameArtifacts(a, b []recipes.LockedArtifact) bool {
	if len(a) != len(b) {
		return false
	}
	a = slices.Clone(a)
	sort.Slice(a, func(i, j int) bool { return a[i].Name < a[j].Name })
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sortedSourceTypes(m map[string]Source) []string {
	out := make([]string, 0, len(m))
	for t := range m {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Change is one difference between two locks.
type Change struct {
	Name string `json:"name"`
	What string `json:"what"` // added, removed, updated, rebuilt (same version, other sha256)
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// Change kinds.
const (
	ChangeAdded   = "added"
	ChangeRemoved = "removed"
	ChangeUpdated = "updated"
	ChangeRebuilt = "rebuilt"
)

// String is one line: "kubelet v1.35.3 -> v1.35.4".
func (c Change) String() string {
	switch c.What {
	case ChangeAdded:
		return c.Name + " " + c.To + " (new)"
	case ChangeRemoved:
		return c.Name + " " + c.From + " (removed)"
	case ChangeRebuilt:
		return c.Name + " " + c.To + " (sha256 " + c.From + ")"
	}
	return c.Name + " " + c.From + " -> " + c.To
}

// Diff lists what moved from prev (nil: nothing locked yet) to next, sorted by name.
func Diff(prev, next *recipes.Lock) []Change {
	old := map[string]recipes.LockedArtifact{}
	for _, a := range diffEntries(prev) {
		old[a.Name] = a
	}
	var out []Change
	for _, a := range diffEntries(next) {
		p, ok := old[a.Name]
		delete(old, a.Name)
		switch {
		case !ok:
			out = append(out, Change{Name: a.Name, What: ChangeAdded, To: a.Version})
		case p.Version != a.Version:
			out = append(out, Change{Name: a.Name, What: ChangeUpdated, From: p.Version, To: a.Version})
		case p.SHA256 != a.SHA256:
			out = append(out, Change{Name: a.Name, What: ChangeRebuilt, From: short(p.SHA256) + " -> " + short(a.SHA256), To: a.Version})
		}
	}
	for name, p := range old {
		out = append(out, Change{Name: name, What: ChangeRemoved, From: p.Version})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// diffEntries are a lock's artifacts and its package set ("package/<name>"), for Diff.
func diffEntries(l *recipes.Lock) []recipes.LockedArtifact {
	if l == nil {
		return nil
	}
	out := slices.Clone(l.Artifacts)
	for _, p := range l.Packages {
		out = append(out, p.Artifact())
	}
	return out
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Fetch makes every artifact of the lock present and verified in the cache and returns the
// cache path of each, by artifact name. Sources fetch concurrently.
func Fetch(ctx context.Context, l *recipes.Lock, sources map[string]Source) (map[string]string, error) {
	byType := map[string][]recipes.LockedArtifact{}
	var types []string
	var images []recipes.LockedArtifact // built from the others, after them
	for _, a := range l.Artifacts {
		if a.Source == SourceOCI {
			images = append(images, a)
			continue
		}
		if _, ok := byType[a.Source]; !ok {
			if s, ok := sources[a.Source]; !ok || s == nil {
				return nil, fmt.Errorf("%s: source type %q has no implementation here (have: %s)", a.Name, a.Source, strings.Join(sortedSourceTypes(sources), ", "))
			}
			types = append(types, a.Source)
		}
		byType[a.Source] = append(byType[a.Source], a)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]map[string]string, len(types))
	errs := make([]error, len(types))
	var wg sync.WaitGroup
	for i, t := range types {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = sources[t].Fetch(ctx, byType[t])
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	var failed []error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Errorf("fetching %s artifacts: %w", types[i], err))
		}
	}
	if len(failed) > 0 {
		return nil, pickErrors(failed)
	}
	out := make(map[string]string, len(l.Artifacts))
	for _, r := range results {
		for k, v := range r {
			out[k] = v
		}
	}
	if len(images) > 0 {
		src, _ := sources[SourceOCI].(*ImageSource)
		if src == nil {
			return nil, fmt.Errorf("%s: the lock bakes container images, but no image source is configured here (a kubebake bug)", images[0].Name)
		}
		paths, err := fetchImages(ctx, src, l, images, sources)
		if err != nil {
			return nil, err
		}
		for k, v := range paths {
			out[k] = v
		}
	}
	for _, a := range l.Artifacts {
		if out[a.Name] == "" {
			return nil, fmt.Errorf("%s source returned no path for %q (a bug in the source)", a.Source, a.Name)
		}
	}
	return out, nil
}

// DefaultSources wires the url, deb, gomod, self, archive and image sources to one cache.
// mirror is the Debian archive for deb inputs without their own (SystemDebianMirror() for the
// machine's).
func DefaultSources(cache *Cache, mirror string, opts ...SourceOption) map[string]Source {
	var o sourceOptions
	for _, opt := range opts {
		opt(&o)
	}
	return map[string]Source{
		recipes.SourceURL:     NewURLSource(cache, o.rewrites),
		recipes.SourceDeb:     NewDebSource(cache, mirror, o.components, o.rewrites),
		recipes.SourceGoMod:   NewGoModSource(cache),
		recipes.SourceSelf:    NewSelfSource(cache),
		recipes.SourceArchive: NewArchiveSource(cache, o.recipeDir),
		SourceOCI:             NewImageSource(cache),
	}
}

// SourceOption configures DefaultSources.
type SourceOption func(*sourceOptions)

type sourceOptions struct {
	rewrites   []recipes.URLRewrite
	components []string
	recipeDir  string
}

// WithRecipeDir sets the folder a recipe's image archives are read from (recipes.RecipeDir).
func WithRecipeDir(dir string) SourceOption {
	return func(o *sourceOptions) { o.recipeDir = dir }
}

// WithRewrites applies mirror rules (the recipe's mirrors:) to url and deb downloads.
func WithRewrites(r []recipes.URLRewrite) SourceOption {
	return func(o *sourceOptions) { o.rewrites = r }
}

// WithComponents sets the Debian components searched (the recipe's base.components).
func WithComponents(c []string) SourceOption {
	return func(o *sourceOptions) { o.components = c }
}

// RecipeSources is DefaultSources configured from a recipe: its Debian mirror (base.mirror,
// else this machine's apt mirror), components, mirror rules and folder (its image archives).
// It fails only when the recipe has deb inputs and no mirror can be found.
func RecipeSources(cache *Cache, r *recipes.Recipe) (map[string]Source, error) {
	mirror := r.Base.Mirror
	if mirror == "" && needsDeb(r) {
		m, err := SystemDebianMirror()
		if err != nil {
			return nil, fmt.Errorf("recipe %s: %w", r.Name, err)
		}
		mirror = m
	}
	srcs := DefaultSources(cache, mirror, WithRewrites(r.Mirrors), WithComponents(r.Base.Components), WithRecipeDir(recipes.RecipeDir(r)))
	if slices.ContainsFunc(r.Base.Suites, IsSecuritySuite) {
		security := strings.TrimRight(r.Base.SecurityMirror, "/")
		if security == "" {
			m, err := SystemSecurityMirror()
			if err != nil {
				return nil, fmt.Errorf("recipe %s: base.suites names a security suite: %w", r.Name, err)
			}
			security = m
		}
		if debs, ok := srcs[recipes.SourceDeb].(*DebSource); ok {
			debs.SecurityMirror = security
		}
	}
	return srcs, nil
}

func needsDeb(r *recipes.Recipe) bool {
	for _, in := range r.Inputs() {
		if in.Source.Type == recipes.SourceDeb {
			return true
		}
	}
	return false
}
