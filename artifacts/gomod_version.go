package artifacts

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/kubebake/kubebake/recipes"
)

// Version selection for gomod inputs. The meaning of a version constraint (exact "v1.35.4" or
// minor track "1.35") is recipes'; what is specific to Go modules lives here: the
// +incompatible build suffix, and major-version suffixes of module paths
// (go.etcd.io/etcd/server/v3 only has v3.x.y versions).

// trimBuild drops build metadata (+incompatible) from a module version.
func trimBuild(v string) string {
	if i := strings.IndexByte(v, '+'); i >= 0 {
		return v[:i]
	}
	return v
}

// goModMatches reports whether the module version v satisfies the constraint (a track never
// matches a prerelease).
func goModMatches(constraint, v string) bool {
	return recipes.Matches(constraint, trimBuild(v))
}

// newestMatching picks the newest version in versions that satisfies the constraint, keeping
// the module proxy's spelling (v2.1.0+incompatible).
func newestMatching(constraint string, versions []string) (string, bool) {
	best, found := "", false
	for _, v := range versions {
		if goModMatches(constraint, v) && (!found || recipes.CompareVersions(trimBuild(v), trimBuild(best)) > 0) {
			best, found = v, true
		}
	}
	return best, found
}

// sortVersions sorts module versions ascending (unparsable ones first).
func sortVersions(vs []string) {
	sort.SliceStable(vs, func(i, j int) bool {
		return recipes.CompareVersions(trimBuild(vs[i]), trimBuild(vs[j])) < 0
	})
}

// exactParts returns major, minor and patch of an exact module version.
func exactParts(v string) (major, minor, patch int, ok bool) {
	c, err := recipes.ParseConstraint(trimBuild(v))
	if err != nil || !c.Exact || !strings.HasPrefix(v, "v") {
		return 0, 0, 0, false
	}
	return c.Major, c.Minor, c.Patch, true
}

// modulePathMajor returns the major version a module path's suffix fixes (/v3 -> 3,
// gopkg.in/yaml.v3 -> 3) and whether the path has such a suffix.
func modulePathMajor(path string) (int, bool) {
	num := func(s string) (int, bool) {
		if s == "" || len(s) > 1 && s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.Atoi(s)
		return n, err == nil
	}
	if strings.HasPrefix(path, "gopkg.in/") {
		if i := strings.LastIndex(path, ".v"); i >= 0 {
			return num(path[i+2:])
		}
		return 0, false
	}
	i := strings.LastIndexByte(path, '/')
	if i < 0 || len(path) < i+3 || path[i+1] != 'v' {
		return 0, false
	}
	if n, ok := num(path[i+2:]); ok && n >= 2 {
		return n, true
	}
	return 0, false
}

// checkMajor refuses a constraint whose major version the module path cannot carry, with a
// hint about Go's major-version suffix rule. (Without a suffix, v2+ can only be
// +incompatible versions; the version list decides.)
func checkMajor(module string, c recipes.Constraint) error {
	if pm, suffixed := modulePathMajor(module); suffixed && c.Major != pm {
		return fmt.Errorf("version %q cannot come from %s: a module path ending in major version suffix v%d only has v%d.x.y versions; change the version or the module path", c.String(), module, pm, pm)
	}
	return nil
}
