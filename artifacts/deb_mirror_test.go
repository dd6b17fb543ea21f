package artifacts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/testenv"
)

func writeApt(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sources.list.d"), 0o755)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDebianMirrorFrom(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"deb822 skips security", map[string]string{
			"sources.list.d/debian.sources": `Types: deb
# http://example.invalid/archive/debian/20250520T000000Z
URIs: http://mirror.test/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://mirror.test/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`}, "http://mirror.test/debian"},
		{"one-line with options", map[string]string{
			"sources.list": `# comment
deb-src http://src.test/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://one.test/debian bookworm main
`}, "http://one.test/debian"},
		{"sources.list first, then sources.list.d by name", map[string]string{
			"sources.list":             "deb http://first.test/debian bookworm main\n",
			"sources.list.d/a.sources": "Types: deb\nURIs: http://second.test/debian\nSuites: bookworm\n",
			"sources.list.d/b.list":    "deb http://third.test/debian bookworm main\n",
		}, "http://first.test/debian"},
		{"disabled and foreign entries skipped", map[string]string{
			"sources.list.d/a.sources":            "Enabled: no\nTypes: deb\nURIs: http://off.test/debian\nSuites: bookworm\n",
			"sources.list.d/b.sources":            "Types: deb\nURIs: https://deb.nodesource.test/node_20.x\nSuites: nodistro\n",
			"sources.list.d/c.list.disabled-by-x": "deb http://ignored.test/debian bookworm main\n",
			"sources.list.d/d.list":               "deb http://archive.test/mirror/ trixie main\n",
		}, "http://archive.test/mirror"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := debianMirrorFrom(writeApt(t, tc.files))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDebianMirrorNone(t *testing.T) {
	root := writeApt(t, map[string]string{
		"sources.list": "deb http://security.test/debian-security bookworm-security main\n",
	})
	_, err := debianMirrorFrom(root)
	if err == nil || !strings.Contains(err.Error(), "base.mirror") {
		t.Fatalf("want an error that says to set base.mirror, got %v", err)
	}
}

// The machine's own apt configuration names a Debian archive (the project's environment
// depends on it).
func TestSystemDebianMirror(t *testing.T) {
	m, err := SystemDebianMirror()
	if err != nil {
		testenv.Missing(t, "a Debian archive in this machine's apt sources", err.Error())
	}
	if !strings.HasPrefix(m, "http") || strings.HasSuffix(m, "/") {
		t.Errorf("mirror %q", m)
	}
}

func TestSecurityMirrorFrom(t *testing.T) {
	root := writeApt(t, map[string]string{
		"sources.list.d/debian.sources": "Types: deb\nURIs: http://mirror.test/debian/\nSuites: bookworm bookworm-updates\n\n" +
			"Types: deb\nURIs: http://mirror.test/debian-security/\nSuites: bookworm-security\nComponents: main\n",
	})
	if got, err := securityMirrorFrom(root); err != nil || got != "http://mirror.test/debian-security" {
		t.Errorf("securityMirrorFrom = %q, %v", got, err)
	}
	none := writeApt(t, map[string]string{"sources.list": "deb http://mirror.test/debian bookworm main\n"})
	if _, err := securityMirrorFrom(none); err == nil || !strings.Contains(err.Error(), "base.securityMirror") {
		t.Errorf("no security archive: err = %v", err)
	}
	s := &DebSource{Mirror: "http://main.test/debian", SecurityMirror: "http://sec.test/debian-security"}
	if s.mirrorFor("bookworm-security", s.Mirror) != s.SecurityMirror || s.mirrorFor("bookworm-updates", s.Mirror) != s.Mirror {
		t.Error("mirrorFor does not send only the security suite to the security archive")
	}
	s.SecurityMirror = ""
	if s.mirrorFor("bookworm-security", s.Mirror) != s.Mirror {
		t.Error("without a security archive the security suite does not come from the mirror")
	}
}
