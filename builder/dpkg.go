package builder

import (
	"bufio"
	"bytes"
	"github.com/kubebake/kubebake/manifest"
	"sort"
	"strings"
)

// DebPackage is one installed Debian package, from the image's /var/lib/dpkg/status, as
// the manifest lists it.
type DebPackage = manifest.DebPackage

// parseDpkgStatus returns the installed packages ("install ok installed"), sorted by name
// and architecture.
func parseDpkgStatus(status []byte) []DebPackage {
	var pkgs []DebPackage
	var cur DebPackage
	installed := false
	flush := func() {
		if cur.Name != "" && installed {
			pkgs = append(pkgs, cur)
		}
		cur, installed = DebPackage{}, false
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Package":
			cur.Name = val
		case "Version":
			cur.Version = val
		case "Architecture":
			cur.Architecture = val
		case "Source":
			// "Source: name (version)" when the source version differs.
			name, _, _ := strings.Cut(val, " ")
			cur.Source = name
		case "Status":
			installed = strings.HasSuffix(val, " installed") && strings.HasPrefix(val, "install ")
		}
	}
	flush()
	for i := range pkgs {
		if pkgs[i].Source == pkgs[i].Name {
			pkgs[i].Source = ""
		}
	}
	sort.Slice(pkgs, func(i, j int) bool {
		if pkgs[i].Name != pkgs[j].Name {
			return pkgs[i].Name < pkgs[j].Name
		}
		return pkgs[i].Architecture < pkgs[j].Architecture
	})
	return pkgs
}
