package builder

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
)

// The password of the test mirror URLs, as written (percent-encoded) and as apt must send it.
const (
	credPassEncoded = "Hunter%2F22%3Asecret"
	credPass        = "Hunter/22:secret"
)

// leaks says which form of the test password s holds, if any.
func leaks(s string) string {
	for _, p := range []string{credPass, credPassEncoded, "Hunter"} {
		if strings.Contains(s, p) {
			return p
		}
	}
	return ""
}

func TestAptSourcesWithoutCredentials(t *testing.T) {
	r := &recipes.Recipe{Base: recipes.Base{Mirror: "https://apt:" + credPassEncoded + "@mirror.invalid/debian/", Suites: []string{"bookworm", "bookworm-updates"}, Components: []string{"main"}}}
	s := &state{opts: Options{Recipe: r}}
	got := string(s.aptSources())
	if p := leaks(got); p != "" || strings.Contains(got, "apt:") || strings.Contains(got, "@") {
		t.Errorf("sources.list carries the credentials (%q):\n%s", p, got)
	}
	if !strings.Contains(got, "deb https://mirror.invalid/debian bookworm main\ndeb https://mirror.invalid/debian bookworm-updates main\n") {
		t.Errorf("sources.list:\n%s", got)
	}
}

// The manifest's and SBOM's copy of the recipe names the mirrors without credentials; the
// recipe itself keeps them for the build.
func TestPublicRecipe(t *testing.T) {
	mirror := "https://apt:" + credPassEncoded + "@mirror.invalid/debian"
	r := &recipes.Recipe{Name: "x", Base: recipes.Base{Mirror: mirror},
		Mirrors: []recipes.URLRewrite{{Prefix: "https://dl.k8s.io/", Replacement: "https://k8s:" + credPassEncoded + "@mirror.invalid/k8s/"}}}
	p := publicRecipe(r)
	if p.Base.Mirror != "https://mirror.invalid/debian" || p.Mirrors[0].Replacement != "https://mirror.invalid/k8s/" || p.Mirrors[0].Prefix != "https://dl.k8s.io/" || p.Name != "x" {
		t.Errorf("public recipe: %+v %+v", p.Base, p.Mirrors)
	}
	if r.Base.Mirror != mirror || !strings.Contains(r.Mirrors[0].Replacement, credPassEncoded) {
		t.Error("publicRecipe changed the build's recipe")
	}
	red := redact.New(mirrorSecrets(r, "")...)
	if got := red.String("GET k8s:" + credPassEncoded + " and " + credPass); leaks(got) != "" {
		t.Errorf("mirrorSecrets miss a form of the password: %s", got)
	}
}

// mmdebstrap gets the mirror without credentials and a setup hook naming a private folder
// whose auth.conf.d file (0600, folder 0700) holds them; the rootfs key is the same as
// without credentials.
func TestMmdebstrapArgsKeepCredentialsOut(t *testing.T) {
	plain := RootfsSpec{Release: "bookworm", Variant: "minbase", Arch: "amd64", Suites: []string{"bookworm"}, Components: []string{"main"}, Packages: []string{"a=1"},
		Mirror: "http://127.0.0.1:3142/debian"}
	spec := plain
	spec.Mirror = "http://apt:" + credPassEncoded + "@127.0.0.1:3142/debian"
	if spec.Key() != plain.Key() {
		t.Error("the rootfs key depends on the mirror's credentials")
	}
	dir := t.TempDir()
	if d, err := writeMirrorAuth(dir, plain.Mirror); err != nil || d != "" {
		t.Errorf("a mirror without credentials gets an auth folder %q, %v", d, err)
	}
	authDir, err := writeMirrorAuth(dir, spec.Mirror)
	if err != nil {
		t.Fatal(err)
	}
	assertMode(t, authDir, 0o700|os.ModeDir)
	authFile := filepath.Join(authDir, mirrorAuthFile)
	assertMode(t, authFile, 0o600)
	data, _ := os.ReadFile(authFile)
	if want := "machine http://127.0.0.1:3142/debian\nlogin apt\npassword " + credPass + "\n"; string(data) != want {
		t.Errorf("auth file %q, want %q", data, want)
	}
	args := spec.mmdebstrapArgs("/x.tar", authDir)
	line := strings.Join(args, " ")
	if p := leaks(line); p != "" || strings.Contains(line, "apt:") {
		t.Errorf("the mmdebstrap command line holds the credentials (%q): %s", p, line)
	}
	if !strings.Contains(line, "deb http://127.0.0.1:3142/debian bookworm main") || !strings.Contains(line, "--setup-hook=") || !strings.Contains(line, authDir) {
		t.Errorf("mmdebstrap args: %s", line)
	}
	// Options before the positional suite, target and sources.
	for i, a := range args {
		if strings.HasPrefix(a, "--setup-hook=") && (i+1 >= len(args) || args[i+1] != "bookworm") {
			t.Errorf("the hook is not the last option: %q", args)
		}
	}
	if got := strings.Join(plain.mmdebstrapArgs("/x.tar", ""), " "); strings.Contains(got, "hook") {
		t.Errorf("a mirror without credentials gets a hook: %s", got)
	}
	for _, bad := range []string{"http://:" + credPassEncoded + "@h/debian", "http://apt:a%20b@h/debian"} {
		if _, err := writeMirrorAuth(t.TempDir(), bad); err == nil || leaks(err.Error()) != "" {
			t.Errorf("%s: err = %v", redact.URL(bad), err)
		}
	}
}

