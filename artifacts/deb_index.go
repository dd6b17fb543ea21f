package artifacts

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/ulikunitz/xz"
)

// DebianArchiveKeyring is the keyring of Debian's archive signing keys (package
// debian-archive-keyring).
const DebianArchiveKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// debRelease is a suite's verified Release file.
type debRelease struct {
	suite      string
	codename   string
	date       time.Time
	validUntil time.Time
	byHash     bool
	// files maps paths relative to dists/<suite>/ to their sha256 and size.
	files map[string]debFileSum
}

type debFileSum struct {
	sha256 string
	size   int64
}

// debPkg is one stanza of a Packages index, reduced to what the lock needs.
type debPkg struct {
	Name, Version, Arch, Filename, SHA256 string
	Size                                  int64
}

// debIndex is the packages of one suite, for one architecture, over its components.
type debIndex struct {
	suite string
	pkgs  map[string][]debPkg
}

// SignatureError says a Release file's signature did not verify.
type SignatureError struct {
	File, Keyring, Detail string
}

func (e *SignatureError) Error() string {
	return fmt.Sprintf("%s: no good signature from a key in %s (%s); the mirror serves an index that is not Debian's, or the keyring is out of date (apt-get install debian-archive-keyring)", e.File, e.Keyring, e.Detail)
}

// mirrorKey names a mirror in the scratch area without putting its address in a path. Its
// credentials are left out: the same archive with another password is the same index.
func mirrorKey(mirror string) string {
	h := sha256.Sum256([]byte(redact.StripUserinfo(mirror)))
	return hex.EncodeToString(h[:8])
}

// release returns a suite's Release, verified. A fetched InRelease is kept in the cache's
// scratch area and reused for IndexTTL, so that locking several recipes in a row asks the
// mirror once; the Packages files it lists are cached by their sha256, so they are downloaded
// again only when the archive publishes a new index (a new Release Date).
func (s *DebSource) release(ctx context.Context, mirror, suite string) (*debRelease, error) {
	dir, err := s.Cache.Scratch(filepath.Join("deb-index", mirrorKey(mirror), suite))
	if err != nil {
		return nil, err
	}
	inRelease := filepath.Join(dir, "InRelease")
	detached, detachedSig := filepath.Join(dir, "Release"), filepath.Join(dir, "Release.gpg")

	fresh := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && s.IndexTTL >= 0 && s.timeNow().Sub(st.ModTime()) < s.indexTTL()
	}
	var text []byte
	switch {
	case fresh(inRelease):
		text, err = s.verifyClearsigned(ctx, inRelease)
	case fresh(detached) && (s.Insecure || fresh(detachedSig)):
		text, err = s.verifyDetached(ctx, detached, detachedSig)
	default:
		text, err = s.downloadRelease(ctx, mirror, suite, inRelease, detached, detachedSig)
	}
	if err != nil {
		return nil, err
	}
	rel, err := parseRelease(text)
	if err != nil {
		return nil, fmt.Errorf("%s/dists/%s/Release: %w", redact.URL(mirror), suite, err)
	}
	if rel.suite != suite && rel.codename != suite {
		return nil, fmt.Errorf("%s/dists/%s/Release describes suite %q (codename %q), not %q; the mirror is misconfigured", redact.URL(mirror), suite, rel.suite, rel.codename, suite)
	}
	if !rel.validUntil.IsZero() && s.timeNow().After(rel.validUntil) && !s.IgnoreValidUntil {
		return nil, fmt.Errorf("%s/dists/%s/Release expired on %s (Valid-Until); the mirror is stale: use an up-to-date mirror (or a snapshot mirror with the deb source's IgnoreValidUntil)", redact.URL(mirror), suite, rel.validUntil.Format(time.RFC1123))
	}
	return rel, nil
}

