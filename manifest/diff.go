package manifest

import (
	"slices"
	"sort"
	"strings"

	"github.com/kubebake/kubebake/recipes"
)

// Changes is what moved from one build to the next: the answer to "what is new in this
// week's image". Every list is sorted by its key (name or path) and is never nil, so that
// equal inputs give equal bytes in every rendering, and JSON readers always find the lists.
//
// Changes compares what the image holds, not how it was made: Outputs and Build always
// differ between two builds, and the disk's UUIDs and command line derive from the lock hash,
// which is reported itself.
type Changes struct {
	// Recipe and LockHash are set only when they differ.
	Recipe   *Move `json:"recipe,omitempty"`
	LockHash *Move `json:"lockHash,omitempty"`
	// Kernel is set when the kernel release or its package version differs. The kernel's
	// packages are in Packages too; Kernel calls the change out because it needs a reboot
	// and is the one change operators look for first.
	Kernel    *KernelChange    `json:"kernel,omitempty"`
	Artifacts []ArtifactChange `json:"artifacts"`
	Packages  []PackageChange  `json:"packages"`
	// Files leaves out a layer file whose only change is its content when that content is
	// an artifact listed in Artifacts (/usr/bin/kubelet is the kubelet artifact): the
	// artifact's line already says it, with the version.
	Files []FileChange `json:"files"`
	Units []UnitChange `json:"units"`
}

// Move is a value that differs: Old in the first build, New in the second.
type Move struct {
	Old string `json:"old"`
	New string `json:"new"`
}

// What happened to an entry.
const (
	Added   = "added"
	Removed = "removed"
	Changed = "changed"
)

// ArtifactChange is one lock entry that was added, removed or changed (Fields: kind,
// version, sha256). Old is nil when added, New when removed.
type ArtifactChange struct {
	Name   string                  `json:"name"`
	Change string                  `json:"change"`
	Fields []string                `json:"fields,omitempty"`
	Old    *recipes.LockedArtifact `json:"old,omitempty"`
	New    *recipes.LockedArtifact `json:"new,omitempty"`
}

// PackageChange is one installed Debian package (Fields: version, architecture). Name is
// "name:arch" for a package installed for several architectures (multiarch).
type PackageChange struct {
	Name   string      `json:"name"`
	Change string      `json:"change"`
	Fields []string    `json:"fields,omitempty"`
	Old    *DebPackage `json:"old,omitempty"`
	New    *DebPackage `json:"new,omitempty"`
}

// FileChange is one node layer entry (Fields: type, content, mode, owner, target).
type FileChange struct {
	Path   string   `json:"path"`
	Change string   `json:"change"`
	Fields []string `json:"fields,omitempty"`
	Old    *File    `json:"old,omitempty"`
	New    *File    `json:"new,omitempty"`
}

// UnitChange is one systemd unit of the layer (Fields: roles, enabled, foreign, listed).
type UnitChange struct {
	Name   string   `json:"name"`
	Change string   `json:"change"`
	Fields []string `json:"fields,omitempty"`
	Old    *Unit    `json:"old,omitempty"`
	New    *Unit    `json:"new,omitempty"`
}

// KernelChange is the image's kernel before and after.
type KernelChange struct {
	Old Kernel `json:"old"`
	New Kernel `json:"new"`
}

// Kernel is the kernel an image boots: its release (uname -r, ImageInfo.Kernel) and the
// version of the Debian package that installed it.
type Kernel struct {
	Release string `json:"release,omitempty"`
	Package string `json:"package,omitempty"`
	Version string `json:"version,omitempty"`
}

// Empty says whether the two builds hold the same things.
func (c *Changes) Empty() bool {
	return c.Recipe == nil && c.LockHash == nil && c.Kernel == nil &&
		len(c.Artifacts) == 0 && len(c.Packages) == 0 && len(c.Files) == 0 && len(c.Units) == 0
}

// Diff compares two manifests. It reads them only.
func Diff(old, new *Manifest) *Changes {
	c := &Changes{
		Recipe:    move(recipeName(old), recipeName(new)),
		LockHash:  move(old.LockHash, new.LockHash),
		Kernel:    diffKernel(kernelOf(old), kernelOf(new)),
		Artifacts: diffArtifacts(old.Artifacts, new.Artifacts),
		Packages:  diffPackages(old.Packages, new.Packages),
		Units:     diffUnits(old.Units, new.Units),
	}
	c.Files = diffFiles(old.Files, new.Files, c.Artifacts)
	return c
}

