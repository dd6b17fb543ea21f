package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
)

// rootfsFormat versions the way the builder calls mmdebstrap; bump it to invalidate every
// cached rootfs tarball when the arguments change in a way the key does not show.
const rootfsFormat = "kubebake-rootfs-v1"

// RootfsSpec is everything a rootfs tarball is made of. Its key (RootfsSpec.Key) leaves out
// the mirror: the same pinned packages from another mirror are the same packages.
type RootfsSpec struct {
	Release    string   `json:"release"`
	Arch       string   `json:"arch"`
	Variant    string   `json:"variant"`
	Suites     []string `json:"suites"`
	Components []string `json:"components"`
	// Packages are "name=version", sorted: the recipe's named packages, or with a pinned
	// package set (hermetic) the whole set.
	Packages []string `json:"packages"`
	// PackageSHA256 are the sha256 of the pinned set's files in the order of Packages; none
	// when the lock has no set (the rootfs then comes from the mirror).
	PackageSHA256 []string `json:"packageSha256,omitempty"`
	// Options are the further mmdebstrap arguments (dpkg path excludes, ...).
	Options []string `json:"options"`
	// Epoch is the lock's SOURCE_DATE_EPOCH: it is in every mtime of the tarball.
	Epoch int64 `json:"sourceDateEpoch"`
	// Tool is "mmdebstrap X.Y.Z" as the host reports it.
	Tool   string `json:"tool"`
	Format string `json:"format"`
	// Mirror is where packages come from; not part of the key. It may carry credentials
	// (https://user:password@host/debian): mmdebstrap gets them in an apt auth.conf file,
	// never in its arguments, and they reach no log, error or image (mirrorAuth).
	Mirror string `json:"-"`
	// SecurityMirror serves the "-security" suites (artifacts.IsSecuritySuite); not part of
	// the key. Empty: Mirror.
	SecurityMirror string `json:"-"`
	// Recipe is the recipe's file or name, for messages; not part of the key either.
	Recipe string `json:"-"`
	// debs are the pinned files in the cache, for the local archive (hermetic only).
	debs []localDeb
}

// Hermetic says whether the rootfs is made from the lock's pinned package set alone.
func (s RootfsSpec) Hermetic() bool { return len(s.PackageSHA256) > 0 }

// Key is the hex sha256 of the spec without its mirror.
func (s RootfsSpec) Key() string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// dpkgExcludes keep documentation, man pages and translations out of the image (copyright
// files stay): a node is not read by people, and a smaller tarball is a faster build.
var dpkgExcludes = []string{
	"--dpkgopt=path-exclude=/usr/share/man/*",
	"--dpkgopt=path-exclude=/usr/share/info/*",
	"--dpkgopt=path-exclude=/usr/share/locale/*",
	"--dpkgopt=path-include=/usr/share/locale/locale.alias",
	"--dpkgopt=path-exclude=/usr/share/doc/*",
	"--dpkgopt=path-include=/usr/share/doc/*/copyright",
	"--dpkgopt=path-exclude=/usr/share/lintian/*",
}

func recipeFile(r *recipes.Recipe) string {
	if r.File != "" {
		return r.File
	}
	return r.Name
}

// NewRootfsSpec derives the rootfs spec of a recipe and its lock. With a pinned package set
// (l.Packages) debs must hold each file's cache path by sha256 (artifacts.FetchPackages).
func NewRootfsSpec(ctx context.Context, r *recipes.Recipe, l *recipes.Lock, mirror, securityMirror string, debs map[string]string) (RootfsSpec, error) {
	pkgs, err := recipes.RootfsPackages(r, l)
	if err != nil {
		return RootfsSpec{}, err
	}
	spec, err := recipeSpec(ctx, r, pkgs, mirror, securityMirror)
	if err != nil {
		return RootfsSpec{}, err
	}
	spec.Epoch = l.SourceDateEpoch
	if len(l.Packages) == 0 {
		return spec, nil
	}
	set := map[string]bool{}
	spec.Packages = nil
	for _, p := range l.Packages {
		path, ok := debs[p.SHA256]
		if !ok {
			return RootfsSpec{}, fmt.Errorf("%s %s of the lock's package set was not fetched into the cache; run \"kubebake fetch %s\"", p.Name, p.Version, recipeFile(r))
		}
		set[p.Name+"="+p.Version] = true
		spec.Packages = append(spec.Packages, p.Name+"="+p.Version)
		spec.PackageSHA256 = append(spec.PackageSHA256, p.SHA256)
		spec.debs = append(spec.debs, localDeb{LockedPackage: p, Path: path})
	}
	var outside []string
	for _, p := range pkgs {
		if !set[p] {
			outside = append(outside, strings.Replace(p, "=", " ", 1))
		}
	}
	if len(outside) > 0 {
		return RootfsSpec{}, fmt.Errorf("the lock's package set lacks %s, which the recipe names; run \"kubebake lock %s\"", strings.Join(outside, ", "), recipeFile(r))
	}
	return spec, nil
}

