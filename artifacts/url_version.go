package artifacts

import (
	"regexp"
	"strings"
)

// Version helpers for url inputs (Kubernetes-style versions: v1.35.4 exact, 1.35 a track).
// TODO(recipes): switch to recipes.ExactVersion / MinorTrack / Matches once they land, so
// that lint and lock share one definition.

var (
	exactRE = regexp.MustCompile(`^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?$`)
	minorRE = regexp.MustCompile(`^v?(\d+\.\d+)(\.x)?$`)
)

// isExactVersion: v1.35.4, 1.35.4, v1.36.0-rc.1.
func isExactVersion(v string) bool { return exactRE.MatchString(v) }

// minorTrack returns "1.35" for "1.35", "v1.35" or "1.35.x".
func minorTrack(v string) (string, bool) {
	m := minorRE.FindStringSubmatch(v)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// versionMatches reports whether the exact version got satisfies constraint (an exact version
// or a minor track).
func versionMatches(constraint, got string) bool {
	if isExactVersion(constraint) {
		return strings.TrimPrefix(constraint, "v") == strings.TrimPrefix(got, "v")
	}
	minor, ok := minorTrack(constraint)
	if !ok || !isExactVersion(got) {
		return false
	}
	return strings.HasPrefix(strings.TrimPrefix(got, "v"), minor+".")
}
