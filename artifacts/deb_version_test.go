package artifacts

import (
	"context"
	"testing"

	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
)

var debVersionCases = []struct {
	a, b string
	want int
}{
	{"1.0", "1.0", 0},
	{"1.0", "1.1", -1},
	{"1.10", "1.9", 1},
	{"1.0~rc1", "1.0", -1},
	{"1.0~rc1", "1.0~rc2", -1},
	{"1.0~~", "1.0~", -1},
	{"1.0", "1.0+deb12u1", -1},
	{"1.6.20~ds1-1+deb12u1", "1.6.20~ds1-1", 1},
	{"1.6.20~ds1-1+deb12u1", "1.6.20~ds1-1+b1", 1},
	{"1:1.0", "2.0", 1},
	{"0:1.0", "1.0", 0},
	{"1.0-1", "1.0-2", -1},
	{"1.0-10", "1.0-9", 1},
	{"1.0a", "1.0", 1},
	{"1.0a", "1.0+", -1}, // letters sort before other characters
	{"1.007", "1.7", 0},
	{"2.3.4-1~bpo12+1", "2.3.4-1", -1},
	{"1:1.4.7-1+b1", "1:1.4.7-1", 1},
	{"1.2.3", "1.2.3-0", 0}, // an empty revision equals "0"
}

func TestCompareDebVersions(t *testing.T) {
	for _, tc := range debVersionCases {
		if got := CompareDebVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareDebVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareDebVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareDebVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

// dpkg itself agrees on every case (when it is installed).
func TestCompareDebVersionsAgainstDpkg(t *testing.T) {
	testenv.NeedTool(t, "dpkg")
	ctx := context.Background()
	for _, tc := range debVersionCases {
		op := map[int]string{-1: "lt", 0: "eq", 1: "gt"}[tc.want]
		if err := run.Command("dpkg", "--compare-versions", tc.a, op, tc.b).Run(ctx); err != nil {
			t.Errorf("dpkg disagrees: %s %s %s: %v", tc.a, op, tc.b, err)
		}
	}
}