// recipeSpec is the rootfs spec of r with includes, without an epoch or a package set: what
// the build and lock's simulated run (ResolvePackageSet) share, so that both ask mmdebstrap
// the same question.
func recipeSpec(ctx context.Context, r *recipes.Recipe, includes []string, mirror, securityMirror string) (RootfsSpec, error) {
	tool, err := mmdebstrapVersion(ctx)
	if err != nil {
		return RootfsSpec{}, err
	}
	return RootfsSpec{
		Release: r.Base.Release, Arch: r.Base.Arch, Variant: "minbase",
		Suites: r.Base.Suites, Components: r.Base.Components,
		Packages: includes, Options: dpkgExcludes, Tool: tool, Format: rootfsFormat,
		Mirror: strings.TrimRight(mirror, "/"), SecurityMirror: strings.TrimRight(securityMirror, "/"),
		Recipe: recipeFile(r),
	}, nil
}

func mmdebstrapVersion(ctx context.Context) (string, error) {
	out, err := run.Command("mmdebstrap", "--version").Output(ctx)
	if err != nil {
		if run.IsNotFound(err) {
			return "", fmt.Errorf("mmdebstrap is not installed: run \"make deps\" (or apt-get install mmdebstrap)")
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// commonArgs are the mmdebstrap arguments both ways of making a rootfs share: mode, variant,
// format, architecture, the included packages and the dpkg options.
func (s RootfsSpec) commonArgs() []string {
	args := []string{
		"--mode=unshare", "--variant=" + s.Variant, "--format=tar",
		"--architectures=" + s.Arch,
		"--include=" + strings.Join(s.Packages, ","),
	}
	return append(args, s.Options...)
}

// mmdebstrapArgs is the command line that builds the tarball at out from the mirror. The mirror
// goes in without its credentials; authDir, when set, is the folder of the apt auth.conf file
// that holds them (writeMirrorAuth), which a setup hook hands to apt. Neither changes the
// tarball: the key is the same with or without credentials.
func (s RootfsSpec) mmdebstrapArgs(out, authDir string) []string {
	args := s.commonArgs()
	if authDir != "" {
		args = append(args, "--setup-hook="+aptAuthHook(authDir))
	}
	args = append(args, s.Release, out)
	mirror := redact.StripUserinfo(s.Mirror)
	for _, suite := range s.Suites {
		m := mirror
		if artifacts.IsSecuritySuite(suite) && s.SecurityMirror != "" {
			m = s.SecurityMirror
		}
		args = append(args, fmt.Sprintf("deb %s %s %s", m, suite, strings.Join(s.Components, " ")))
	}
	return args
}

// hermeticArgs is the command line that builds the tarball at out from the local archive at
// archiveURL (localarchive.go): every pinned package is included, so apt's priorities
// choose nothing.
func (s RootfsSpec) hermeticArgs(out, archiveURL string) []string {
	return append(s.commonArgs(), s.Release, out, fmt.Sprintf("deb [trusted=yes] %s %s main", archiveURL, s.Release))
}

// mirrorAuthFile is the apt auth.conf.d file (in a private folder of the build, never in the
// rootfs) that holds the mirror's credentials.
const mirrorAuthFile = "kubebake-mirror.conf"

// writeMirrorAuth writes the credentials of spec.Mirror, if it has any, as an apt_auth.conf(5)
// file 0600 in a new 0700 folder auth.conf.d under dir, and returns that folder ("" for a
// mirror without credentials). The machine line names the scheme, host, port and path, so
// apt sends them to this mirror only, over http too (a machine without a scheme is https only).
func writeMirrorAuth(dir string, mirror string) (string, error) {
	clean, user, password, ok := redact.Userinfo(mirror)
	if !ok {
		return "", nil
	}
	switch {
	case user == "":
		return "", errors.New("base.mirror: the URL's credentials have no user name (https://USER:PASSWORD@host/...)")
	case strings.ContainsAny(user+password, " \t\r\n"):
		return "", errors.New("base.mirror: the user name or password holds white space, which apt's auth.conf cannot carry")
	}
	u, err := url.Parse(clean)
	if err != nil {
		return "", fmt.Errorf("base.mirror: %w", err)
	}
	authDir := filepath.Join(dir, "auth.conf.d")
	if strings.ContainsAny(authDir, "\"'\n\\") {
		return "", fmt.Errorf("the rootfs cache path %s holds a quote or backslash: apt cannot be given the mirror's credentials there", dir)
	}
	if err := os.Mkdir(authDir, 0o700); err != nil {
		return "", err
	}
	machine := u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/")
	entry := fmt.Sprintf("machine %s\nlogin %s\n", machine, user)
	if password != "" {
		entry += "password " + password + "\n"
	}
	if err := os.WriteFile(filepath.Join(authDir, mirrorAuthFile), []byte(entry), 0o600); err != nil {
		return "", err
	}
	return authDir, nil
}

// aptAuthHook points the apt that mmdebstrap runs (outside the chroot, with the config file
// mmdebstrap writes and names in MMDEBSTRAP_APT_CONFIG) at authDir for its auth.conf.d. Nothing
// is written into the chroot, so no credential can end up in the tarball.
func aptAuthHook(authDir string) string {
	return `test -n "$MMDEBSTRAP_APT_CONFIG" && printf '%s\n' 'Dir::Etc::netrcparts "` + authDir + `";' >> "$MMDEBSTRAP_APT_CONFIG"`
}

// RootfsStore finds and keeps rootfs tarballs; artifacts.Cache is one.
type RootfsStore interface {
	Scratch(name string) (string, error)
	Lock(ctx context.Context, name string) (unlock func(), err error)
	// FetchRootfs fills dst with the tarball of key from a shared cache (artifacts.Remote),
	// checked against the sha256 recorded with it, and reports whether it did; false when
	// there is no shared cache or it lacks the tarball.
	FetchRootfs(ctx context.Context, key, dst string) (bool, error)
	// ShareRootfs offers a tarball just built to the shared cache, if there is one. Its
	// failures are the store's to report: the tarball is here, the build goes on.
	ShareRootfs(ctx context.Context, key, path string)
}

// rootfsTarball returns the cached tarball for spec: from this machine's cache, else from the
// shared cache, else built with mmdebstrap (and then shared). The second return value says
// whether it came from a cache.
// mirrorCheck (nil: none) runs before mmdebstrap, so a mirror that dropped locked versions is
// reported by name before a minute of apt work.
func rootfsTarball(ctx context.Context, store RootfsStore, spec RootfsSpec, mirrorCheck func(context.Context) error, log func(string)) (string, bool, error) {
	dir, err := store.Scratch("rootfs")
	if err != nil {
		return "", false, err
	}
	key := spec.Key()
	final := filepath.Join(dir, key+".tar")
	if _, err := os.Stat(final); err == nil {
		return final, true, nil
	}
	unlock, err := store.Lock(ctx, "rootfs-"+key[:16])
	if err != nil {
		return "", false, err
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final, true, nil // another build made it while we waited
	}
	specJSON, _ := json.MarshalIndent(spec, "", "  ")
	if ok, err := store.FetchRootfs(ctx, key, final); err != nil {
		return "", false, err
	} else if ok {
		// The spec beside the tarball, as a local build leaves it: it says what the key stands for.
		if err := os.WriteFile(filepath.Join(dir, key+".json"), specJSON, 0o644); err != nil {
			return "", false, err
		}
		return final, true, nil
	}
	if spec.Mirror == "" && !spec.Hermetic() {
		return "", false, errors.New("no Debian mirror: set base.mirror in the recipe or configure apt on this machine")
	}
	if mirrorCheck != nil && !spec.Hermetic() {
		if err := mirrorCheck(ctx); err != nil {
			return "", false, err
		}
	}
	// mmdebstrap works in a private temporary folder beside the cache entry so that an
	// interrupted build leaves nothing outside it; both are removed on failure.
	tmpDir, err := os.MkdirTemp(dir, ".build-"+key[:16]+"-")
	if err != nil {
		return "", false, err
	}
	defer os.RemoveAll(tmpDir)
	tmpTar := filepath.Join(tmpDir, "rootfs.tar")
	var args []string
	if spec.Hermetic() {
		archive := filepath.Join(tmpDir, "archive")
		if err := writeLocalArchive(ctx, archive, spec.Release, spec.Arch, spec.Epoch, spec.debs); err != nil {
			return "", false, err
		}
		url, stop, err := serveLocalArchive(archive)
		if err != nil {
			return "", false, err
		}
		defer stop()
		args = spec.hermeticArgs(tmpTar, url)
	} else {
		authDir, err := writeMirrorAuth(tmpDir, spec.Mirror)
		if err != nil {
			return "", false, err
		}
		args = spec.mmdebstrapArgs(tmpTar, authDir)
	}
	red := mirrorRedactor(spec.Mirror)
	cmd := run.Command("mmdebstrap", args...)
	cmd.Redact = red
	cmd.Env = []string{
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(spec.Epoch, 10),
		"TMPDIR=" + tmpDir,
		"LC_ALL=C.UTF-8",
	}
	lw := &lineWriter{fn: func(line string) {
		if log != nil {
			log(red.String(redactURLs(line)))
		}
	}}
	cmd.Stderr = lw
	slog.Debug("rootfs", "spec", string(specJSON))
	err = cmd.Run(ctx)
	lw.Flush()
	if err != nil {
		return "", false, red.Error(explainMmdebstrap(err, spec))
	}
	if err := os.WriteFile(filepath.Join(dir, key+".json"), specJSON, 0o644); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmpTar, final); err != nil {
		return "", false, err
	}
	store.ShareRootfs(ctx, key, final)
	return final, false, nil
}

var (
	aptNoVersion = regexp.MustCompile(`Version '([^']+)' for '([^']+)' was not found`)
	aptNoPackage = regexp.MustCompile(`Unable to locate package ([^\s]+)`)
	aptHTTPError = regexp.MustCompile(`(?m)(E: Failed to fetch [^\n]*|Err:\d+ [^\n]*\n[^\n]*)`)
	aptRelease   = regexp.MustCompile(`The repository '[^']*' does not have a Release file`)
)

// explainMmdebstrap turns apt's words in mmdebstrap's stderr into what to do.
func explainMmdebstrap(err error, spec RootfsSpec) error {
	var re *run.Error
	stderr := ""
	if errors.As(err, &re) {
		stderr = re.Stderr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	stderr = mirrorRedactor(spec.Mirror).String(stderr)
	switch {
	case aptNoVersion.MatchString(stderr):
		var gone []string
		for _, m := range aptNoVersion.FindAllStringSubmatch(stderr, -1) {
			gone = append(gone, m[2]+" "+m[1])
		}
		return fmt.Errorf("the Debian mirror no longer has %s, which the lock pins; run \"kubebake lock --update %s\" to move to what the mirror has", strings.Join(gone, ", "), spec.Recipe)
	case aptNoPackage.MatchString(stderr):
		m := aptNoPackage.FindStringSubmatch(stderr)
		return fmt.Errorf("package %s does not exist in the suites %s; fix base.packages in the recipe", m[1], strings.Join(spec.Suites, ", "))
	case aptRelease.MatchString(stderr), aptHTTPError.MatchString(stderr):
		detail := strings.TrimSpace(aptHTTPError.FindString(stderr))
		if detail == "" {
			detail = aptRelease.FindString(stderr)
		}
		return fmt.Errorf("the Debian mirror refused a download (%s); check base.mirror or this machine's apt sources", strings.Join(strings.Fields(redactURLs(detail)), " "))
	}
	if re != nil {
		// The command line and apt's words name the mirror: show neither its host nor its
		// credentials.
		err = &run.Error{Line: redactURLs(re.Line), Err: re.Err, Stderr: redactURLs(stderr)}
	}
	return fmt.Errorf("mmdebstrap: %w", err)
}

// mirrorRedactor hides a mirror URL's credentials (the password as written and decoded) in
// mmdebstrap's command line, stderr and errors.
func mirrorRedactor(mirror string) *redact.Redactor {
	return redact.New(redact.URLSecrets(mirror)...)
}

var urlRE = regexp.MustCompile(`[a-z]+://[^/\s]+`)

// redactURLs replaces URL hosts by "<mirror>": errors and logs must not carry mirror names.
func redactURLs(s string) string { return urlRE.ReplaceAllString(s, "<mirror>") }

// lineWriter calls fn for each complete line written to it.
type lineWriter struct {
	fn  func(string)
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		if w.fn != nil {
			w.fn(string(w.buf[:i]))
		}
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) Flush() {
	if len(w.buf) > 0 && w.fn != nil {
		w.fn(string(w.buf))
	}
	w.buf = nil
}
