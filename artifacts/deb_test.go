package artifacts

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
	"github.com/ulikunitz/xz"
)

// synthPkg is a package of the synthetic archive.
type synthPkg struct {
	name, version, arch string
	content             []byte
}

func (p synthPkg) filename() string {
	// Like Debian, the file name leaves out the epoch.
	v := p.version
	if _, rest, ok := strings.Cut(v, ":"); ok {
		v = rest
	}
	return fmt.Sprintf("pool/main/%c/%s/%s_%s_%s.deb", p.name[0], p.name, p.name, v, p.arch)
}

// synthArchive builds a tiny Debian archive served by a releaseServer on 127.0.0.1.
type synthArchive struct {
	srv         *releaseServer
	suites      map[string][]synthPkg
	compression string // "gz" (default), "xz" or "" (uncompressed)
	byHash      bool
	validUntil  time.Time
	sign        func([]byte) []byte // clear-signs an InRelease; nil: Release only
	// Set by publish: the Release text of each suite.
	release map[string][]byte
}

func newSynthArchive(t *testing.T) *synthArchive {
	return &synthArchive{
		srv: newFileServer(t),
		suites: map[string][]synthPkg{
			"bookworm": {
				{"conntrack", "1:1.4.7-1+b2", "amd64", []byte("conntrack deb (bookworm)")},
				{"conntrack", "1:1.4.7-1+b2", "arm64", []byte("conntrack deb (arm64)")},
				{"socat", "1.7.4.4-2", "amd64", []byte("socat deb")},
				{"iptables", "1.8.9-2", "amd64", []byte("iptables deb")},
				{"ca-certificates", "20230311", "all", []byte("ca-certificates deb")},
			},
			"bookworm-updates": {
				{"conntrack", "1:1.4.7-1+b3", "amd64", []byte("conntrack deb (updates)")},
				{"iptables", "1.8.9-2~bpo1", "amd64", []byte("older iptables (tilde sorts first)")},
			},
		},
		compression: "gz",
		release:     map[string][]byte{},
	}
}

func compress(t *testing.T, kind string, data []byte) []byte {
	var b bytes.Buffer
	switch kind {
	case "gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case "xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	default:
		return data
	}
	return b.Bytes()
}

// publish writes pool files, Packages indexes and (In)Release files for every suite.
func (a *synthArchive) publish(t *testing.T) {
	t.Helper()
	for suite, pkgs := range a.suites {
		var idx strings.Builder
		for _, p := range pkgs {
			a.srv.set("/"+p.filename(), p.content)
			fmt.Fprintf(&idx, "Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: Test <t@kubebake.invalid>\nFilename: %s\nSize: %d\nSHA256: %s\nDescription: %s\n multi-line description\n .\n more\n\n",
				p.name, p.version, p.arch, p.filename(), len(p.content), sum(p.content), p.name)
		}
		plain := []byte(idx.String())
		files := map[string][]byte{"main/binary-amd64/Packages": plain}
		if a.compression != "" {
			files["main/binary-amd64/Packages."+a.compression] = compress(t, a.compression, plain)
		}
		var rel strings.Builder
		fmt.Fprintf(&rel, "Origin: Debian\nSuite: %s\nCodename: %s\nDate: %s\n", suite, suite, time.Date(2026, 11, 20, 2, 11, 10, 0, time.UTC).Format(time.RFC1123))
		if !a.validUntil.IsZero() {
			fmt.Fprintf(&rel, "Valid-Until: %s\n", a.validUntil.UTC().Format(time.RFC1123))
		}
		if a.byHash {
			rel.WriteString("Acquire-By-Hash: yes\n")
		}
		rel.WriteString("Architectures: amd64 arm64\nComponents: main\nSHA256:\n")
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&rel, " %s %8d %s\n", sum(files[n]), len(files[n]), n)
			dir := "/dists/" + suite + "/"
			if a.byHash {
				a.srv.set(dir+filepath.Dir(n)+"/by-hash/SHA256/"+sum(files[n]), files[n])
			} else {
				a.srv.set(dir+n, files[n])
			}
		}
		a.release[suite] = []byte(rel.String())
		if a.sign != nil {
			a.srv.set("/dists/"+suite+"/InRelease", a.sign(a.release[suite]))
		} else {
			a.srv.set("/dists/"+suite+"/Release", a.release[suite])
		}
	}
}

