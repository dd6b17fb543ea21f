package recipes

import (
	"strings"
	"testing"
)

func TestVersionForms(t *testing.T) {
	for _, c := range []struct {
		in, exact, track string
	}{
		{"v1.35.4", "v1.35.4", ""},
		{"1.35.4", "v1.35.4", ""},
		{"v1.36.0-rc.1", "v1.36.0-rc.1", ""},
		{"1.35", "", "1.35"},
		{"v1.35", "", "1.35"},
		{"3.6", "", "3.6"},
		{"latest", "", ""},
		{"1.35.x", "", ""},
		{"01.35", "", ""},
		{"1.35.4+build", "", ""},
	} {
		if got, ok := ExactVersion(c.in); got != c.exact || ok != (c.exact != "") {
			t.Errorf("ExactVersion(%q) = %q, %v; want %q", c.in, got, ok, c.exact)
		}
		if got, ok := MinorTrack(c.in); got != c.track || ok != (c.track != "") {
			t.Errorf("MinorTrack(%q) = %q, %v; want %q", c.in, got, ok, c.track)
		}
	}
}

func TestRefusedVersions(t *testing.T) {
	for in, why := range map[string]string{
		"":            "is empty",
		"latest":      "floats",
		"stable":      "floats",
		"stable-1.35": "floats",
		"1":           "major version only",
		"v1":          "major version only",
		"*":           "wildcard",
		"1.x":         "wildcard",
		"1.35.*":      "wildcard",
		">=1.35":      "range",
		"~1.35":       "range",
		"banana":      "not a version",
	} {
		_, err := ParseConstraint(in)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseConstraint(%q) = %v, want an error about %q", in, err, why)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		constraint, version string
		want                bool
	}{
		{"1.35", "v1.35.4", true},
		{"1.35", "1.35.0", true},
		{"v1.35", "v1.35.9", true},
		{"1.35", "v1.36.0", false},
		{"1.35", "v1.35.5-rc.0", false}, // tracks take releases only
		{"1.35", "1.35", false},         // a version to match must be exact
		{"v1.35.4", "1.35.4", true},
		{"v1.35.4", "v1.35.5", false},
		{"v1.36.0-rc.1", "v1.36.0-rc.1", true},
		{"latest", "v1.35.4", false},
		{"3.6", "v3.6.16", true},
	} {
		if got := Matches(c.constraint, c.version); got != c.want {
			t.Errorf("Matches(%q, %q) = %v", c.constraint, c.version, got)
		}
	}
}

func TestNewestAndCompare(t *testing.T) {
	proxy := []string{"v1.34.9", "v1.35.0", "v1.35.10", "v1.35.4", "v1.35.11-rc.0", "v1.36.0-alpha.1", "v1.36.0-rc.1", "v1.36.0-rc.0"}
	for constraint, want := range map[string]string{
		"1.35": "v1.35.10", "1.34": "v1.34.9", "v1.35.4": "v1.35.4", "1.35.4": "v1.35.4", "v1.36.0-rc.1": "v1.36.0-rc.1", "1.37": "",
	} {
		got, ok := Newest(constraint, proxy)
		if got != want || ok != (want != "") {
			t.Errorf("Newest(%q) = %q, %v; want %q", constraint, got, ok, want)
		}
	}
	ordered := []string{"v1.9.0", "v1.10.0-alpha.1", "v1.10.0-alpha.2", "v1.10.0-alpha.10", "v1.10.0-beta", "v1.10.0-rc.1", "v1.10.0"}
	for i := 0; i+1 < len(ordered); i++ {
		if CompareVersions(ordered[i], ordered[i+1]) != -1 || CompareVersions(ordered[i+1], ordered[i]) != 1 {
			t.Errorf("%s < %s does not hold", ordered[i], ordered[i+1])
		}
	}
	if CompareVersions("1.35.4", "v1.35.4") != 0 {
		t.Error("v prefix changes order")
	}
}
