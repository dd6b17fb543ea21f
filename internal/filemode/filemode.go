// Package filemode converts Go's fs.FileMode to the Unix mode bits that tar headers, stat and
// chmod use: Go keeps setuid, setgid and sticky outside the permission bits.
package filemode

import "io/fs"

// Unix is m's permission bits with setuid (04000), setgid (02000) and sticky (01000).
func Unix(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}
