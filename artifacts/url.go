package artifacts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/kubebake/kubebake/recipes"
)

// URLSource serves inputs of source type "url": files downloaded from a URL template and
// checked against the sha256 published next to them.
//
// The template may use {version}, {name} (the input's Package, e.g. "kubelet") and {arch}
// (default amd64), e.g. https://dl.k8s.io/release/{version}/bin/linux/{arch}/{name}.
//
// Resolving: an exact version is used as it is. A minor track ("1.35") is resolved the way
// upstream publishes it: the folder that holds the versions ("https://dl.k8s.io/release/",
// the template up to {version}) has a stable-<minor>.txt naming the newest patch
// (https://dl.k8s.io/release/stable-1.35.txt -> v1.35.4). The sha256 is read from <url>.sha256
// (a bare hex digest or "<hex>  <file>"), the size from a HEAD request.
type URLSource struct {
	Cache *Cache
	Downloader
}

// NewURLSource returns a url source that downloads into cache through the given mirror rules.
func NewURLSource(cache *Cache, rewrites []recipes.URLRewrite) *URLSource {
	return &URLSource{Cache: cache, Downloader: Downloader{Rewrites: rewrites}}
}

// Type is "url".
func (s *URLSource) Type() string { return recipes.SourceURL }

// ExpandURL fills a URL template (recipes.ExpandURL, with arch defaulting to amd64).
func ExpandURL(tmpl, version, name, arch string) string {
	if arch == "" {
		arch = "amd64"
	}
	return recipes.ExpandURL(tmpl, version, name, arch)
}

func isExact(v string) bool {
	_, ok := recipes.ExactVersion(v)
	return ok
}

// Resolve pins each input to a version, URL, sha256 and size.
func (s *URLSource) Resolve(ctx context.Context, inputs []recipes.Input, prev []recipes.LockedArtifact, update bool) ([]recipes.LockedArtifact, error) {
	prevByName := map[string]recipes.LockedArtifact{}
	for _, p := range prev {
		prevByName[p.Name] = p
	}
	// Several inputs usually share one track (every Kubernetes binary): ask once.
	tracks := map[string]string{}
	out := make([]recipes.LockedArtifact, 0, len(inputs))
	for _, in := range inputs {
		if in.Source.URL == "" {
			return nil, fmt.Errorf("%s: source type url needs a url template (e.g. https://dl.k8s.io/release/{version}/bin/linux/{arch}/{name})", in.Name)
		}
		if !strings.Contains(in.Source.URL, "{version}") && !isExact(in.Version) {
			return nil, fmt.Errorf("%s: url %q has no {version}, so version %q cannot be resolved; pin an exact version", in.Name, in.Source.URL, in.Version)
		}
		if p, ok := prevByName[in.Name]; ok && !update && s.stillMatches(in, p) {
			out = append(out, p)
			continue
		}
		version := in.Version
		if !isExact(version) {
			key := in.Source.URL + "\x00" + version
			v, ok := tracks[key]
			if !ok {
				var err error
				v, err = s.resolveTrack(ctx, in)
				if err != nil {
					return nil, err
				}
				tracks[key] = v
			}
			version = v
		}
		art, err := s.pin(ctx, in, version)
		if err != nil {
			return nil, err
		}
		out = append(out, art)
	}
	return out, nil
}

// stillMatches reports whether a locked entry still satisfies its input.
func (s *URLSource) stillMatches(in recipes.Input, p recipes.LockedArtifact) bool {
	if p.Source != recipes.SourceURL || !ValidSHA256(p.SHA256) || !recipes.Matches(in.Version, p.Version) {
		return false
	}
	return p.URL == ExpandURL(in.Source.URL, p.Version, in.Package, in.Arch)
}

// StableURL is where upstream names the newest patch of a minor track.
func StableURL(tmpl, minor string) (string, error) {
	i := strings.Index(tmpl, "{version}")
	if i < 0 {
		return "", fmt.Errorf("url template %q has no {version}", tmpl)
	}
	base := tmpl[:i]
	if !strings.HasSuffix(base, "/") {
		return "", fmt.Errorf("url template %q: {version} must be a whole path segment to resolve a minor track; pin an exact version instead", tmpl)
	}
	return base + "stable-" + strings.TrimPrefix(minor, "v") + ".txt", nil
}

func (s *URLSource) resolveTrack(ctx context.Context, in recipes.Input) (string, error) {
	minor, ok := recipes.MinorTrack(in.Version)
	if !ok {
		return "", fmt.Errorf("%s: version %q is neither exact (v1.35.4) nor a minor track (1.35)", in.Name, in.Version)
	}
	u, err := StableURL(in.Source.URL, minor)
	if err != nil {
		return "", fmt.Errorf("%s: %w", in.Name, err)
	}
	body, err := s.GetSmall(ctx, u, 4096)
	if err != nil {
		return "", fmt.Errorf("%s: resolving track %s: %w", in.Name, in.Version, err)
	}
	v := strings.TrimSpace(string(body))
	if !recipes.Matches(in.Version, v) {
		return "", fmt.Errorf("%s: %s names %q, which is not an exact version on track %s", in.Name, s.shown(u), v, in.Version)
	}
	return v, nil
}

func (s *URLSource) pin(ctx context.Context, in recipes.Input, version string) (recipes.LockedArtifact, error) {
	u := ExpandURL(in.Source.URL, version, in.Package, in.Arch)
	body, err := s.GetSmall(ctx, u+".sha256", 4096)
	if err != nil {
		return recipes.LockedArtifact{}, fmt.Errorf("%s %s: reading its checksum: %w", in.Name, version, err)
	}
	fields := strings.Fields(string(body))
	if len(fields) == 0 || !ValidSHA256(strings.ToLower(fields[0])) {
		return recipes.LockedArtifact{}, fmt.Errorf("%s %s: %s.sha256 does not start with a sha256 digest (%q)", in.Name, version, s.shown(u), truncate(string(body), 80))
	}
	// The size is a courtesy (it lets a fetch tell a truncated body from a changed file): a
	// server that refuses HEAD leaves it 0; a missing file is an error.
	size, err := s.Head(ctx, u)
	var he *HTTPError
	switch {
	case errors.As(err, &he) && (he.StatusCode == http.StatusNotFound || he.StatusCode == http.StatusGone):
		return recipes.LockedArtifact{}, fmt.Errorf("%s %s: %w", in.Name, version, err)
	case err != nil && ctx.Err() != nil:
		return recipes.LockedArtifact{}, ctx.Err()
	case err != nil:
		slog.Debug("no size for the lock: HEAD failed", "url", s.shown(u), "err", err)
		size = 0
	case size < 0:
		size = 0
	}
	kind := in.Kind
	if kind == "" {
		kind = recipes.InputBinary
	}
	return recipes.LockedArtifact{
		Name:    in.Name,
		Kind:    kind,
		Source:  recipes.SourceURL,
		Version: version,
		URL:     u,
		SHA256:  strings.ToLower(fields[0]),
		Size:    size,
	}, nil
}

// Fetch downloads every artifact not yet in the cache.
func (s *URLSource) Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error) {
	out := make(map[string]string, len(arts))
	for _, a := range arts {
		if a.URL == "" {
			return nil, fmt.Errorf("%s: the lock has no url; run \"kubebake lock\"", a.Name)
		}
		p, err := s.Downloader.Fetch(ctx, s.Cache, a.URL, a.SHA256, a.Size)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", a.Name, a.Version, err)
		}
		out[a.Name] = p
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
