package recipes

import (
	"cmp"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Version constraints in recipes (kubernetes.version, components[].version, etcd.version,
// cni.version) take exactly two forms, so that the lock is the only place a version moves:
//
//   - exact: "v1.35.4" or "1.35.4" (normalised to "v1.35.4"); a pre-release such as
//     "v1.36.0-rc.1" is exact too. The lock pins it as is.
//   - minor track: "1.35" or "v1.35" (normalised to "1.35"). The lock resolves it to the newest
//     released (non pre-release) patch of that minor, and `lock --update` moves along it.
//
// Everything else is refused: "latest", "stable", "", a major alone ("1"), wildcards ("*",
// "1.x"), ranges (">=1.35"). The artifacts lock resolver uses ParseConstraint, Matches and
// Newest so that lint and lock agree on what a version means.

// Constraint is a parsed version constraint.
type Constraint struct {
	Major, Minor, Patch int
	Pre                 string // pre-release of an exact version ("rc.1"), without the dash
	Exact               bool   // false: a minor track, Patch and Pre unused
}

var (
	exactRE = regexp.MustCompile(`^v?(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})(?:-([0-9A-Za-z.-]+))?$`)
	trackRE = regexp.MustCompile(`^v?(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$`)
	// Refused forms, matched only to explain the refusal.
	wildcardRE = regexp.MustCompile(`^(v?[0-9]+(\.[0-9]+)*(\.[x*])+|[x*])$`)
	majorRE    = regexp.MustCompile(`^v?[0-9]+$`)
)

// ParseConstraint parses an exact version or a minor track. The error says why anything else
// is refused (without the field name: callers add it).
func ParseConstraint(s string) (Constraint, error) {
	if m := exactRE.FindStringSubmatch(s); m != nil {
		c := Constraint{Exact: true, Pre: m[4]}
		c.Major, _ = strconv.Atoi(m[1])
		c.Minor, _ = strconv.Atoi(m[2])
		c.Patch, _ = strconv.Atoi(m[3])
		if c.Pre != "" && (strings.HasPrefix(c.Pre, ".") || strings.HasSuffix(c.Pre, ".") || strings.Contains(c.Pre, "..")) {
			return Constraint{}, fmt.Errorf("%q has a malformed pre-release", s)
		}
		return c, nil
	}
	if m := trackRE.FindStringSubmatch(s); m != nil {
		c := Constraint{}
		c.Major, _ = strconv.Atoi(m[1])
		c.Minor, _ = strconv.Atoi(m[2])
		return c, nil
	}
	t := strings.ToLower(strings.TrimSpace(s))
	switch {
	case t == "":
		return Constraint{}, fmt.Errorf("is empty")
	case t == "latest" || t == "stable" || strings.HasPrefix(t, "latest-") || strings.HasPrefix(t, "stable-"):
		return Constraint{}, fmt.Errorf("%q floats: it names a different release as time goes by", s)
	case wildcardRE.MatchString(t):
		return Constraint{}, fmt.Errorf("%q is a wildcard: it floats across releases", s)
	case majorRE.MatchString(t):
		return Constraint{}, fmt.Errorf("%q names a major version only: it floats across minors", s)
	case strings.ContainsAny(t, "<>=~^ ,|"):
		return Constraint{}, fmt.Errorf("%q is a range: ranges are not supported", s)
	}
	return Constraint{}, fmt.Errorf("%q is not a version", s)
}

// String is the normalised form: "v1.35.4", "v1.36.0-rc.1" or "1.35".
func (c Constraint) String() string {
	if !c.Exact {
		return fmt.Sprintf("%d.%d", c.Major, c.Minor)
	}
	s := fmt.Sprintf("v%d.%d.%d", c.Major, c.Minor, c.Patch)
	if c.Pre != "" {
		s += "-" + c.Pre
	}
	return s
}

// ExactVersion normalises an exact version ("1.35.4" -> "v1.35.4"); ok is false for anything
// else, including minor tracks.
func ExactVersion(s string) (v string, ok bool) {
	c, err := ParseConstraint(s)
	if err != nil || !c.Exact {
		return "", false
	}
	return c.String(), true
}

// MinorTrack normalises a minor track ("v1.35" -> "1.35"); ok is false for anything else,
// including exact versions.
func MinorTrack(s string) (track string, ok bool) {
	c, err := ParseConstraint(s)
	if err != nil || c.Exact {
		return "", false
	}
	return c.String(), true
}

// NormalizeVersion returns the normalised constraint, or the reason it is refused.
func NormalizeVersion(s string) (string, error) {
	c, err := ParseConstraint(s)
	if err != nil {
		return "", err
	}
	return c.String(), nil
}

// Matches reports whether the exact version satisfies the constraint: equal to an exact
// constraint, or a released patch of a minor track. A malformed argument never matches.
func Matches(constraint, version string) bool {
	c, err := ParseConstraint(constraint)
	if err != nil {
		return false
	}
	v, err := ParseConstraint(version)
	if err != nil || !v.Exact {
		return false
	}
	if c.Exact {
		return c == v
	}
	return v.Pre == "" && v.Major == c.Major && v.Minor == c.Minor
}

// CompareVersions orders exact versions by semantic-version precedence (-1, 0, +1); a
// version that does not parse sorts before every one that does.
func CompareVersions(a, b string) int {
	va, ea := ParseConstraint(a)
	vb, eb := ParseConstraint(b)
	okA, okB := ea == nil && va.Exact, eb == nil && vb.Exact
	switch {
	case !okA && !okB:
		return strings.Compare(a, b)
	case !okA:
		return -1
	case !okB:
		return 1
	}
	for _, d := range []int{va.Major - vb.Major, va.Minor - vb.Minor, va.Patch - vb.Patch} {
		if d != 0 {
			return cmp.Compare(d, 0)
		}
	}
	return comparePre(va.Pre, vb.Pre)
}

// comparePre applies semver's rule: no pre-release ranks above any; fields compare
// numerically when both are numbers, else as strings; more fields rank higher.
func comparePre(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	fa, fb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, errA := strconv.Atoi(fa[i])
		nb, errB := strconv.Atoi(fb[i])
		switch {
		case errA == nil && errB == nil:
			if na != nb {
				return cmp.Compare(na, nb)
			}
		case errA == nil:
			return -1
		case errB == nil:
			return 1
		default:
			if c := strings.Compare(fa[i], fb[i]); c != 0 {
				return c
			}
		}
	}
	return cmp.Compare(len(fa), len(fb))
}

// Newest picks the newest candidate that matches the constraint (as returned by the module
// proxy's version list, say); ok is false when none does. The result keeps the candidate's
// spelling.
func Newest(constraint string, candidates []string) (version string, ok bool) {
	for _, v := range candidates {
		if Matches(constraint, v) && (!ok || CompareVersions(v, version) > 0) {
			version, ok = v, true
		}
	}
	return version, ok
}
