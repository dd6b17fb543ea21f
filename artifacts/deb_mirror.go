package artifacts

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// SystemDebianMirror returns the Debian archive this machine's apt uses: the first URI of an
// enabled "deb" entry in /etc/apt/sources.list, then /etc/apt/sources.list.d/*.list and
// *.sources (deb822) in name order, that is a Debian archive and not a security archive.
// A recipe whose base.mirror is empty uses it.
func SystemDebianMirror() (string, error) {
	return debianMirrorFrom("/etc/apt")
}

// SystemSecurityMirror returns the Debian security archive of this machine's apt sources: the
// first enabled entry whose suites are "<codename>-security".
func SystemSecurityMirror() (string, error) {
	return securityMirrorFrom("/etc/apt")
}

func securityMirrorFrom(etcApt string) (string, error) {
	entries, err := readAptSources(etcApt)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.uri, "http://") && !strings.HasPrefix(e.uri, "https://") && !strings.HasPrefix(e.uri, "file:") {
			continue
		}
		for _, s := range e.suites {
			if IsSecuritySuite(s) {
				return strings.TrimRight(e.uri, "/"), nil
			}
		}
	}
	return "", fmt.Errorf("no Debian security archive (a \"<release>-security\" suite) in %s/sources.list or %s/sources.list.d/*.{list,sources}; set base.securityMirror in the recipe, or leave the -security suite out of base.suites", etcApt, etcApt)
}

// IsSecuritySuite says whether a suite is a release's security suite ("bookworm-security"),
// which Debian publishes in its security archive, not in the main mirror.
func IsSecuritySuite(suite string) bool { return strings.HasSuffix(suite, "-security") }

// aptEntry is one source: a URI with its suites.
type aptEntry struct {
	file     string
	uri      string
	suites   []string
	signedBy string
}

// debianMirrorFrom reads the apt configuration under etcApt (normally /etc/apt).
func debianMirrorFrom(etcApt string) (string, error) {
	entries, err := readAptSources(etcApt)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if isDebianArchive(e) {
			return strings.TrimRight(e.uri, "/"), nil
		}
	}
	return "", fmt.Errorf("no Debian archive found in %s/sources.list or %s/sources.list.d/*.{list,sources} (security archives are skipped); set base.mirror in the recipe to a Debian mirror URL", etcApt, etcApt)
}

func readAptSources(etcApt string) ([]aptEntry, error) {
	var out []aptEntry
	main := filepath.Join(etcApt, "sources.list")
	if data, err := os.ReadFile(main); err == nil {
		out = append(out, parseOneLineSources(main, data)...)
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading apt sources: %w", err)
	}
	dir := filepath.Join(etcApt, "sources.list.d")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading apt sources: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		switch {
		case strings.HasSuffix(n, ".list"):
			if data, err := os.ReadFile(p); err == nil {
				out = append(out, parseOneLineSources(p, data)...)
			}
		case strings.HasSuffix(n, ".sources"):
			if data, err := os.ReadFile(p); err == nil {
				out = append(out, parseDeb822Sources(p, data)...)
			}
		}
	}
	return out, nil
}

// parseOneLineSources reads "deb [opt=val ...] uri suite [component...]" lines.
func parseOneLineSources(file string, data []byte) []aptEntry {
	var out []aptEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		fields = fields[1:]
		signedBy := ""
		if strings.HasPrefix(fields[0], "[") {
			// Options may span several fields: [arch=amd64 signed-by=/x.gpg]
			var opts []string
			for len(fields) > 0 {
				f := fields[0]
				fields = fields[1:]
				opts = append(opts, strings.Trim(f, "[]"))
				if strings.HasSuffix(f, "]") {
					break
				}
			}
			for _, o := range opts {
				if v, ok := strings.CutPrefix(o, "signed-by="); ok {
					signedBy = v
				}
			}
		}
		if len(fields) < 2 {
			continue
		}
		out = append(out, aptEntry{file: file, uri: fields[0], suites: []string{fields[1]}, signedBy: signedBy})
	}
	return out
}

// parseDeb822Sources reads deb822 stanzas (Types, URIs, Suites, Enabled, Signed-By).
func parseDeb822Sources(file string, data []byte) []aptEntry {
	var out []aptEntry
	for _, stanza := range deb822Stanzas(data) {
		if strings.EqualFold(stanza["enabled"], "no") {
			continue
		}
		if !slices.Contains(strings.Fields(stanza["types"]), "deb") {
			continue
		}
		suites := strings.Fields(stanza["suites"])
		for _, uri := range strings.Fields(stanza["uris"]) {
			out = append(out, aptEntry{file: file, uri: uri, suites: suites, signedBy: stanza["signed-by"]})
		}
	}
	return out
}

// deb822Stanzas splits RFC822-style paragraphs into lower-cased field maps; comment lines are
// dropped and continuation lines are joined with newlines.
func deb822Stanzas(data []byte) []map[string]string {
	var out []map[string]string
	cur := map[string]string{}
	last := ""
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur, last = map[string]string{}, ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				cur[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			cur[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// debianCodenames are the suites that identify a Debian archive when nothing else does.
var debianCodenames = []string{"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "stable", "testing", "unstable", "oldstable"}

func isDebianArchive(e aptEntry) bool {
	if !strings.HasPrefix(e.uri, "http://") && !strings.HasPrefix(e.uri, "https://") && !strings.HasPrefix(e.uri, "file:") {
		return false
	}
	if strings.Contains(e.uri, "security") {
		return false
	}
	for _, s := range e.suites {
		if strings.HasSuffix(s, "-security") || strings.HasSuffix(s, "/updates") {
			return false
		}
	}
	if strings.Contains(e.signedBy, "debian-archive") || strings.HasSuffix(strings.TrimRight(e.uri, "/"), "/debian") {
		return true
	}
	for _, s := range e.suites {
		base, _, _ := strings.Cut(s, "-")
		if slices.Contains(debianCodenames, base) {
			return true
		}
	}
	return false
}