func (a *synthArchive) source(t *testing.T, c *Cache) *DebSource {
	s := NewDebSource(c, a.srv.URL, nil, nil)
	s.Insecure = a.sign == nil
	s.Backoff, s.MaxBackoff, s.Attempts = time.Millisecond, time.Millisecond, 2
	return s
}

func debInput(pkg string, suites ...string) recipes.Input {
	name, _, _ := strings.Cut(pkg, "=")
	if len(suites) == 0 {
		suites = []string{"bookworm", "bookworm-updates"}
	}
	return recipes.Input{Name: "deb/" + name, Kind: recipes.InputDeb, Source: recipes.Source{Type: recipes.SourceDeb}, Package: pkg, Suites: suites, Arch: "amd64"}
}

func resolveOne(t *testing.T, s *DebSource, in recipes.Input) recipes.LockedArtifact {
	t.Helper()
	arts, err := s.Resolve(context.Background(), []recipes.Input{in}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return arts[0]
}

func TestDebResolveNewestAcrossSuites(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	s := a.source(t, newCache(t))
	got, err := s.Resolve(context.Background(), []recipes.Input{debInput("conntrack"), debInput("iptables"), debInput("ca-certificates"), debInput("socat")}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	c := got[0]
	want := a.suites["bookworm-updates"][0]
	if c.Version != "1:1.4.7-1+b3" || c.Suite != "bookworm-updates" || c.URL != want.filename() ||
		c.SHA256 != sum(want.content) || c.Size != int64(len(want.content)) || c.Kind != "deb" || c.Source != "deb" || c.Name != "deb/conntrack" {
		t.Errorf("conntrack: %+v", c)
	}
	if strings.Contains(c.URL, a.srv.URL) || strings.Contains(c.URL, "127.0.0.1") {
		t.Errorf("the lock names the mirror: %s", c.URL)
	}
	if got[1].Version != "1.8.9-2" || got[1].Suite != "bookworm" {
		t.Errorf("iptables: dpkg order says 1.8.9-2 > 1.8.9-2~bpo1: %+v", got[1])
	}
	if got[2].Version != "20230311" {
		t.Errorf("Architecture: all not found: %+v", got[2])
	}
}

func TestDebResolvePinned(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	s := a.source(t, newCache(t))
	c := resolveOne(t, s, debInput("conntrack=1:1.4.7-1+b2"))
	if c.Version != "1:1.4.7-1+b2" || c.Suite != "bookworm" || c.SHA256 != sum(a.suites["bookworm"][0].content) {
		t.Errorf("pinned: %+v", c)
	}
	in := debInput("conntrack")
	in.Version = "1:1.4.7-1+b2"
	if c2 := resolveOne(t, s, in); c2 != c {
		t.Errorf("pin through Version: %+v", c2)
	}
	_, err := s.Resolve(context.Background(), []recipes.Input{debInput("conntrack=9.9")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "conntrack=9.9 is not in bookworm, bookworm-updates") || !strings.Contains(err.Error(), "1:1.4.7-1+b3 (bookworm-updates)") {
		t.Errorf("missing pin: %v", err)
	}
}

func TestDebResolveUnknownPackage(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	s := a.source(t, newCache(t))
	_, err := s.Resolve(context.Background(), []recipes.Input{debInput("conntrackd")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), `package "conntrackd" is not in bookworm, bookworm-updates (main, amd64)`) {
		t.Errorf("err %v", err)
	}
	_, err = s.Resolve(context.Background(), []recipes.Input{debInput("conntrack", "bookwrom")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "bookwrom") || !strings.Contains(err.Error(), "check the suite name") {
		t.Errorf("unknown suite: %v", err)
	}
}

func TestDebResolveKeepsLockedEntry(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	c := newCache(t)
	old := resolveOne(t, a.source(t, c), debInput("conntrack=1:1.4.7-1+b2"))
	before := a.srv.totalGets()
	s := a.source(t, c)
	kept, err := s.Resolve(context.Background(), []recipes.Input{debInput("conntrack")}, []recipes.LockedArtifact{old}, false)
	if err != nil {
		t.Fatal(err)
	}
	if kept[0] != old {
		t.Errorf("update=false moved the entry: %+v", kept[0])
	}
	if n := a.srv.totalGets() - before; n != 0 {
		t.Errorf("keeping a locked entry made %d requests", n)
	}
	moved, err := s.Resolve(context.Background(), []recipes.Input{debInput("conntrack")}, []recipes.LockedArtifact{old}, true)
	if err != nil {
		t.Fatal(err)
	}
	if moved[0].Version != "1:1.4.7-1+b3" {
		t.Errorf("update=true: %+v", moved[0])
	}
	// A suite change (bookworm -> trixie) re-resolves even without update.
	a.suites["trixie"] = []synthPkg{{"conntrack", "1:1.4.8-2", "amd64", []byte("trixie conntrack")}}
	a.publish(t)
	tr, err := s.Resolve(context.Background(), []recipes.Input{debInput("conntrack", "trixie")}, []recipes.LockedArtifact{old}, false)
	if err != nil {
		t.Fatal(err)
	}
	if tr[0].Suite != "trixie" {
		t.Errorf("suite change kept the old entry: %+v", tr[0])
	}
}

func TestDebIndexCachedAcrossRuns(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	c := newCache(t)
	// The cached Release's age is measured from its file's mtime (the real clock); the
	// sources' clocks are moved forward from there.
	now := time.Now()
	first := a.source(t, c)
	first.now = func() time.Time { return now }
	resolveOne(t, first, debInput("conntrack"))
	relPath := "/dists/bookworm/Release"
	pkgPath := "/dists/bookworm/main/binary-amd64/Packages.gz"
	if a.srv.gets(relPath) != 1 || a.srv.gets(pkgPath) != 1 {
		t.Fatalf("first resolve: Release %d, Packages %d", a.srv.gets(relPath), a.srv.gets(pkgPath))
	}
	// A second run (a new source, as another kubebake process) within the TTL asks nothing.
	second := a.source(t, c)
	second.now = func() time.Time { return now.Add(5 * time.Minute) }
	resolveOne(t, second, debInput("socat"))
	if a.srv.gets(relPath) != 1 || a.srv.gets(pkgPath) != 1 {
		t.Errorf("within the TTL: Release %d, Packages %d requests", a.srv.gets(relPath), a.srv.gets(pkgPath))
	}
	// After the TTL the Release is fetched again; the unchanged Packages (same sha256) is not.
	third := a.source(t, c)
	third.now = func() time.Time { return now.Add(2 * time.Hour) }
	resolveOne(t, third, debInput("socat"))
	if a.srv.gets(relPath) != 2 || a.srv.gets(pkgPath) != 1 {
		t.Errorf("after the TTL: Release %d (want 2), Packages %d (want 1)", a.srv.gets(relPath), a.srv.gets(pkgPath))
	}
	// A new index (new Release) is downloaded.
	a.suites["bookworm"] = append(a.suites["bookworm"], synthPkg{"ebtables", "2.0.11-5", "amd64", []byte("ebtables")})
	a.publish(t)
	fourth := a.source(t, c)
	fourth.now = func() time.Time { return now.Add(4 * time.Hour) }
	if e := resolveOne(t, fourth, debInput("ebtables")); e.Version != "2.0.11-5" {
		t.Errorf("new index: %+v", e)
	}
	if a.srv.gets(pkgPath) != 2 {
		t.Errorf("a changed Packages was not downloaded again")
	}
}

func TestDebIndexChecksumRefused(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	// The mirror serves a Packages.gz that is not the one the Release lists (same size).
	p := "/dists/bookworm/main/binary-amd64/Packages.gz"
	evil := bytes.Clone(a.srv.files[p])
	evil[len(evil)/2] ^= 0xff
	a.srv.set(p, evil)
	s := a.source(t, newCache(t))
	_, err := s.Resolve(context.Background(), []recipes.Input{debInput("conntrack")}, nil, false)
	var ce *ChecksumError
	if !errors.As(err, &ce) {
		t.Fatalf("want a ChecksumError, got %v", err)
	}
	if !strings.Contains(err.Error(), "Packages.gz") {
		t.Errorf("error does not name the index: %v", err)
	}
}

func TestDebIndexXZAndByHash(t *testing.T) {
	for _, tc := range []struct {
		name        string
		compression string
		byHash      bool
		want        string
	}{
		{"xz", "xz", false, "/dists/bookworm/main/binary-amd64/Packages.xz"},
		{"uncompressed", "", false, "/dists/bookworm/main/binary-amd64/Packages"},
		{"by-hash", "gz", true, "/dists/bookworm/main/binary-amd64/by-hash/SHA256/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newSynthArchive(t)
			a.compression, a.byHash = tc.compression, tc.byHash
			a.publish(t)
			s := a.source(t, newCache(t))
			if c := resolveOne(t, s, debInput("conntrack")); c.Version != "1:1.4.7-1+b3" {
				t.Errorf("%+v", c)
			}
			found := false
			a.srv.mu.Lock()
			for p, n := range a.srv.hits {
				if strings.HasPrefix(p, tc.want) && n > 0 {
					found = true
				}
			}
			a.srv.mu.Unlock()
			if !found {
				t.Errorf("no request for %s", tc.want)
			}
		})
	}
}

func TestDebValidUntil(t *testing.T) {
	a := newSynthArchive(t)
	a.validUntil = time.Now().Add(-time.Hour)
	a.publish(t)
	s := a.source(t, newCache(t))
	_, err := s.Resolve(context.Background(), []recipes.Input{debInput("conntrack")}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("err %v", err)
	}
	s.IgnoreValidUntil = true
	resolveOne(t, s, debInput("conntrack"))
}

func TestDebFetch(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	s := a.source(t, newCache(t))
	art := resolveOne(t, s, debInput("conntrack"))
	paths, err := s.Fetch(context.Background(), []recipes.LockedArtifact{art})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(paths["deb/conntrack"])
	if string(got) != "conntrack deb (updates)" {
		t.Errorf("fetched %q", got)
	}
	if _, err := s.Fetch(context.Background(), []recipes.LockedArtifact{art}); err != nil {
		t.Fatal(err)
	}
	if n := a.srv.gets("/" + art.URL); n != 1 {
		t.Errorf("warm fetch downloaded again (%d)", n)
	}

	// Through a mirror rule: the lock's pool path is the same, the host differs.
	other := newFileServer(t)
	other.set("/debian/"+art.URL, []byte("conntrack deb (updates)"))
	m := NewDebSource(newCache(t), "http://mirror.example/debian", nil, []recipes.URLRewrite{{Prefix: "http://mirror.example/", Replacement: other.URL + "/"}})
	if _, err := m.Fetch(context.Background(), []recipes.LockedArtifact{art}); err != nil {
		t.Fatal(err)
	}
	if other.gets("/debian/"+art.URL) != 1 {
		t.Error("mirror rule not applied")
	}

	bad := art
	bad.URL = "http://elsewhere/pool/x.deb"
	if _, err := a.source(t, newCache(t)).Fetch(context.Background(), []recipes.LockedArtifact{bad}); err == nil {
		t.Error("a lock entry with an absolute URL was fetched")
	}
}

func TestParsePackages(t *testing.T) {
	long := strings.Repeat("x", 2<<20) // a line longer than the read buffer
	idx := "Package: a\nVersion: 1\nArchitecture: amd64\nFilename: pool/a.deb\nSize: 3\nSHA256: " + strings.Repeat("a", 64) + "\nDescription: " + long + "\n continued\n\n" +
		"Package: b\r\nVersion: 2\r\nArchitecture: arm64\r\nFilename: pool/b.deb\r\nSize: 4\r\nSHA256: " + strings.Repeat("b", 64) + "\r\n\r\n" +
		"Package: c\nVersion: 3\nArchitecture: all\nFilename: pool/c.deb\nSize: 5\nSHA256: " + strings.Repeat("c", 64) // no final newline
	pkgs, err := parsePackages(strings.NewReader(idx), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 || pkgs[0].Name != "a" || pkgs[0].Size != 3 || pkgs[1].Name != "c" || pkgs[1].Arch != "all" {
		t.Errorf("%+v", pkgs)
	}
	if _, err := parsePackages(strings.NewReader("Package: x\nVersion: 1\n\n"), "amd64"); err == nil {
		t.Error("a stanza without Filename/SHA256 was accepted")
	}
}

// gpgKey makes a throw-away signing key with gpg; it returns a clear-signer and the public
// keyring file for gpgv.
func gpgKey(t *testing.T, uid string) (sign func([]byte) []byte, keyring string) {
	t.Helper()
	testenv.NeedTools(t, "gpg", "gpgv")
	home, err := os.MkdirTemp("", "kb-gpg-")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gpg := func(stdin []byte, args ...string) []byte {
		t.Helper()
		c := run.Command("gpg", append([]string{"--batch", "--homedir", home, "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		if stdin != nil {
			c.Stdin = bytes.NewReader(stdin)
		}
		out, err := c.Output(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Cleanup(func() {
		run.Command("gpgconf", "--homedir", home, "--kill", "all").Run(ctx)
		os.RemoveAll(home)
	})
	gpg(nil, "--quick-gen-key", uid, "ed25519", "sign", "never")
	keyring = filepath.Join(t.TempDir(), "keyring.gpg")
	if err := os.WriteFile(keyring, gpg(nil, "--export"), 0o644); err != nil {
		t.Fatal(err)
	}
	return func(data []byte) []byte { return gpg(data, "--clearsign", "--output", "-") }, keyring
}

func TestDebSignatures(t *testing.T) {
	sign, keyring := gpgKey(t, "kubebake test archive <archive@kubebake.invalid>")
	_, otherKeyring := gpgKey(t, "someone else <else@kubebake.invalid>")

	a := newSynthArchive(t)
	a.sign = sign
	a.publish(t)
	ctx := context.Background()

	good := a.source(t, newCache(t))
	good.Keyring = keyring
	if c := resolveOne(t, good, debInput("conntrack")); c.Version != "1:1.4.7-1+b3" {
		t.Errorf("%+v", c)
	}

	wrong := a.source(t, newCache(t))
	wrong.Keyring = otherKeyring
	_, err := wrong.Resolve(ctx, []recipes.Input{debInput("conntrack")}, nil, false)
	var se *SignatureError
	if !errors.As(err, &se) {
		t.Fatalf("unknown key: want a SignatureError, got %v", err)
	}

	// Tamper with the signed text: one more package version slipped into the Release.
	signed := a.srv.files["/dists/bookworm/InRelease"]
	a.srv.set("/dists/bookworm/InRelease", bytes.Replace(signed, []byte("Origin: Debian"), []byte("Origin: Debian!"), 1))
	tampered := a.source(t, newCache(t))
	tampered.Keyring = keyring
	_, err = tampered.Resolve(ctx, []recipes.Input{debInput("conntrack")}, nil, false)
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "BADSIG") {
		t.Fatalf("tampered InRelease: want a BADSIG SignatureError, got %v", err)
	}
	// Nothing unverified is kept for reuse.
	left, _ := filepath.Glob(filepath.Join(tampered.Cache.Dir(), "scratch", "deb-index", "*", "bookworm", "InRelease"))
	if len(left) != 0 {
		t.Errorf("a refused InRelease was kept: %v", left)
	}
}

// Against this machine's real Debian mirror: resolve conntrack in bookworm with the real
// signature check, fetch the .deb and read it with dpkg-deb.
func TestDebRealMirror(t *testing.T) {
	if testing.Short() {
		t.Skip("network: the machine's Debian mirror")
	}
	mirror, err := SystemDebianMirror()
	if err != nil {
		testenv.Missing(t, "a Debian archive in this machine's apt sources", err.Error())
	}
	s := NewDebSource(newCache(t), mirror, nil, nil)
	ctx := context.Background()
	start := time.Now()
	arts, err := s.Resolve(ctx, []recipes.Input{debInput("conntrack"), debInput("socat")}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cold resolve of 2 packages in bookworm + bookworm-updates: %v (signature: %s)", time.Since(start).Round(time.Millisecond), s.signatureMode())
	c := arts[0]
	if !strings.HasPrefix(c.URL, "pool/main/c/conntrack") || !strings.HasSuffix(c.URL, "_amd64.deb") || c.Size <= 0 {
		t.Errorf("conntrack: %+v", c)
	}
	if testenv.WantTool(t, "gpgv") && s.signatureMode() != "gpgv" {
		t.Error("gpgv is installed but signatures were not checked")
	}
	start = time.Now()
	s2 := NewDebSource(s.Cache, mirror, nil, nil)
	if _, err := s2.Resolve(ctx, []recipes.Input{debInput("ebtables")}, nil, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("warm resolve (cached index, new process): %v", time.Since(start).Round(time.Millisecond))
	paths, err := s.Fetch(ctx, arts[:1])
	if err != nil {
		t.Fatal(err)
	}
	if testenv.WantTool(t, "dpkg-deb") {
		out, err := run.Command("dpkg-deb", "--field", paths[c.Name], "Package", "Version").Output(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "Package: conntrack") || !strings.Contains(string(out), "Version: "+c.Version) {
			t.Errorf("dpkg-deb says %q", out)
		}
	}
	// A binary out of a package: the CNI bridge plugin from containernetworking-plugins.
	if testenv.WantTool(t, "dpkg-deb") {
		in := debCNIInput("bridge", "")
		bins, err := s.Resolve(ctx, []recipes.Input{in}, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		bp, err := s.Fetch(ctx, bins)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(bp["cni/bridge"])
		if err != nil || st.Size() < 1<<20 {
			t.Errorf("cni/bridge from %s: %v %v", bins[0].Package, st, err)
		}
		t.Logf("cni/bridge %s from %s (%d bytes)", bins[0].Version, bins[0].Package, st.Size())
	}
}

func TestDebParsedIndexReusedOrRebuilt(t *testing.T) {
	a := newSynthArchive(t)
	a.publish(t)
	c := newCache(t)
	resolveOne(t, a.source(t, c), debInput("conntrack"))
	parsed, _ := filepath.Glob(filepath.Join(c.Dir(), "scratch", "deb-parsed", "*-amd64.gob"))
	if len(parsed) != 2 {
		t.Fatalf("parsed indexes: %v", parsed)
	}
	// A damaged parsed index is parsed again from the (verified) Packages file.
	for _, p := range parsed {
		os.WriteFile(p, []byte("garbage"), 0o644)
	}
	if got := resolveOne(t, a.source(t, c), debInput("conntrack")); got.Version != "1:1.4.7-1+b3" {
		t.Errorf("after damage: %+v", got)
	}
}
