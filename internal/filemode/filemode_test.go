package filemode

import (
	"io/fs"
	"testing"
)

func TestUnix(t *testing.T) {
	for m, want := range map[fs.FileMode]uint32{
		0o644:                                 0o644,
		0o755 | fs.ModeSetuid:                 0o4755,
		0o2775&fs.ModePerm | fs.ModeSetgid:    0o2775,
		0o777 | fs.ModeSticky | fs.ModeDir:    0o1777,
		0o700 | fs.ModeSetuid | fs.ModeSetgid: 0o6700,
	} {
		if got := Unix(m); got != want {
			t.Errorf("Unix(%v) = %04o, want %04o", m, got, want)
		}
	}
}