// DiffLocks compares two locks: the recipe, the lock hash and the artifacts. A lock knows
// nothing of installed packages, files or units; those lists stay empty.
func DiffLocks(old, new *recipes.Lock) *Changes {
	return &Changes{
		Recipe:    move(old.Recipe, new.Recipe),
		LockHash:  move(recipes.LockHash(old), recipes.LockHash(new)),
		Artifacts: diffArtifacts(old.Artifacts, new.Artifacts),
		Packages:  diffPackages(lockedPackages(old), lockedPackages(new)),
		Files:     []FileChange{},
		Units:     []UnitChange{},
	}
}

// lockedPackages is a lock's pinned package set as the packages of an image (a lock written
// before the set was pinned has none).
func lockedPackages(l *recipes.Lock) []DebPackage {
	out := make([]DebPackage, len(l.Packages))
	for i, p := range l.Packages {
		out[i] = DebPackage{Name: p.Name, Version: p.Version, Architecture: p.Arch}
	}
	return out
}

func move(old, new string) *Move {
	if old == new {
		return nil
	}
	return &Move{Old: old, New: new}
}

func recipeName(m *Manifest) string {
	if m.Recipe == nil {
		return ""
	}
	return m.Recipe.Name
}

// kernelOf finds the version of the package that holds the image's kernel:
// linux-image-<release>. Without it (an older or trimmed manifest) it falls back to the
// recipe's kernel package (the linux-image-cloud-amd64 metapackage), installed or locked.
func kernelOf(m *Manifest) Kernel {
	k := Kernel{Release: m.Image.Kernel}
	candidates := []string{}
	if k.Release != "" {
		candidates = append(candidates, "linux-image-"+k.Release)
	}
	if m.Recipe != nil && m.Recipe.Base.Kernel != "" {
		candidates = append(candidates, m.Recipe.Base.Kernel)
	}
	for _, name := range candidates {
		for _, p := range m.Packages {
			if p.Name == name {
				k.Package, k.Version = p.Name, p.Version
				return k
			}
		}
		for _, a := range m.Artifacts {
			if a.Kind == recipes.InputDeb && a.Name == "deb/"+name {
				k.Package, k.Version = name, a.Version
				return k
			}
		}
	}
	return k
}

func diffKernel(old, new Kernel) *KernelChange {
	if old.Release == new.Release && old.Version == new.Version {
		return nil
	}
	return &KernelChange{Old: old, New: new}
}

// pair is one key's entry in the old and the new list; nil where the list lacks it.
type pair[T any] struct {
	key      string
	old, new *T
}

