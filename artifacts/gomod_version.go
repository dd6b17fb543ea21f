package artifacts

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Version selection for gomod inputs. A recipe names either an exact version ("v1.35.4",
// "3.6.16") or a minor track ("1.35", "v3.6"): the newest non-prerelease patch with that
// major.minor. These helpers are private on purpose: recipes/ may grow exported version helpers
// (ExactVersion, MinorTrack, Matches); until it does, gomod keeps its own small ones here.

// modVersion is a parsed module version vMAJOR.MINOR.PATCH[-pre][+build].
type modVersion struct {
	major, minor, patch int
	pre                 string // prerelease without the dash, "" for a release
}

// parseModVersion parses a canonical module version; the leading "v" is required and
// build metadata (+incompatible) is ignored.
func parseModVersion(v string) (modVersion, bool) {
	if !strings.HasPrefix(v, "v") {
		return modVersion{}, false
	}
	s := v[1:]
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	var mv modVersion
	if i := strings.IndexByte(s, '-'); i >= 0 {
		mv.pre, s = s[i+1:], s[:i]
		if mv.pre == "" {
			return modVersion{}, false
		}
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return modVersion{}, false
	}
	nums := make([]int, 3)
	for i, p := range parts {
		n, ok := parseNum(p)
		if !ok {
			return modVersion{}, false
		}
		nums[i] = n
	}
	mv.major, mv.minor, mv.patch = nums[0], nums[1], nums[2]
	return mv, true
}

// parseNum parses a semver numeric identifier (digits, no leading zero unless "0").
func parseNum(s string) (int, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// less orders releases by major, minor, patch; a prerelease sorts before its release.
func (a modVersion) less(b modVersion) bool {
	if a.major != b.major {
		return a.major < b.major
	}
	if a.minor != b.minor {
		return a.minor < b.minor
	}
	if a.patch != b.patch {
		return a.patch < b.patch
	}
	if (a.pre == "") != (b.pre == "") {
		return a.pre != ""
	}
	return a.pre < b.pre
}

// versionConstraint is what a recipe asks for: one exact version or a major.minor track.
type versionConstraint struct {
	raw   string
	exact string // canonical exact version ("v1.35.4"), empty for a track
	major int
	minor int
}

// parseVersionConstraint accepts "v1.35.4" / "1.35.4" (exact, prereleases allowed when named
// exactly) and "1.35" / "v1.35" (a minor track). Anything else ("latest", "1", "") is refused:
// the lock must never float.
func parseVersionConstraint(s string) (versionConstraint, error) {
	c := versionConstraint{raw: s}
	v := strings.TrimSpace(s)
	if v == "" {
		return c, fmt.Errorf("version is empty; write an exact version (v1.35.4) or a minor track (1.35)")
	}
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	if mv, ok := parseModVersion(v); ok {
		c.exact, c.major, c.minor = v, mv.major, mv.minor
		return c, nil
	}
	parts := strings.Split(v[1:], ".")
	if len(parts) == 2 {
		maj, ok1 := parseNum(parts[0])
		min, ok2 := parseNum(parts[1])
		if ok1 && ok2 {
			c.major, c.minor = maj, min
			return c, nil
		}
	}
	return c, fmt.Errorf("version %q is neither exact (v1.35.4) nor a minor track (1.35)", s)
}

// isTrack reports whether the constraint is a minor track.
func (c versionConstraint) isTrack() bool { return c.exact == "" }

// matches reports whether the concrete module version v satisfies the constraint. A track
// never matches a prerelease.
func (c versionConstraint) matches(v string) bool {
	if c.exact != "" {
		return trimBuild(v) == trimBuild(c.exact)
	}
	mv, ok := parseModVersion(v)
	return ok && mv.pre == "" && mv.major == c.major && mv.minor == c.minor
}

func trimBuild(v string) string {
	if i := strings.IndexByte(v, '+'); i >= 0 {
		return v[:i]
	}
	return v
}

// newestMatching picks the newest version in versions that satisfies c.
func newestMatching(c versionConstraint, versions []string) (string, bool) {
	best, bestV, found := "", modVersion{}, false
	for _, v := range versions {
		if !c.matches(v) {
			continue
		}
		mv, _ := parseModVersion(v)
		if !found || bestV.less(mv) {
			best, bestV, found = v, mv, true
		}
	}
	return best, found
}

// modulePathMajor returns the major version a module path's suffix fixes (/v3 -> 3,
// gopkg.in/yaml.v3 -> 3) and whether the path has such a suffix.
func modulePathMajor(path string) (int, bool) {
	if strings.HasPrefix(path, "gopkg.in/") {
		if i := strings.LastIndex(path, ".v"); i >= 0 {
			if n, ok := parseNum(path[i+2:]); ok {
				return n, true
			}
		}
		return 0, false
	}
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return 0, false
	}
	elem := path[i+1:]
	if len(elem) >= 2 && elem[0] == 'v' {
		if n, ok := parseNum(elem[1:]); ok && n >= 2 {
			return n, true
		}
	}
	return 0, false
}

// checkMajor refuses a constraint whose major version the module path cannot carry, with a
// hint about Go's major-version suffix rule (go.etcd.io/etcd/server/v3 only has v3.x.y).
func checkMajor(module string, c versionConstraint) error {
	pm, suffixed := modulePathMajor(module)
	switch {
	case suffixed && c.major != pm:
		return fmt.Errorf("version %q cannot come from %s: a module path ending in major version suffix v%d only has v%d.x.y versions; change the version or the module path", c.raw, module, pm, pm)
	case !suffixed && c.major >= 2:
		// Allowed only as +incompatible versions; the version list decides.
		return nil
	}
	return nil
}

// sortVersions sorts module versions ascending (unparsable ones first, by string).
func sortVersions(vs []string) {
	sort.SliceStable(vs, func(i, j int) bool {
		a, oka := parseModVersion(vs[i])
		b, okb := parseModVersion(vs[j])
		if oka != okb {
			return !oka
		}
		if !oka {
			return vs[i] < vs[j]
		}
		return a.less(b)
	})
}
