package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/builder"
	"github.com/kubebake/kubebake/recipes"
)

func init() {
	var update bool
	cmd := &cobra.Command{
		Use:   "lock NAME|PATH",
		Short: "Pin every input of a recipe by version and sha256 (writes <recipe>.lock)",
		Long: `Resolve every input of a recipe (Kubernetes binaries, etcd, CNI plugins, Debian packages)
to an exact version and sha256 and write the lock beside the recipe (x.yaml -> x.lock).

Entries of an existing lock are kept while they still satisfy the recipe, so locking again
changes nothing. --update re-resolves every input without regard to the current lock, moving
each to the newest version its constraint allows: the newest patch of a minor track ("1.35"),
the newest Debian package in the suites.

A lock that cannot be read or parsed, or that holds git merge conflict markers, is refused
rather than guessed at: resolve the conflict, restore the file from version control, or run
with --update, the one way to replace a broken lock (every input is pinned from scratch).
Nothing is written when anything fails.`,
		Example: `  kubebake lock recipes/debian-12.yaml
  kubebake lock recipes/debian-12.yaml --update -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeRecipes,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLock(cmd, args[0], update)
		},
	}
	cmd.Flags().BoolVar(&update, "update", false, "re-resolve every input ignoring the current lock: the newest version each constraint allows (also replaces a lock that cannot be read)")
	rootCmd.AddCommand(cmd)
}

// resolvePackageSet finds the rootfs's whole package set for the lock: mmdebstrap's simulated
// run. Tests whose synthetic archive holds no bootable set replace it.
var resolvePackageSet artifacts.ClosureFunc = builder.ResolvePackageSet

// lockResult is what `kubebake lock` reports.
type lockResult struct {
	Lock      string             `json:"lock"`
	Recipe    string             `json:"recipe"`
	Written   bool               `json:"written"` // false: the file already held exactly this lock
	Artifacts int                `json:"artifacts"`
	Packages  int                `json:"packages"` // the rootfs's pinned package set
	Changes   []artifacts.Change `json:"changes"`
}

func runLock(cmd *cobra.Command, arg string, update bool) error {
	ctx := cmd.Context()
	r, err := recipes.Load(arg)
	if err != nil {
		return err
	}
	findings := recipes.Lint(r)
	for _, f := range findings {
		if f.Severity == recipes.SeverityWarning {
			slog.Warn(f.String())
		}
	}
	if err := recipes.LintError(findings); err != nil {
		return fmt.Errorf("%s does not pass lint, nothing locked:\n%w", r.File, err)
	}
	cache, err := openCache(cmd.Context())
	if err != nil {
		return err
	}
	srcs, err := artifacts.RecipeSources(cache, r)
	if err != nil {
		return err
	}
	if debs, ok := srcs[recipes.SourceDeb].(*artifacts.DebSource); ok {
		debs.Closure = resolvePackageSet
	}
	path := recipes.LockPath(r.File)
	prev, err := recipes.ReadRecipeLock(r)
	if err != nil {
		// No lock yet is the one case that needs no decision: lock from scratch. A lock that is
		// there but cannot be used is refused (its error names the file and the fix) unless
		// --update says to re-pin everything, which the current lock would not change anyway.
		if _, statErr := os.Stat(path); !errors.Is(statErr, fs.ErrNotExist) {
			if !update {
				return fmt.Errorf("nothing locked: %w", err)
			}
			slog.Warn("replacing a lock that cannot be read: --update pins every input from scratch", "lock", path, "err", err)
		}
		prev = nil
	}
	l, err := artifacts.Lock(ctx, r, prev, update, srcs)
	if err != nil {
		return fmt.Errorf("locking %s (nothing written): %w", r.File, err)
	}
	data, err := recipes.MarshalLock(l)
	if err != nil {
		return err
	}
	res := lockResult{Lock: path, Recipe: r.Name, Artifacts: len(l.Artifacts), Packages: len(l.Packages), Changes: artifacts.Diff(prev, l)}
	if res.Changes == nil {
		res.Changes = []artifacts.Change{}
	}
	if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, data) {
		if err := recipes.WriteLock(path, l); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		res.Written = true
	}
	return printResult(cmd, res, func() string {
		var b strings.Builder
		if prev == nil {
			fmt.Fprintf(&b, "%s: %d artifacts and %d Debian packages pinned\n", path, len(l.Artifacts), len(l.Packages))
			return b.String()
		}
		// A lock written before the package set was pinned gains a whole set at once: one line
		// says so rather than two hundred "(new)" ones (-o json lists them all).
		firstSet := len(prev.Packages) == 0 && len(l.Packages) > 0
		for _, c := range res.Changes {
			if firstSet && strings.HasPrefix(c.Name, "package/") {
				continue
			}
			fmt.Fprintln(&b, c.String())
		}
		if firstSet {
			fmt.Fprintf(&b, "the rootfs's package set: %d Debian packages pinned (new)\n", len(l.Packages))
		}
		switch {
		case len(res.Changes) == 0 && !res.Written:
			fmt.Fprintf(&b, "%s: unchanged (%d artifacts, %d Debian packages)\n", path, len(l.Artifacts), len(l.Packages))
		case len(res.Changes) == 0:
			fmt.Fprintf(&b, "%s: rewritten, nothing moved (%d artifacts, %d Debian packages)\n", path, len(l.Artifacts), len(l.Packages))
		default:
			fmt.Fprintf(&b, "%s: %d of %d artifacts and Debian packages moved\n", path, len(res.Changes), len(l.Artifacts)+len(l.Packages))
		}
		return b.String()
	})
}
