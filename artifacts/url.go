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
// (a bare hex digest or "<hex>  <file>"), the size from a HEAD request. A file published
// without a .sha256 (404) is pinned by the sha256 and size of its first download.
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
		// cri-dockerd publishes no stable-<minor>.txt: a track cannot be resolved, only named.
		if in.Name == recipes.CRIServerDockerd && !isExact(in.Version) {
			return nil, fmt.Errorf("%s: version %q is not an exact release: upstream publishes no stable-<minor>.txt to resolve a track from; set runtime.criDockerd.version to one, e.g. 0.3.16", in.Name, in.Version)
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
	return p.URL == ExpandURL(in.Source.URL, p.Version, in.Package, in.Arch) &&
		p.Member == expandMember(in, p.Version)
}

// expandMember is the input's source.member for a version, "" when it has none.
func expandMember(in recipes.Input, version string) string {
	if in.Source.Member == "" {
		return ""
	}
	return ExpandURL(in.Source.Member, version, in.Package, in.Arch)
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
	kind := in.Kind
	if kind == "" {
		kind = recipes.InputBinary
	}
	art := recipes.LockedArtifact{Name: in.Name, Kind: kind, Source: recipes.SourceURL, Version: version, URL: u, Member: expandMember(in, version)}
	if art.Member != "" {
		if err := checkMemberPath(art.Member); err != nil {
			return recipes.LockedArtifact{}, fmt.Errorf("%s: source.member %q (%s) %w", in.Name, in.Source.Member, art.Member, err)
		}
	}
	body, err := s.GetSmall(ctx, u+".sha256", 4096)
	var he *HTTPError
	switch {
	case errors.As(err, &he) && (he.StatusCode == http.StatusNotFound || he.StatusCode == http.StatusGone):
		return s.pinFirstDownload(ctx, art)
	case err != nil:
		return recipes.LockedArtifact{}, fmt.Errorf("%s %s: reading its checksum: %w", in.Name, version, err)
	}
	fields := strings.Fields(string(body))
	if len(fields) == 0 || !ValidSHA256(strings.ToLower(fields[0])) {
		return recipes.LockedArtifact{}, fmt.Errorf("%s %s: %s.sha256 does not start with a sha256 digest (%q)", in.Name, version, s.shown(u), truncate(string(body), 80))
	}
	// The size is a courtesy (it lets a fetch tell a truncated body from a changed file): a
	// server that refuses HEAD leaves it 0; a missing file is an error.
	size, err := s.Head(ctx, u)
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
	art.SHA256, art.Size = strings.ToLower(fields[0]), size
	return art, nil
}

// pinFirstDownload pins a file published without a checksum (no <url>.sha256, as with
// cri-dockerd's releases) by the sha256 and size of what the first download holds: trust on
// first use, said in the log. The download stays in the cache, so the fetch that follows
// reads nothing; a member is taken out now, so a wrong one fails the lock, not a later fetch.
func (s *URLSource) pinFirstDownload(ctx context.Context, art recipes.LockedArtifact) (recipes.LockedArtifact, error) {
	sum, size, p, err := s.FetchNew(ctx, s.Cache, art.URL)
	if err != nil {
		return recipes.LockedArtifact{}, fmt.Errorf("%s %s: no %s.sha256 is published, so the lock pins the file as first downloaded: %w", art.Name, art.Version, s.shown(art.URL), err)
	}
	slog.Warn("no checksum published: the lock pins the sha256 of this first download (trust on first use); compare it with upstream's if you can",
		"artifact", art.Name, "version", art.Version, "url", s.shown(art.URL), "sha256", sum, "bytes", size)
	art.SHA256, art.Size = sum, size
	if art.Member != "" {
		if _, err := s.extractMember(art, p); err != nil {
			return recipes.LockedArtifact{}, err
		}
	}
	return art, nil
}

// Fetch downloads every artifact not yet in the cache, checked against the lock's sha256 and
// size; for an artifact with a member (source.member) it returns the member taken out of the
// tarball (url_member.go).
func (s *URLSource) Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error) {
	out := make(map[string]string, len(arts))
	for _, a := range arts {
		if a.URL == "" {
			return nil, fmt.Errorf("%s: the lock has no url; run \"kubebake lock\"", a.Name)
		}
		if a.Member != "" {
			if p, ok := s.extractedMember(a); ok {
				out[a.Name] = p
				continue
			}
		}
		p, err := s.Downloader.Fetch(ctx, s.Cache, a.URL, a.SHA256, a.Size)
		if err != nil {
			// The messages below name the URL asked (a mirror's, maybe): say what the lock pins.
			pinned := "sha256 " + a.SHA256
			if s.Rewrite(a.URL) != a.URL {
				pinned = a.URL + " at " + pinned
			}
			return nil, fmt.Errorf("%s %s (the lock pins %s): %w", a.Name, a.Version, pinned, err)
		}
		if a.Member != "" {
			if p, err = s.extractMember(a, p); err != nil {
				return nil, err
			}
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