func (s *DebSource) downloadRelease(ctx context.Context, mirror, suite, inRelease, detached, detachedSig string) ([]byte, error) {
	base := mirror + "/dists/" + suite + "/"
	data, err := s.GetSmall(ctx, base+"InRelease", 64<<20)
	if err == nil {
		if err := atomicfile.WriteFile(inRelease, data, 0o644); err != nil {
			return nil, err
		}
		text, err := s.verifyClearsigned(ctx, inRelease)
		if err != nil {
			os.Remove(inRelease)
		}
		return text, err
	}
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusNotFound {
		return nil, fmt.Errorf("suite %s: %w", suite, err)
	}
	// Older or minimal archives have only Release + Release.gpg.
	rel, err := s.GetSmall(ctx, base+"Release", 64<<20)
	if err != nil {
		if errors.As(err, &he) && he.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("suite %s: the mirror has neither %sInRelease nor %sRelease; check the suite name and the mirror URL", suite, s.shown(base), s.shown(base))
		}
		return nil, fmt.Errorf("suite %s: %w", suite, err)
	}
	sig, sigErr := s.GetSmall(ctx, base+"Release.gpg", 1<<20)
	if sigErr != nil && !s.Insecure {
		return nil, fmt.Errorf("suite %s: the Release has no signature: %w", suite, sigErr)
	}
	if err := atomicfile.WriteFile(detached, rel, 0o644); err != nil {
		return nil, err
	}
	if sigErr == nil {
		if err := atomicfile.WriteFile(detachedSig, sig, 0o644); err != nil {
			return nil, err
		}
	}
	text, err := s.verifyDetached(ctx, detached, detachedSig)
	if err != nil {
		os.Remove(detached)
		os.Remove(detachedSig)
	}
	return text, err
}

// signatureMode says how Release files are authenticated: "gpgv" (the default when gpgv and
// the keyring exist), "none" (Insecure, or gpgv/keyring missing: a warning is logged).
func (s *DebSource) signatureMode() string {
	if s.Insecure {
		return "none"
	}
	if _, err := exec.LookPath("gpgv"); err != nil {
		s.warnOnce("gpgv is not installed: Debian Release signatures are NOT verified (only the sha256 chain from Release to packages is); apt-get install gpgv")
		return "none"
	}
	if _, err := os.Stat(s.keyring()); err != nil {
		s.warnOnce("keyring " + s.keyring() + " is missing: Debian Release signatures are NOT verified; apt-get install debian-archive-keyring")
		return "none"
	}
	return "gpgv"
}

func (s *DebSource) warnOnce(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.warned == nil {
		s.warned = map[string]bool{}
	}
	if !s.warned[msg] {
		s.warned[msg] = true
		slog.Warn(msg)
	}
}

// verifyClearsigned checks an InRelease with gpgv and returns the signed text (only what the
// signature covers, as gpgv writes it).
func (s *DebSource) verifyClearsigned(ctx context.Context, path string) ([]byte, error) {
	if s.signatureMode() == "none" {
		return stripClearsign(path)
	}
	return s.gpgv(ctx, path, "", path)
}

func (s *DebSource) verifyDetached(ctx context.Context, release, sig string) ([]byte, error) {
	if s.signatureMode() == "none" {
		return os.ReadFile(release)
	}
	return s.gpgv(ctx, release, sig, sig)
}

// gpgv runs gpgv against the keyring. A signature by a key that is not in the keyring is
// tolerated when another one is good (Debian signs with several keys, older keyrings miss
// newer ones); a bad or revoked signature is not.
func (s *DebSource) gpgv(ctx context.Context, data, sig, shown string) ([]byte, error) {
	tmp, err := os.MkdirTemp(filepath.Dir(data), ".gpgv-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "signed-text")
	args := []string{"--status-fd", "1", "--keyring", s.keyring()}
	if sig == "" {
		args = append(args, "--output", out, data)
	} else {
		args = append(args, sig, data)
	}
	status, err := run.Command("gpgv", args...).Output(ctx)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	good, bad := 0, []string{}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "[GNUPG:]" {
			continue
		}
		switch f[1] {
		case "GOODSIG":
			good++
		case "BADSIG", "REVKEYSIG", "EXPKEYSIG", "EXPSIG":
			bad = append(bad, strings.Join(f[1:min(len(f), 3)], " "))
		}
	}
	if good == 0 || len(bad) > 0 {
		detail := strings.Join(bad, ", ")
		if detail == "" && err != nil {
			detail = err.Error()
		}
		return nil, &SignatureError{File: shown, Keyring: s.keyring(), Detail: detail}
	}
	if sig != "" {
		return os.ReadFile(data)
	}
	text, rerr := os.ReadFile(out)
	if rerr != nil || len(text) == 0 {
		return nil, &SignatureError{File: shown, Keyring: s.keyring(), Detail: "gpgv wrote no signed text"}
	}
	return text, nil
}

