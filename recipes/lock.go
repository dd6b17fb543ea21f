package recipes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/kubebake/kubebake/artifacts/gomain"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/redact"
)

// Lock pins every input of a recipe to an exact version and sha256. It is written as
// <recipe>.lock next to the recipe: sorted, stable JSON so that a diff shows what moved.
type Lock struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Recipe     string `json:"recipe"`
	// InputsDigest is the sha256 of the recipe's inputs (Recipe.Inputs) when it was locked;
	// build --locked refuses a recipe whose inputs no longer hash to it.
	InputsDigest string `json:"inputsDigest"`
	// SourceDateEpoch fixes every timestamp in the image; it changes only when an input does.
	SourceDateEpoch int64 `json:"sourceDateEpoch"`
	// Artifacts are sorted by Name.
	Artifacts []LockedArtifact `json:"artifacts"`
	// Packages is the rootfs's whole Debian package set: the named packages (RootfsPackages)
	// and everything apt installs with them, each .deb pinned by sha256, sorted by Name. The
	// rootfs is built from these files alone, so the lock rebuilds after the mirror has moved
	// on. A lock written before kubebake pinned the set has none: its rootfs comes from the
	// mirror.
	Packages []LockedPackage `json:"packages,omitempty"`
}

// LockedPackage is one .deb of the rootfs, as the mirror's signed Packages index lists it.
type LockedPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	// Suite is where the lock found it; URL is its pool path relative to the mirror root.
	Suite  string `json:"suite"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Artifact is the package as a deb artifact named "package/<name>", for the code that fetches,
// checks and compares artifacts.
func (p LockedPackage) Artifact() LockedArtifact {
	return LockedArtifact{Name: "package/" + p.Name, Kind: InputDeb, Source: SourceDeb, Version: p.Version,
		Package: p.Name + "=" + p.Version, URL: p.URL, Suite: p.Suite, SHA256: p.SHA256, Size: p.Size}
}

// RootfsPackages lists the Debian packages a recipe names for its rootfs as "name=version"
// from the lock: BootPackages, the kernel, runtime.packages and base.packages, sorted. A
// package without a lock entry is an error: every package the recipe names is pinned.
func RootfsPackages(r *Recipe, l *Lock) ([]string, error) {
	pinned := map[string]string{}
	for _, a := range l.Artifacts {
		if a.Kind == InputDeb {
			pinned[strings.TrimPrefix(a.Name, "deb/")] = a.Version
		}
	}
	names := append(append(append(BootPackages(), r.Base.Kernel), r.Runtime.Packages...), r.Base.Packages...)
	seen := map[string]bool{}
	var out, missing []string
	for _, n := range names {
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		v, ok := pinned[n]
		if !ok {
			missing = append(missing, n)
			continue
		}
		out = append(out, n+"="+v)
	}
	if len(missing) > 0 {
		file := r.File
		if file == "" {
			file = r.Name
		}
		return nil, fmt.Errorf("the lock pins no version of %s; run \"kubebake lock %s\"", strings.Join(missing, ", "), file)
	}
	sort.Strings(out)
	return out, nil
}

// LockedArtifact is one pinned input: a binary or a Debian package.
type LockedArtifact struct {
	Name    string `json:"name"`    // "kubelet", "etcd", "cni/bridge", "deb/containerd"
	Kind    string `json:"kind"`    // "binary" or "deb"
	Source  string `json:"source"`  // gomod, url, deb
	Version string `json:"version"` // exact: v1.35.4, 1.6.20~ds1-1+deb12u1
	// gomod: the module at its version, its go.sum hash, the main package and the toolchain.
	// For a main kubebake provides, Main names it (artifacts/gomain/<Main>) and MainSHA256 is
	// the sha256 of its source, instead of Package.
	Module     string `json:"module,omitempty"`
	ModuleSum  string `json:"moduleSum,omitempty"`
	Package    string `json:"package,omitempty"`
	Main       string `json:"main,omitempty"`
	MainSHA256 string `json:"mainSha256,omitempty"`
	Toolchain  string `json:"toolchain,omitempty"`
	// url: the upstream URL (before mirror rewrites). deb: the pool path relative to the
	// mirror root (never a host name), and the suite it was found in.
	URL   string `json:"url,omitempty"`
	Suite string `json:"suite,omitempty"`
	// url with source.member: the file taken out of the downloaded .tar.gz (the member
	// template expanded, "cri-dockerd/cri-dockerd"). SHA256 and Size are then the tarball's,
	// what the URL serves; the fetched artifact is the member.
	Member string `json:"member,omitempty"`
	// image: the reference the archive names the image by (kubebake.local/busybox:1.35.0)
	// and its manifest digest; SHA256 is the archive's. An archive image (source archive)
	// also has SourceSHA256, the sha256 of the recipe's archive file it was read from, and
	// Package, that file's path relative to the recipe.
	Ref          string `json:"ref,omitempty"`
	Digest       string `json:"digest,omitempty"`
	SourceSHA256 string `json:"sourceSha256,omitempty"`
	SHA256       string `json:"sha256"`
	Size         int64  `json:"size"`
}

// LockPath is where a recipe's lock lives: "x.yaml" -> "x.lock" beside it. An embedded
// recipe's name ("debian-12") maps to its file in the source tree, recipes/debian-12.lock.
func LockPath(recipePath string) string {
	for _, ext := range []string{".yaml", ".yml"} {
		if s, ok := strings.CutSuffix(recipePath, ext); ok {
			return s + ".lock"
		}
	}
	if _, ok := embeddedName(recipePath); ok && !strings.ContainsRune(recipePath, '/') {
		if _, err := os.Stat(recipePath); err != nil {
			return path.Join(EmbeddedDir, recipePath+".lock")
		}
	}
	return recipePath + ".lock"
}

// MarshalLock renders a lock the one way it is written: artifacts sorted by name, indented
// JSON, no HTML escaping, trailing newline. Equal locks give equal bytes.
func MarshalLock(l *Lock) ([]byte, error) {
	c := *l
	if c.APIVersion == "" {
		c.APIVersion = APIVersion
	}
	if c.Kind == "" {
		c.Kind = KindLock
	}
	c.Artifacts = slices.Clone(l.Artifacts)
	if c.Artifacts == nil {
		c.Artifacts = []LockedArtifact{}
	}
	sort.SliceStable(c.Artifacts, func(i, j int) bool { return c.Artifacts[i].Name < c.Artifacts[j].Name })
	c.Packages = slices.Clone(l.Packages)
	sort.SliceStable(c.Packages, func(i, j int) bool { return c.Packages[i].Name < c.Packages[j].Name })
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteLock writes the lock atomically: a crash leaves the old lock or the new, never half.
func WriteLock(path string, l *Lock) error {
	data, err := MarshalLock(l)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}

// ReadLock reads a lock file strictly (unknown fields are an error: a lock is only ever
// written by kubebake). A lock that cannot be read or parsed, or that holds git merge
// conflict markers, is an error naming the file and the fix: nothing guesses what it pinned.
func ReadLock(path string) (*Lock, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no lock file; run \"kubebake lock\" on the recipe", path)
		}
		return nil, fmt.Errorf("reading the lock: %w; %s", err, unreadableLockFix(path))
	}
	return parseLock(path, data)
}

// ReadRecipeLock reads the lock that belongs to r: LockPath(r.File) on disk, or for an
// embedded recipe the lock embedded beside it when there is none on disk.
func ReadRecipeLock(r *Recipe) (*Lock, error) {
	p := LockPath(r.File)
	l, err := ReadLock(p)
	if err != nil && r.Embedded {
		if _, statErr := os.Stat(p); errors.Is(statErr, fs.ErrNotExist) {
			if data, embErr := EmbeddedFile(path.Base(p)); embErr == nil {
				return parseLock(p, data)
			}
		}
	}
	return l, err
}

func parseLock(name string, data []byte) (*Lock, error) {
	if line, marker, ok := conflictMarker(data); ok {
		return nil, fmt.Errorf("%s: unresolved git merge conflict (line %d starts with %q); resolve the merge conflict in %s (or take one side) and run \"kubebake lock\" again",
			name, line, marker, name)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var l Lock
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%s: not a kubebake lock: %v; %s", name, err, unreadableLockFix(name))
	}
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return nil, fmt.Errorf("%s: not a kubebake lock: %q after the lock object; %s", name, firstLine(rest), unreadableLockFix(name))
	}
	if l.Kind != KindLock || l.APIVersion != APIVersion {
		return nil, fmt.Errorf("%s: apiVersion %q kind %q: want %s %s; %s", name, l.APIVersion, l.Kind, APIVersion, KindLock, unreadableLockFix(name))
	}
	return &l, nil
}

// unreadableLockFix is the advice for a lock that exists but cannot be used.
func unreadableLockFix(name string) string {
	return fmt.Sprintf("restore %s from version control, or run \"kubebake lock --update\" to re-pin every input from scratch", name)
}

// firstLine is b up to its first newline, at most 40 bytes, for messages.
func firstLine(b []byte) string {
	b, _, _ = bytes.Cut(b, []byte("\n"))
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

// conflictMarkers start the lines git writes into a file it could not merge.
var conflictMarkers = []string{"<<<<<<<", "|||||||", "=======", ">>>>>>>"}

// conflictMarker finds the first line that starts with a git conflict marker; line counts
// from 1. No line of a lock kubebake wrote starts with one.
func conflictMarker(data []byte) (line int, marker string, ok bool) {
	for i, l := range bytes.Split(data, []byte("\n")) {
		for _, m := range conflictMarkers {
			if rest, found := bytes.CutPrefix(l, []byte(m)); found && (len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\r') {
				return i + 1, m, true
			}
		}
	}
	return 0, "", false
}

// InputsDigest is "sha256:<hex>" of what the lock answers for: the recipe's inputs (Inputs,
// canonical JSON sorted by name) and the node settings no artifact shows (sysctls, modules,
// the secure defaults it relaxes).
// It is stored in the lock so that any change to what the recipe asks for is seen, including
// ones no artifact shows (suites, mirror, arch, a sysctl), and images of different settings
// never share a lock hash.
func (r *Recipe) InputsDigest() string {
	var relax []string
	if r.Security != nil {
		relax = slices.Sorted(slices.Values(r.Security.Relax))
	}
	return inputsDigest(r.Inputs(), r.Sysctls, r.Modules, relax)
}

// inputsDigest hashes inputs (in any order) and the node settings. relax is left out when
// empty, so locks of recipes that relax nothing keep their digest.
func inputsDigest(inputs []Input, sysctls map[string]string, modules, relax []string) string {
	in := slices.Clone(inputs)
	for i := range in {
		// A mirror's credentials are not what the lock answers for: changing a password
		// leaves the lock as it is, and the lock holds no trace of it.
		in[i].Mirror = redact.StripUserinfo(in[i].Mirror)
	}
	sort.SliceStable(in, func(i, j int) bool { return in[i].Name < in[j].Name })
	doc := struct {
		Inputs  []Input           `json:"inputs"`
		Sysctls map[string]string `json:"sysctls,omitempty"` // encoding/json sorts map keys
		Modules []string          `json:"modules,omitempty"`
		Relax   []string          `json:"relax,omitempty"`
	}{in, sysctls, modules, relax}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		panic(err) // plain strings, maps and slices always encode
	}
	sum := sha256.Sum256(buf.Bytes())
	return "sha256:" + hex.EncodeToString(sum[:])
}

// LockHash is the hex sha256 of the lock's file bytes (MarshalLock). Image UUIDs and the
// image's release file derive from it, so equal locks give equal images.
func LockHash(l *Lock) string {
	data, err := MarshalLock(l)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Drift is one way a lock no longer matches its recipe.
type Drift struct {
	Name   string `json:"name,omitempty"` // the input, "" for the lock as a whole
	What   string `json:"what"`           // DriftAdded, DriftRemoved, DriftChanged, DriftDigest, DriftRecipe
	Detail string `json:"detail"`
}

// Kinds of drift.
const (
	DriftAdded   = "added"   // the recipe has an input the lock lacks
	DriftRemoved = "removed" // the lock pins something the recipe no longer asks for
	DriftChanged = "changed" // same input, different kind, source or version constraint
	DriftDigest  = "digest"  // no artifact differs, but the inputs do (suites, mirror, arch, sysctls, modules)
	DriftRecipe  = "recipe"  // the lock belongs to another recipe
)

// DriftError says exactly what drifted between a recipe and its lock, on one line.
type DriftError struct {
	LockFile, RecipeFile string
	Drifts               []Drift
}

// maxDriftsShown keeps the message readable when, say, a suite change touches every package.
const maxDriftsShown = 6

func (e *DriftError) Error() string {
	var parts []string
	for i, d := range e.Drifts {
		if i == maxDriftsShown {
			parts = append(parts, fmt.Sprintf("and %d more", len(e.Drifts)-i))
			break
		}
		if d.Name != "" {
			parts = append(parts, d.Name+" "+d.Detail)
		} else {
			parts = append(parts, d.Detail)
		}
	}
	return fmt.Sprintf("%s does not match %s: %s; run \"kubebake lock %s\"", e.LockFile, e.RecipeFile, strings.Join(parts, "; "), e.RecipeFile)
}

// CheckLock reports whether l still pins what r asks for. It returns nil or a *DriftError
// listing every difference, so `build --locked` can say exactly what moved.
func CheckLock(r *Recipe, l *Lock) error {
	var ds []Drift
	if l.Recipe != r.Name {
		ds = append(ds, Drift{What: DriftRecipe, Detail: fmt.Sprintf("the lock is for recipe %q, not %q", l.Recipe, r.Name)})
	}
	inputs := r.Inputs()
	arts := map[string]LockedArtifact{}
	for _, a := range l.Artifacts {
		arts[a.Name] = a
	}
	items := 0
	for _, in := range inputs {
		a, ok := arts[in.Name]
		if !ok {
			ds = append(ds, Drift{Name: in.Name, What: DriftAdded, Detail: "added"})
			items++
			continue
		}
		delete(arts, in.Name)
		d := artifactDrift(in, a)
		if d == "" && in.Source.Type == SourceArchive {
			d = archiveDrift(RecipeDir(r), in, a)
		}
		if d != "" {
			ds = append(ds, Drift{Name: in.Name, What: DriftChanged, Detail: d})
			items++
		}
	}
	for _, img := range r.BakedImages() {
		a, ok := arts[img.Name]
		delete(arts, img.Name)
		switch {
		case !ok:
			ds = append(ds, Drift{Name: img.Name, What: DriftAdded, Detail: "added"})
			items++
		case a.Kind != KindImage || a.Package != strings.Join(img.Inputs, ","):
			ds = append(ds, Drift{Name: img.Name, What: DriftChanged, Detail: fmt.Sprintf("is now built from %s, the lock has %s %s", strings.Join(img.Inputs, ","), a.Kind, a.Package)})
			items++
		}
	}
	for _, name := range sortedKeys(arts) {
		ds = append(ds, Drift{Name: name, What: DriftRemoved, Detail: "removed"})
		items++
	}
	if items == 0 && l.InputsDigest != r.InputsDigest() {
		ds = append(ds, Drift{What: DriftDigest, Detail: "inputs changed (suites, mirror, arch, a source setting, sysctls or modules) since the lock was written"})
	}
	if len(ds) == 0 {
		return nil
	}
	return &DriftError{LockFile: LockPath(r.File), RecipeFile: r.File, Drifts: ds}
}

// artifactDrift compares one input with its locked artifact; "" when they agree.
func artifactDrift(in Input, a LockedArtifact) string {
	switch {
	case a.Kind != in.Kind:
		return fmt.Sprintf("is a %s input, the lock has a %s", in.Kind, a.Kind)
	case a.Source != in.Source.Type:
		return fmt.Sprintf("source changed from %s to %s", a.Source, in.Source.Type)
	case in.Kind == InputDeb && in.Version != "" && a.Version != in.Version:
		return fmt.Sprintf("version %s is not the pinned %s", a.Version, in.Version)
	case in.Kind != InputDeb && in.Version != "" && !Matches(in.Version, a.Version):
		return fmt.Sprintf("version %s is outside %s", a.Version, in.Version)
	}
	switch in.Source.Type {
	case SourceGoMod:
		if mod, _, _ := strings.Cut(a.Module, "@"); mod != in.Source.Module {
			return fmt.Sprintf("module changed from %s to %s", mod, in.Source.Module)
		}
		switch {
		case a.Main != in.Main && in.Main != "":
			return fmt.Sprintf("is now built from kubebake's %s, the lock has %s", gomain.Path(in.Main), lockedMain(a))
		case a.Main != in.Main:
			return fmt.Sprintf("is now built from package %s, the lock has %s", in.Package, lockedMain(a))
		case a.Package != in.Package:
			return fmt.Sprintf("package changed from %s to %s", a.Package, in.Package)
		case a.MainSHA256 != in.MainSHA256:
			return fmt.Sprintf("is built from kubebake's %s, which changed since the lock was written (sha256 %s, the lock has %s)",
				gomain.Path(in.Main), short(in.MainSHA256), short(a.MainSHA256))
		}
	case SourceSelf:
		if a.MainSHA256 != in.MainSHA256 {
			return fmt.Sprintf("is built from kubebake's own source, which changed since the lock was written (sha256 %s, the lock has %s); run \"kubebake lock\"",
				short(in.MainSHA256), short(a.MainSHA256))
		}
	case SourceURL:
		if want := ExpandURL(in.Source.URL, a.Version, in.Package, in.Arch); a.URL != want {
			return fmt.Sprintf("url changed from %s to %s", a.URL, want)
		}
		if want := ExpandURL(in.Source.Member, a.Version, in.Package, in.Arch); a.Member != want {
			return fmt.Sprintf("member changed from %q to %q", a.Member, want)
		}
	case SourceDeb:
		if a.Suite != "" && !slices.Contains(in.Suites, a.Suite) {
			return fmt.Sprintf("suite %s is no longer in %s", a.Suite, strings.Join(in.Suites, ", "))
		}
	case SourceArchive:
		if a.Package != in.Package {
			return fmt.Sprintf("archive changed from %s to %s", a.Package, in.Package)
		}
	}
	return ""
}

// archiveDrift compares an archive image's file with the one the lock read; "" when it is
// the same. The file is read: a lock pins the archive's content, not its name.
func archiveDrift(dir string, in Input, a LockedArtifact) string {
	_, sum, err := HashImageArchive(dir, in.Package)
	switch {
	case err != nil:
		return fmt.Sprintf("archive cannot be read (%v)", err)
	case sum != a.SourceSHA256:
		return fmt.Sprintf("archive %s changed since the lock was written (sha256 %s, the lock has %s)", in.Package, short(sum), short(a.SourceSHA256))
	}
	return ""
}

// lockedMain says what a locked gomod artifact was built from, for messages.
func lockedMain(a LockedArtifact) string {
	if a.Main != "" {
		return "kubebake's " + gomain.Path(a.Main)
	}
	return "package " + a.Package
}

// short abbreviates a sha256 for messages.
func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	if sum == "" {
		return "none"
	}
	return sum
}
