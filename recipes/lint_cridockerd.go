package recipes

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// criDockerd checks runtime.criDockerd: where cri-dockerd, the CRI server in front of
// docker, comes from. Upstream's release tarball is its one source, pinned by the sha256 of
// its first download (no checksum is published): so an exact version and an https URL.
func (l *linter) criDockerd() {
	const p = "runtime.criDockerd"
	const example = "https://github.com/Mirantis/cri-dockerd/releases/download/v{version}/cri-dockerd-{version}.{arch}.tgz"
	rt := l.r.Runtime
	cd := rt.CRIDockerd
	if cd == nil {
		// docker without it is a path of its own, not a pitfall: lint's runtime line says
		// which path a recipe takes (ExplainRuntime).
		return
	}
	if rt.Name != RuntimeDocker {
		l.atKey(p, fmt.Sprintf("is only for runtime.name docker, not %q: remove runtime.criDockerd, or set runtime.name to docker", rt.Name),
			"cri-dockerd serves CRI in front of docker; containerd serves CRI itself")
		return
	}
	if c, err := ParseConstraint(cd.Version); err != nil {
		l.at(p+".version", "version "+err.Error()+": write an exact release such as 0.3.16 or v0.3.16", whyUnpinned)
	} else if !c.Exact {
		l.at(p+".version", fmt.Sprintf("%q is a minor track: write an exact release such as 0.3.16 (upstream publishes no stable-<minor>.txt to resolve a track from)", cd.Version), whyUnpinned)
	}
	s := cd.Source
	if s.Type != SourceURL {
		l.at(p+".source.type", fmt.Sprintf("source type %q is refused: use url, with url %s and member cri-dockerd/{name}", s.Type, example),
			"cri-dockerd is neither in Debian nor on the Go module proxy: upstream's release tarball is its one source")
		return
	}
	l.source(p+".source", s, "")
	if u, err := url.Parse(s.URL); err == nil && u.Scheme == "http" {
		l.at(p+".source.url", "is http: use https (a mirror rule under mirrors: may still serve it over http)",
			"upstream publishes no checksum, so the lock pins what the first download holds: only TLS says it came from upstream")
	}
	lower := strings.ToLower(s.URL)
	switch m := s.Member; {
	case m == "" && (strings.HasSuffix(lower, ".tgz") || strings.HasSuffix(lower, ".tar.gz")):
		l.at(p+".source.member", "the url names a tarball: set member to the binary inside it, e.g. cri-dockerd/{name}",
			"without it the node gets the tarball where the binary belongs")
	case m != "" && (strings.HasPrefix(m, "/") || slices.Contains(strings.Split(m, "/"), "..")):
		l.at(p+".source.member", fmt.Sprintf("%q leaves the archive: name the file inside it, e.g. cri-dockerd/{name}", m),
			"a member is a path inside the tarball; kubebake refuses absolute paths and ..")
	}
}