// stripClearsign returns the text of a clear-signed message without checking it.
func stripClearsign(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN PGP SIGNED MESSAGE-----")) {
		return data, nil
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	state := 0 // 0 armor header, 1 body
	for sc.Scan() {
		line := sc.Text()
		switch state {
		case 0:
			if line == "" {
				state = 1
			}
		case 1:
			if line == "-----BEGIN PGP SIGNATURE-----" {
				return out.Bytes(), nil
			}
			out.WriteString(strings.TrimPrefix(line, "- "))
			out.WriteByte('\n')
		}
	}
	return nil, fmt.Errorf("%s: clear-signed message without a signature block", path)
}

// parseRelease reads the fields of a Release file that matter here.
func parseRelease(text []byte) (*debRelease, error) {
	stanzas := deb822Stanzas(text)
	if len(stanzas) == 0 {
		return nil, errors.New("empty Release file")
	}
	f := stanzas[0]
	rel := &debRelease{
		suite:    f["suite"],
		codename: f["codename"],
		byHash:   strings.EqualFold(f["acquire-by-hash"], "yes"),
		files:    map[string]debFileSum{},
	}
	if d := f["date"]; d != "" {
		rel.date, _ = parseReleaseTime(d)
	}
	if d := f["valid-until"]; d != "" {
		t, err := parseReleaseTime(d)
		if err != nil {
			return nil, fmt.Errorf("Valid-Until %q: %w", d, err)
		}
		rel.validUntil = t
	}
	sums, ok := f["sha256"]
	if !ok {
		return nil, errors.New("no SHA256 field: the archive is too old or not a Debian archive")
	}
	for _, line := range strings.Split(sums, "\n") {
		fs := strings.Fields(line)
		if len(fs) != 3 {
			continue
		}
		size, err := strconv.ParseInt(fs[1], 10, 64)
		if err != nil || !ValidSHA256(fs[0]) {
			return nil, fmt.Errorf("malformed SHA256 line %q", line)
		}
		rel.files[fs[2]] = debFileSum{sha256: fs[0], size: size}
	}
	return rel, nil
}

func parseReleaseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("not an RFC 1123 date")
}

// packagesIndex loads one component's Packages for arch, checked against the Release.
func (s *DebSource) packagesIndex(ctx context.Context, mirror, suite string, rel *debRelease, component, arch string) ([]debPkg, error) {
	dir := component + "/binary-" + arch + "/"
	// gzip first: Go decompresses it several times faster than xz, and it is cached anyway.
	for _, name := range []string{"Packages.gz", "Packages.xz", "Packages"} {
		sum, ok := rel.files[dir+name]
		if !ok {
			continue
		}
		if pkgs, ok := s.readParsed(sum.sha256, arch); ok {
			return pkgs, nil
		}
		base := mirror + "/dists/" + suite + "/" + dir
		var path string
		var err error
		if rel.byHash {
			path, err = s.Downloader.Fetch(ctx, s.Cache, base+"by-hash/SHA256/"+sum.sha256, sum.sha256, sum.size)
		}
		var he *HTTPError
		if !rel.byHash || (errors.As(err, &he) && he.StatusCode == http.StatusNotFound) {
			path, err = s.Downloader.Fetch(ctx, s.Cache, base+name, sum.sha256, sum.size)
		}
		if errors.As(err, &he) && he.StatusCode == http.StatusNotFound && name != "Packages" {
			continue // listed but not published (Debian lists uncompressed files it does not serve)
		}
		if err != nil {
			return nil, fmt.Errorf("suite %s: %w", suite, err)
		}
		pkgs, err := readPackagesFile(path, name, arch)
		if err != nil {
			return nil, fmt.Errorf("suite %s %s%s: %w", suite, dir, name, err)
		}
		s.writeParsed(sum.sha256, arch, pkgs)
		return pkgs, nil
	}
	return nil, fmt.Errorf("suite %s has no %sPackages index for component %q and architecture %q; check base.components and base.arch", suite, dir, component, arch)
}

