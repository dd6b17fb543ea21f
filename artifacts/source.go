// Package artifacts resolves a recipe's inputs to pinned versions (the lock) and fetches them
// into one content-addressed cache: binaries built from Go modules, downloaded from URLs, or
// Debian packages from the recipe's mirror. It also holds what a build produces about its
// artifacts (manifest, SBOM) and the publishing backends.
package artifacts

import (
	"context"

	"github.com/kubebake/kubebake/recipes"
)

// A Source pins inputs of one source type and fetches what it pinned. Sources work on batches
// so that, for example, every Kubernetes binary is built by a single `go build`.
type Source interface {
	// Type is the recipes.Source type this source serves: gomod, url or deb.
	Type() string
	// Resolve pins inputs. prev holds the current lock's entries for these inputs (nil when
	// there is no lock); with update false an entry whose input is unchanged is kept as it is,
	// with update true the newest version within the input's constraint is chosen.
	Resolve(ctx context.Context, inputs []recipes.Input, prev []recipes.LockedArtifact, update bool) ([]recipes.LockedArtifact, error)
	// Fetch makes every artifact present and verified in the cache and returns the cache path
	// of each, by artifact name.
	Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error)
}