// The setup hook appends the auth folder to the apt configuration mmdebstrap names; apt then
// sends the credentials to the mirror (checked with apt-helper against a server that wants
// them, when apt is installed).
func TestAptAuthHookReachesApt(t *testing.T) {
	var hits, authorized atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if u, p, ok := r.BasicAuth(); !ok || u != "apt" || p != credPass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		authorized.Add(1)
		io.WriteString(w, "Release file")
	}))
	defer srv.Close()
	mirror := strings.Replace(srv.URL, "http://", "http://apt:"+credPassEncoded+"@", 1) + "/debian"
	dir := t.TempDir()
	authDir, err := writeMirrorAuth(dir, mirror)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "apt.conf")
	os.WriteFile(conf, []byte("Acquire::http::Proxy \"DIRECT\";\n"), 0o644)
	cmd := exec.Command("sh", "-c", aptAuthHook(authDir), "sh", "/chroot")
	cmd.Env = append(os.Environ(), "MMDEBSTRAP_APT_CONFIG="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hook: %v %s", err, out)
	}
	if b, _ := os.ReadFile(conf); !strings.Contains(string(b), `Dir::Etc::netrcparts "`+authDir+`";`) {
		t.Fatalf("apt config after the hook:\n%s", b)
	}
	// Without MMDEBSTRAP_APT_CONFIG the hook fails instead of building without credentials.
	if err := exec.Command("env", "-u", "MMDEBSTRAP_APT_CONFIG", "sh", "-c", aptAuthHook(authDir), "sh", "/chroot").Run(); err == nil {
		t.Error("the hook succeeds without MMDEBSTRAP_APT_CONFIG")
	}
	helper := "/usr/lib/apt/apt-helper"
	if _, err := os.Stat(helper); err != nil {
		t.Skip("apt-helper not installed: the hook's configuration is not tried with apt")
	}
	dl := t.TempDir()
	os.Chmod(dl, 0o777) // apt's _apt sandbox writes the download
	get := exec.Command(helper, "download-file", redact.StripUserinfo(mirror)+"/dists/bookworm/Release", filepath.Join(dl, "Release"))
	get.Env = append(os.Environ(), "APT_CONFIG="+conf)
	out, err := get.CombinedOutput()
	if err != nil || authorized.Load() == 0 {
		t.Fatalf("apt did not use the credentials: %v (%d requests, %d authorized)\n%s", err, hits.Load(), authorized.Load(), out)
	}
	if p := leaks(string(out)); p != "" {
		t.Errorf("apt's output shows the password:\n%s", out)
	}
}

// dirStore is a RootfsStore in a folder, without locking.
type dirStore string

func (d dirStore) Scratch(name string) (string, error) {
	p := filepath.Join(string(d), name)
	return p, os.MkdirAll(p, 0o755)
}

func (d dirStore) Lock(ctx context.Context, name string) (func(), error) { return func() {}, nil }

// A dirStore has no shared cache behind it.
func (d dirStore) FetchRootfs(context.Context, string, string) (bool, error) { return false, nil }
func (d dirStore) ShareRootfs(context.Context, string, string)               {}

