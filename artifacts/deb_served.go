package artifacts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/recipes"
)

// Debian mirrors keep only the newest version of each package in a suite: a lock a few weeks
// old pins versions the mirror has dropped. mmdebstrap then fails with apt's words about one
// package at a time. CheckServed asks the mirror's signed indexes first and names them all.

// MissingPackagesError lists the locked packages (each "name version") that the mirror no
// longer serves in any suite of the recipe.
type MissingPackagesError struct {
	Packages []string
	Mirror   string // redacted
	// Recipe is the recipe's file (or name) for the fix; a caller that knows it sets it.
	Recipe string
}

func (e *MissingPackagesError) Error() string {
	what := "version"
	if len(e.Packages) > 1 {
		what = fmt.Sprintf("%d versions", len(e.Packages))
	}
	recipe := e.Recipe
	if recipe == "" {
		recipe = "RECIPE"
	}
	return fmt.Sprintf("the Debian mirror %s no longer serves the %s the lock pins: %s; run \"kubebake lock --update %s\" to pin what it serves now", e.Mirror, what, strings.Join(e.Packages, ", "), recipe)
}

// NameRecipe sets the recipe in a *MissingPackagesError inside err, so its fix names the file.
func NameRecipe(err error, recipe string) error {
	var mp *MissingPackagesError
	if errors.As(err, &mp) {
		mp.Recipe = recipe
	}
	return err
}

// CheckServed returns a *MissingPackagesError naming every deb artifact of arts whose pinned
// version (with its sha256) is in none of suites (the artifact's own suite is searched
// first: a point release moves packages from <release>-updates into <release>).
func (s *DebSource) CheckServed(ctx context.Context, arts []recipes.LockedArtifact, suites []string, arch string) error {
	if arch == "" {
		arch = "amd64"
	}
	var missing []string
	for _, a := range arts {
		if a.Source != recipes.SourceDeb {
			continue
		}
		name, version := debNameVersion(a)
		found := false
		for _, suite := range searchOrder(a.Suite, suites) {
			idx, err := s.suiteIndex(ctx, s.mirrorFor(suite, s.Mirror), suite, arch)
			if err != nil {
				return fmt.Errorf("checking that the mirror still serves the locked packages: %w", err)
			}
			if slices.ContainsFunc(idx.pkgs[name], func(p debPkg) bool { return p.Version == version && p.SHA256 == a.SHA256 }) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, name+" "+version)
		}
	}
	if len(missing) > 0 {
		return &MissingPackagesError{Packages: missing, Mirror: redact.URL(s.Mirror)}
	}
	return nil
}

// debNameVersion is the Debian package and version a deb artifact pins. A binary taken out
// of a package records the package as "name=version" (its Version is the upstream one).
func debNameVersion(a recipes.LockedArtifact) (name, version string) {
	if n, v, ok := strings.Cut(a.Package, "="); ok {
		return n, v
	}
	if a.Package != "" {
		return a.Package, a.Version
	}
	return strings.TrimPrefix(a.Name, "deb/"), a.Version
}

func searchOrder(first string, suites []string) []string {
	out := make([]string, 0, len(suites)+1)
	if first != "" {
		out = append(out, first)
	}
	for _, s := range suites {
		if s != first {
			out = append(out, s)
		}
	}
	return out
}

// CheckPackagesServed is CheckServed for a lock's package set: every file must still be listed,
// with its sha256, by the signed index of its suite (or of another suite of suites).
func (s *DebSource) CheckPackagesServed(ctx context.Context, pkgs []recipes.LockedPackage, suites []string, arch string) error {
	arts := make([]recipes.LockedArtifact, len(pkgs))
	for i, p := range pkgs {
		arts[i] = p.Artifact()
	}
	return s.CheckServed(ctx, arts, suites, arch)
}