// pairUp matches two lists by key, sorted by key. A key that repeats within a list (which
// no kubebake manifest has) keeps its last entry. The pairs hold copies: Changes does not
// alias the manifests it was made from.
func pairUp[T any](old, new []T, key func(*T) string) []pair[T] {
	byKey := map[string]*pair[T]{}
	for _, o := range old {
		k := key(&o)
		byKey[k] = &pair[T]{key: k, old: &o}
	}
	for _, n := range new {
		k := key(&n)
		if p, ok := byKey[k]; ok {
			p.new = &n
		} else {
			byKey[k] = &pair[T]{key: k, new: &n}
		}
	}
	out := make([]pair[T], 0, len(byKey))
	for _, p := range byKey {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// changeOf says what happened to a pair: added, removed, changed (fields says how) or ""
// when nothing compared differs.
func changeOf[T any](p pair[T], fields func(old, new *T) []string) (string, []string) {
	switch {
	case p.old == nil:
		return Added, nil
	case p.new == nil:
		return Removed, nil
	}
	if f := fields(p.old, p.new); len(f) > 0 {
		return Changed, f
	}
	return "", nil
}

// field is one compared field of an entry and whether it differs.
type field struct {
	name    string
	differs bool
}

// differing lists the names of the fields that differ, in the order given.
func differing(fields ...field) []string {
	var out []string
	for _, f := range fields {
		if f.differs {
			out = append(out, f.name)
		}
	}
	return out
}

// Artifacts compare by what they are: kind, version and the sha256 of their bytes. Where
// they came from (module, URL, suite) follows from those.
func diffArtifacts(old, new []recipes.LockedArtifact) []ArtifactChange {
	out := []ArtifactChange{}
	for _, p := range pairUp(old, new, func(a *recipes.LockedArtifact) string { return a.Name }) {
		change, fields := changeOf(p, func(o, n *recipes.LockedArtifact) []string {
			return differing(field{"kind", o.Kind != n.Kind}, field{"version", o.Version != n.Version}, field{"sha256", o.SHA256 != n.SHA256})
		})
		if change != "" {
			out = append(out, ArtifactChange{Name: p.key, Change: change, Fields: fields, Old: p.old, New: p.new})
		}
	}
	return out
}

// Packages are keyed by name; a name installed for several architectures in either image
// (multiarch: libc6:amd64 and libc6:i386) is keyed by name:arch instead, so that a package
// that only changed architecture (amd64 -> all) is one change, not a removal and an addition.
func diffPackages(old, new []DebPackage) []PackageChange {
	arches := map[string]map[string]bool{}
	for _, list := range [][]DebPackage{old, new} {
		seen := map[string]map[string]bool{}
		for _, p := range list {
			if seen[p.Name] == nil {
				seen[p.Name] = map[string]bool{}
			}
			seen[p.Name][p.Architecture] = true
		}
		for name, a := range seen {
			if len(a) > 1 {
				arches[name] = a
			}
		}
	}
	key := func(p *DebPackage) string {
		if arches[p.Name] != nil {
			return p.Name + ":" + p.Architecture
		}
		return p.Name
	}
	out := []PackageChange{}
	for _, p := range pairUp(old, new, key) {
		change, fields := changeOf(p, func(o, n *DebPackage) []string {
			return differing(field{"version", o.Version != n.Version}, field{"architecture", o.Architecture != n.Architecture})
		})
		if change != "" {
			out = append(out, PackageChange{Name: p.key, Change: change, Fields: fields, Old: p.old, New: p.new})
		}
	}
	return out
}

// Files compare by type, content (sha256 and size), mode, owner and link target. Which
// artifact a file came from is not compared: the same bytes under another name are the
// same file on the node.
func diffFiles(old, new []File, artifacts []ArtifactChange) []FileChange {
	newArtifactSHA := map[string]string{}
	for _, a := range artifacts {
		if a.New != nil {
			newArtifactSHA[a.Name] = a.New.SHA256
		}
	}
	out := []FileChange{}
	for _, p := range pairUp(old, new, func(f *File) string { return f.Path }) {
		change, fields := changeOf(p, func(o, n *File) []string {
			return differing(field{"type", o.Type != n.Type}, field{"content", o.SHA256 != n.SHA256 || o.Size != n.Size},
				field{"mode", o.Mode != n.Mode}, field{"owner", o.UID != n.UID || o.GID != n.GID}, field{"target", o.Target != n.Target})
		})
		if change == "" {
			continue
		}
		if change == Changed && slices.Equal(fields, []string{"content"}) && p.new.Artifact != "" {
			if sha, ok := newArtifactSHA[p.new.Artifact]; ok && sha == p.new.SHA256 {
				continue // the artifact's own line says it
			}
		}
		out = append(out, FileChange{Path: p.key, Change: change, Fields: fields, Old: p.old, New: p.new})
	}
	return out
}

// Units compare by the roles that start them (as a set), enablement, whether a package
// provides them, and whether a role names them.
func diffUnits(old, new []Unit) []UnitChange {
	out := []UnitChange{}
	for _, p := range pairUp(old, new, func(u *Unit) string { return u.Name }) {
		change, fields := changeOf(p, func(o, n *Unit) []string {
			return differing(field{"roles", roleSet(o.Roles) != roleSet(n.Roles)}, field{"enabled", o.Enabled != n.Enabled},
				field{"foreign", o.Foreign != n.Foreign}, field{"listed", o.Listed != n.Listed})
		})
		if change != "" {
			out = append(out, UnitChange{Name: p.key, Change: change, Fields: fields, Old: p.old, New: p.new})
		}
	}
	return out
}

// roleSet is the roles sorted and joined: "" for a shared unit.
func roleSet(roles []string) string {
	r := slices.Clone(roles)
	sort.Strings(r)
	return strings.Join(slices.Compact(r), ",")
}