func readPackagesFile(path, name, arch string) ([]debPkg, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReaderSize(f, 1<<20)
	switch {
	case strings.HasSuffix(name, ".gz"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(name, ".xz"):
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		r = xr
	}
	return parsePackages(r, arch)
}

// parsePackages reads a Packages index, keeping binary stanzas for arch or "all".
func parsePackages(r io.Reader, arch string) ([]debPkg, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var out []debPkg
	var cur debPkg
	flush := func() error {
		if cur.Name == "" {
			return nil
		}
		if cur.Version == "" || cur.Filename == "" || !ValidSHA256(cur.SHA256) {
			return fmt.Errorf("package %s: stanza without Version, Filename or SHA256", cur.Name)
		}
		if cur.Arch == arch || cur.Arch == "all" {
			out = append(out, cur)
		}
		cur = debPkg{}
		return nil
	}
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A very long line (a Description); skip the rest of it.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			continue
		}
		if len(line) > 0 {
			line = bytes.TrimRight(line, "\r\n")
			if len(line) == 0 {
				if ferr := flush(); ferr != nil {
					return nil, ferr
				}
			} else if line[0] != ' ' && line[0] != '\t' {
				if k, v, ok := bytes.Cut(line, []byte(":")); ok {
					v = bytes.TrimSpace(v)
					switch string(k) {
					case "Package":
						cur.Name = string(v)
					case "Version":
						cur.Version = string(v)
					case "Architecture":
						cur.Arch = string(v)
					case "Filename":
						cur.Filename = string(v)
					case "SHA256":
						cur.SHA256 = string(v)
					case "Size":
						cur.Size, _ = strconv.ParseInt(string(v), 10, 64)
					}
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// suiteIndex returns the packages of a suite over the source's components, loading it once
// per process.
func (s *DebSource) suiteIndex(ctx context.Context, mirror, suite, arch string) (*debIndex, error) {
	key := mirror + "\x00" + suite + "\x00" + arch
	s.mu.Lock()
	if idx, ok := s.indexes[key]; ok {
		s.mu.Unlock()
		return idx, nil
	}
	s.mu.Unlock()
	start := time.Now()
	rel, err := s.release(ctx, mirror, suite)
	if err != nil {
		return nil, err
	}
	idx := &debIndex{suite: suite, pkgs: map[string][]debPkg{}}
	for _, comp := range s.components() {
		pkgs, err := s.packagesIndex(ctx, mirror, suite, rel, comp, arch)
		if err != nil {
			return nil, err
		}
		for _, p := range pkgs {
			idx.pkgs[p.Name] = append(idx.pkgs[p.Name], p)
		}
	}
	slog.Debug("deb index loaded", "suite", suite, "packages", len(idx.pkgs), "release", rel.date.Format(time.DateOnly), "signature", s.signatureMode(), "elapsed", time.Since(start).Round(time.Millisecond))
	s.mu.Lock()
	if s.indexes == nil {
		s.indexes = map[string]*debIndex{}
	}
	s.indexes[key] = idx
	s.mu.Unlock()
	return idx, nil
}

// Parsed indexes: decompressing and parsing bookworm's main Packages (12 MB gzip, 50 MB of
// text) costs about half a second of CPU, so the packages kept for an architecture are
// stored as gob in scratch/deb-parsed, named by the sha256 the verified Release lists for the
// compressed index. A new index has a new sha256; a stale or damaged file is just re-parsed.

const parsedFormat = "kubebake-deb-parsed-v1"

type parsedIndex struct {
	Format string
	Pkgs   []debPkg
}

func (s *DebSource) parsedPath(indexSHA, arch string) string {
	return filepath.Join(s.Cache.Dir(), scratchDir, "deb-parsed", indexSHA+"-"+arch+".gob")
}

func (s *DebSource) readParsed(indexSHA, arch string) ([]debPkg, bool) {
	f, err := os.Open(s.parsedPath(indexSHA, arch))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var p parsedIndex
	if err := gob.NewDecoder(bufio.NewReaderSize(f, 1<<20)).Decode(&p); err != nil || p.Format != parsedFormat {
		return nil, false
	}
	return p.Pkgs, true
}

func (s *DebSource) writeParsed(indexSHA, arch string, pkgs []debPkg) {
	dir, err := s.Cache.Scratch("deb-parsed")
	if err != nil {
		return
	}
	_ = dir
	err = atomicfile.Write(s.parsedPath(indexSHA, arch), 0o644, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		if err := gob.NewEncoder(bw).Encode(parsedIndex{Format: parsedFormat, Pkgs: pkgs}); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		slog.Debug("cannot keep the parsed Debian index", "err", err)
	}
}