// fakeMmdebstrap puts an mmdebstrap on PATH that records its arguments and the auth file its
// hook names, says things about the mirror and its password on stderr, and fails.
func fakeMmdebstrap(t *testing.T, dir string) {
	t.Helper()
	script := `#!/bin/sh
printf '%s\n' "$@" > "$KB_FAKE_OUT/args"
for a in "$@"; do
  case "$a" in
  --setup-hook=*)
    d=${a#*netrcparts \"}; d=${d%%\"*}
    cp "$d/` + mirrorAuthFile + `" "$KB_FAKE_OUT/auth"
    stat -c %a "$d" > "$KB_FAKE_OUT/authdir.mode";;
  esac
done
echo "I: running apt-get update..." >&2
if [ "$KB_FAKE_MODE" = refused ]; then
  echo "Err:1 $KB_FAKE_URL bookworm InRelease" >&2
  echo "  401  Unauthorized [IP: 127.0.0.1 3142]" >&2
  echo "E: Failed to fetch $KB_FAKE_URL/dists/bookworm/InRelease  401  Unauthorized" >&2
else
  echo "W: something odd about $KB_FAKE_URL and the password $KB_FAKE_PASS" >&2
fi
exit 1
`
	if err := os.WriteFile(filepath.Join(dir, "mmdebstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// A failed mmdebstrap run through a credentialed mirror: the log lines and the error show
// neither the password nor the mirror, the arguments carry no credentials, the auth file
// existed (0600 in a 0700 folder) during the run, and nothing of it is left afterwards.
func TestRootfsTarballHidesCredentials(t *testing.T) {
	bin, out, cache := t.TempDir(), t.TempDir(), t.TempDir()
	fakeMmdebstrap(t, bin)
	mirror := "http://apt:" + credPassEncoded + "@mirror.invalid:3142/debian"
	t.Setenv("KB_FAKE_OUT", out)
	t.Setenv("KB_FAKE_URL", mirror)
	t.Setenv("KB_FAKE_PASS", credPass)
	spec := RootfsSpec{Release: "bookworm", Variant: "minbase", Arch: "amd64", Suites: []string{"bookworm"}, Components: []string{"main"}, Packages: []string{"a=1"}, Mirror: mirror}
	for _, mode := range []string{"refused", "other"} {
		t.Run(mode, func(t *testing.T) {
			t.Setenv("KB_FAKE_MODE", mode)
			var logged []string
			_, _, err := rootfsTarball(context.Background(), dirStore(cache), spec, nil, func(l string) { logged = append(logged, l) })
			if err == nil {
				t.Fatal("the fake mmdebstrap succeeded")
			}
			t.Log(err)
			all := strings.Join(append(logged, err.Error()), "\n")
			if p := leaks(all); p != "" || strings.Contains(all, "mirror.invalid") {
				t.Errorf("the log or the error shows the password (%q) or the mirror:\n%s", p, all)
			}
			if mode == "refused" && !strings.Contains(err.Error(), "the Debian mirror refused a download") {
				t.Errorf("err = %v", err)
			}
			var re *run.Error
			if mode == "other" && (!errors.As(err, &re) || leaks(re.Stderr+re.Line) != "" || strings.Contains(re.Stderr+re.Line, "mirror.invalid")) {
				t.Errorf("err %v: the run.Error is lost or shows the mirror: %+v", err, re)
			}
			args, _ := os.ReadFile(filepath.Join(out, "args"))
			if p := leaks(string(args)); p != "" || !strings.Contains(string(args), "deb http://mirror.invalid:3142/debian bookworm main") {
				t.Errorf("mmdebstrap arguments (%q):\n%s", p, args)
			}
			auth, _ := os.ReadFile(filepath.Join(out, "auth"))
			if !strings.Contains(string(auth), "password "+credPass) {
				t.Errorf("the auth file mmdebstrap saw: %q", auth)
			}
			if m, _ := os.ReadFile(filepath.Join(out, "authdir.mode")); strings.TrimSpace(string(m)) != "700" {
				t.Errorf("auth folder mode %s", m)
			}
			ents, _ := os.ReadDir(filepath.Join(cache, "rootfs"))
			for _, e := range ents {
				t.Errorf("left in the rootfs cache: %s", e.Name())
			}
		})
	}
}

// Hygiene drops apt credentials a rootfs might carry, and keeps the folder.
func TestHygieneDropsAptAuth(t *testing.T) {
	for rel, drop := range map[string]bool{
		"etc/apt/auth.conf":                  true,
		"etc/apt/auth.conf.d/corp.conf":      true,
		"etc/apt/auth.conf.d/kubebake.conf":  true,
		"etc/apt/auth.conf.d/":               false,
		"etc/apt/sources.list":               false,
		"etc/apt/apt.conf.d/00mmdebstrap":    false,
		"etc/apt/auth.conf.d.readme":         false,
		"usr/share/doc/apt/examples/netrc":   false,
		"etc/apt/auth.conf.d/sub/nested.txt": true,
	} {
		typ := byte(tar.TypeReg)
		name := rel
		if strings.HasSuffix(rel, "/") {
			typ, name = tar.TypeDir, strings.TrimSuffix(rel, "/")
		}
		got, content, err := hygiene(name, &tar.Header{Typeflag: typ}, func() ([]byte, error) { return nil, nil })
		if err != nil || got != drop || content != nil {
			t.Errorf("%s: drop %v (content %q, %v), want drop %v", rel, got, content, err, drop)
		}
	}
	// Through the merge: the stand-in rootfs with credentials in it.
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	entries := append(rootfsStandIn(),
		tarEntry{name: "./etc/apt/auth.conf", typ: tar.TypeReg, mode: 0o600, body: "machine x login a password " + credPass},
		tarEntry{name: "./etc/apt/auth.conf.d/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "./etc/apt/auth.conf.d/kubebake-mirror.conf", typ: tar.TypeReg, mode: 0o600, body: "machine x login a password " + credPass})
	writeTestTar(t, rootfs, entries)
	var buf strings.Builder
	extract := filepath.Join(dir, "boot")
	os.Mkdir(extract, 0o755)
	_, err := mergeTar(mergeOptions{RootfsTar: rootfs, Layer: lockedLayer(testLayer()), Open: openStandIn, Out: &stringWriter{&buf}, Epoch: 1795305600,
		Extract: func(string) bool { return false }, ExtractDir: extract})
	if err != nil {
		t.Fatal(err)
	}
	_, m := readTar(t, []byte(buf.String()))
	if _, ok := m["./etc/apt/auth.conf.d/"]; !ok {
		t.Error("the auth.conf.d folder is gone")
	}
	for n, e := range m {
		if leaks(e.body) != "" {
			t.Errorf("%s survived hygiene with the password", n)
		}
	}
}

type stringWriter struct{ b *strings.Builder }

func (w *stringWriter) Write(p []byte) (int, error) { return w.b.Write(p) }

// Build log events and errors pass through the mirror redactor.
func TestBuildEventsHideCredentials(t *testing.T) {
	mirror := "https://apt:" + credPassEncoded + "@mirror.invalid/debian"
	s := &state{redactor: redact.New(mirrorSecrets(nil, mirror)...)}
	var events []string
	_, err := s.run(context.Background(), []stage{{"rootfs", func(ctx context.Context) error {
		s.log("Get:1 " + mirror + " bookworm InRelease; password " + credPass)
		return errors.New("apt said " + credPass + " at " + mirror)
	}}}, func(e Event) { events = append(events, e.Message) })
	all := strings.Join(append(events, err.Error()), "\n")
	if p := leaks(all); p != "" {
		t.Errorf("an event or the error shows the password (%q):\n%s", p, all)
	}
	if !strings.Contains(all, "https://***@mirror.invalid/debian") {
		t.Errorf("events:\n%s", all)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode() & (os.ModePerm | os.ModeDir); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

// The mirror check runs before mmdebstrap: when it fails, its error is the build's and
// mmdebstrap is never started.
func TestRootfsTarballChecksMirrorFirst(t *testing.T) {
	bin, out, cache := t.TempDir(), t.TempDir(), t.TempDir()
	fakeMmdebstrap(t, bin)
	t.Setenv("KB_FAKE_OUT", out)
	spec := RootfsSpec{Release: "bookworm", Variant: "minbase", Arch: "amd64", Suites: []string{"bookworm"}, Components: []string{"main"}, Packages: []string{"a=1"}, Mirror: "http://127.0.0.1:9/debian"}
	gone := errors.New("the mirror no longer serves a 1")
	_, _, err := rootfsTarball(context.Background(), dirStore(cache), spec, func(context.Context) error { return gone }, nil)
	if !errors.Is(err, gone) {
		t.Errorf("err = %v, want the mirror check's", err)
	}
	if _, err := os.Stat(filepath.Join(out, "args")); err == nil {
		t.Error("mmdebstrap ran although the mirror check failed")
	}
}
