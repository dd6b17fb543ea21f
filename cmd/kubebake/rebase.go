package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/artifacts"
	kbaws "github.com/kubebake/kubebake/artifacts/aws"
	"github.com/kubebake/kubebake/builder"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/verify"
)

// kubebake rebase is the weekly cycle a CI job runs: lock --update, build, verify every role,
// diff against the last release, publish. It publishes only an image that passed verify.

// Exit statuses of kubebake rebase, for CI to branch on (docs/rebase.md).
const (
	rebaseExitBuilt     = 0  // a new image was built and proven (and published when asked)
	rebaseExitUnchanged = 3  // nothing changed since the last release: nothing was built
	rebaseExitLock      = 10 // failed while locking
	rebaseExitBuild     = 11 // failed while building
	rebaseExitVerify    = 12 // the image failed verify: nothing was published
	rebaseExitDiff      = 13 // failed while writing the changelog
	rebaseExitPublish   = 14 // failed while publishing
)

// Rebase step names, as results and errors name them.
const (
	stepLock    = "lock"
	stepBuild   = "build"
	stepVerify  = "verify"
	stepDiff    = "diff"
	stepPublish = "publish"
)

var rebaseExitOf = map[string]int{stepLock: rebaseExitLock, stepBuild: rebaseExitBuild, stepVerify: rebaseExitVerify, stepDiff: rebaseExitDiff, stepPublish: rebaseExitPublish}

// rebaseResult is what kubebake rebase reports for one recipe.
type rebaseResult struct {
	Recipe string `json:"recipe"`
	// Status: unchanged, built (built and proven; published when asked) or failed.
	Status     string             `json:"status"`
	FailedStep string             `json:"failedStep,omitempty"`
	Error      string             `json:"error,omitempty"`
	Lock       string             `json:"lock"`
	LockHash   string             `json:"lockHash"`
	Since      string             `json:"since,omitempty"` // the release manifest compared with
	OutDir     string             `json:"outDir,omitempty"`
	Changes    []artifacts.Change `json:"lockChanges"`
	Changelog  string             `json:"changelog,omitempty"` // CHANGELOG.md in OutDir
	Published  string             `json:"published,omitempty"` // publish-aws.json in OutDir
	Steps      []rebaseStepTime   `json:"steps"`
}

type rebaseStepTime struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// rebaseSteps are the parts of the cycle; tests replace them.
type rebaseSteps struct {
	// lock re-pins the recipe (lock --update) and writes its lock when it moved.
	lock  func(ctx context.Context, recipe string) (r *recipes.Recipe, l *recipes.Lock, changes []artifacts.Change, err error)
	build func(ctx context.Context, recipe, outDir string, formats []string) (*builder.Result, error)
	// verify boots every role the image declares and reports.
	verify func(ctx context.Context, outDir string) (*verify.Report, error)
	// publish publishes the build (only called when verify passed).
	publish func(ctx context.Context, outDir string) error
}

type rebaseOptions struct {
	Recipes []string
	Out     string // the builds go to Out/<recipe>
	Since   string // the last release's manifest or output folder; "": Out/<recipe> before this run
	Formats []string
	Publish bool
}

func init() {
	var (
		opts   rebaseOptions
		matrix bool
		pub    string
		af     awsFlags
		req    kbaws.PublishRequest
		ud     string
		locked bool
	)
	cmd := &cobra.Command{
		Use:   "rebase [RECIPE...] [--out DIR] [--since MANIFEST] [--publish aws --region R]",
		Short: "The weekly cycle: lock --update, build, verify every role, changelog, publish",
		Long: `rebase runs the cycle a scheduled CI job runs for each recipe (default: every embedded
recipe): lock --update (newest patch of each track, newest security fixes), and when that
moved anything since the last release: build into --out/<recipe>, verify every role the
image declares, write the changelog against the last release (CHANGELOG.md, changes.json) and,
with --publish aws, publish. An image that failed verify is never published; publishing is
idempotent and never overwrites a published name.

The last release is --since (a manifest.json or a build folder), else the build already in
--out/<recipe>. With no change since it, nothing is built.

Exit status: 0 a new image was built and proven (and published); 3 nothing changed; 10 lock,
11 build, 12 verify, 13 changelog, 14 publish failed (the first recipe that failed decides).
--matrix prints the recipe x format matrix for a CI job's strategy and exits.`,
		Example: `  kubebake rebase debian-12 --out out
  kubebake rebase --matrix
  kubebake rebase debian-12 --since release/manifest.json --publish aws --region eu-west-1`,
		ValidArgsFunction: completeRecipes,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Recipes = args
			if len(opts.Recipes) == 0 {
				opts.Recipes = recipes.EmbeddedNames()
			}
			if matrix {
				return printMatrix(cmd, opts.Recipes)
			}
			kinds, byRole, err := parseUserDataFlag(ud)
			if err != nil {
				return err
			}
			steps := defaultRebaseSteps(cmd, verify.Options{UserData: kinds, RoleUserData: byRole})
			if locked {
				steps.lock = lockedAsIs
			}
			switch pub {
			case "":
			case "aws":
				opts.Publish = true
				steps.publish = func(ctx context.Context, outDir string) error {
					b, err := kbaws.ReadBuild(outDir)
					if err != nil {
						return err
					}
					s, err := af.session(ctx)
					if err != nil {
						return err
					}
					r := req
					r.Build = b
					_, err = s.Publish(ctx, r)
					return err
				}
			default:
				return fmt.Errorf("--publish %q: the one target is aws", pub)
			}
			return runRebase(cmd, opts, steps)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Out, "out", "out", "builds go to OUT/<recipe>")
	f.StringVar(&opts.Since, "since", "", "the last release's manifest.json or build folder (default: the build in OUT/<recipe>)")
	f.StringSliceVar(&opts.Formats, "format", nil, "image formats (default: the recipe's image.formats)")
	f.StringVar(&pub, "publish", "", "publish a proven image: aws")
	f.StringVar(&ud, "userdata", verify.UserDataCloudInit, "verify's user-data: cloud-init, ignition or both, and ROLE=KIND per role (e.g. cloud-init,master=ignition)")
	f.BoolVar(&locked, "locked", false, "build the recipe's lock as it is, without lock --update (a lock updated elsewhere, e.g. in a reviewed pull request)")
	f.BoolVar(&matrix, "matrix", false, "print the recipe x format matrix as JSON (for a CI strategy) and exit")
	af.register(cmd)
	f.StringSliceVar(&req.CopyRegions, "regions", nil, "--publish aws: more regions to copy the AMI to")
	f.StringSliceVar(&req.Share, "share", nil, "--publish aws: AWS account ids that may launch the AMI")
	rootCmd.AddCommand(cmd)
}

// matrixEntry is one job of the CI matrix.
type matrixEntry struct {
	Recipe string `json:"recipe"`
	Format string `json:"format"`
}

// printMatrix prints {"include":[{"recipe":..,"format":..}]}: GitHub Actions' matrix form.
func printMatrix(cmd *cobra.Command, names []string) error {
	out := struct {
		Include []matrixEntry `json:"include"`
	}{Include: []matrixEntry{}}
	for _, n := range names {
		r, err := recipes.Load(n)
		if err != nil {
			return err
		}
		for _, f := range r.Image.Formats {
			out.Include = append(out.Include, matrixEntry{Recipe: r.Name, Format: f})
		}
	}
	enc := json.NewEncoder(cmd.OutOrStdout())
	return enc.Encode(out)
}

// defaultRebaseSteps are the real steps; vopts gives verify's user-data choice.
func defaultRebaseSteps(cmd *cobra.Command, vopts verify.Options) rebaseSteps {
	return rebaseSteps{
		lock: func(ctx context.Context, recipe string) (*recipes.Recipe, *recipes.Lock, []artifacts.Change, error) {
			return relock(ctx, recipe)
		},
		build: func(ctx context.Context, recipe, outDir string, formats []string) (*builder.Result, error) {
			cache, err := openCache(ctx)
			if err != nil {
				return nil, err
			}
			return builder.Run(ctx, builder.Request{Recipe: recipe, OutDir: outDir, Formats: formats, Cache: cache, Version: version})
		},
		verify: func(ctx context.Context, outDir string) (*verify.Report, error) {
			o := vopts
			o.Image = outDir
			o.Progress = func(node, stage string) { fmt.Fprintf(cmd.ErrOrStderr(), "rebase: verify: %s: %s\n", node, stage) }
			return verify.Run(ctx, o)
		},
	}
}

// lockedAsIs is the lock step of rebase --locked: the recipe and its lock as they are, which
// must exist (build refuses a lock that no longer matches its recipe).
func lockedAsIs(ctx context.Context, arg string) (*recipes.Recipe, *recipes.Lock, []artifacts.Change, error) {
	r, err := recipes.Load(arg)
	if err != nil {
		return nil, nil, nil, err
	}
	l, err := recipes.ReadRecipeLock(r)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--locked: %w (run kubebake lock %s, or rebase without --locked)", err, arg)
	}
	return r, l, nil, nil
}

// relock is lock --update of one recipe; it writes the lock only when it changed.
func relock(ctx context.Context, arg string) (*recipes.Recipe, *recipes.Lock, []artifacts.Change, error) {
	r, err := recipes.Load(arg)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := recipes.LintError(recipes.Lint(r)); err != nil {
		return nil, nil, nil, fmt.Errorf("%s does not pass lint:\n%w", r.File, err)
	}
	cache, err := openCache(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	srcs, err := artifacts.RecipeSources(cache, r)
	if err != nil {
		return nil, nil, nil, err
	}
	if debs, ok := srcs[recipes.SourceDeb].(*artifacts.DebSource); ok {
		debs.Closure = resolvePackageSet
	}
	prev, _ := recipes.ReadRecipeLock(r) // unreadable: --update pins from scratch
	l, err := artifacts.Lock(ctx, r, prev, true, srcs)
	if err != nil {
		return nil, nil, nil, err
	}
	path := recipes.LockPath(r.File)
	data, err := recipes.MarshalLock(l)
	if err != nil {
		return nil, nil, nil, err
	}
	if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, data) {
		if err := recipes.WriteLock(path, l); err != nil {
			return nil, nil, nil, err
		}
	}
	return r, l, artifacts.Diff(prev, l), nil
}

// runRebase runs the cycle for every recipe and ends with the status of the first failure, else
// 0 when anything was built, else 3.
func runRebase(cmd *cobra.Command, o rebaseOptions, steps rebaseSteps) error {
	var results []*rebaseResult
	exit := rebaseExitUnchanged
	var firstErr error
	for _, name := range o.Recipes {
		res := rebaseOne(cmd.Context(), o, name, steps)
		results = append(results, res)
		switch res.Status {
		case "built":
			if exit == rebaseExitUnchanged {
				exit = rebaseExitBuilt
			}
		case "failed":
			if firstErr == nil {
				exit, firstErr = rebaseExitOf[res.FailedStep], fmt.Errorf("%s: %s failed: %s", res.Recipe, res.FailedStep, res.Error)
			}
		}
	}
	if err := printResult(cmd, results, func() string { return rebaseText(results) }); err != nil {
		return err
	}
	if exit == 0 {
		return nil
	}
	return &exitStatus{code: exit, err: firstErr}
}

func rebaseOne(ctx context.Context, o rebaseOptions, name string, steps rebaseSteps) *rebaseResult {
	res := &rebaseResult{Recipe: name, Changes: []artifacts.Change{}, Steps: []rebaseStepTime{}}
	timed := func(step string, fn func() error) bool {
		start := time.Now()
		err := fn()
		res.Steps = append(res.Steps, rebaseStepTime{Name: step, Seconds: time.Since(start).Round(10 * time.Millisecond).Seconds()})
		if err != nil {
			res.Status, res.FailedStep, res.Error = "failed", step, err.Error()
			return false
		}
		return true
	}
	var r *recipes.Recipe
	var l *recipes.Lock
	if !timed(stepLock, func() (err error) {
		r, l, res.Changes, err = steps.lock(ctx, name)
		return err
	}) {
		return res
	}
	if res.Changes == nil {
		res.Changes = []artifacts.Change{} // JSON readers get a list
	}
	res.Recipe, res.Lock, res.LockHash = r.Name, recipes.LockPath(r.File), recipes.LockHash(l)
	res.OutDir = filepath.Join(o.Out, r.Name)
	since := o.Since
	if since == "" {
		since = res.OutDir
	}
	last, err := readRelease(since)
	if err != nil {
		res.Status, res.FailedStep, res.Error = "failed", stepDiff, err.Error()
		return res
	}
	if last != nil {
		res.Since = since
		if last.LockHash == res.LockHash {
			res.Status = "unchanged"
			return res
		}
	}
	// The new build is a candidate beside the release until verify passed: a failed image never
	// takes the release's place (nor becomes the next run's "last release").
	candidate := res.OutDir + ".candidate"
	if !timed(stepBuild, func() error {
		_, err := steps.build(ctx, name, candidate, o.Formats)
		return err
	}) {
		return res
	}
	if !timed(stepVerify, func() error {
		rep, err := steps.verify(ctx, candidate)
		if err != nil {
			return err
		}
		if err := writeVerifyReport(rep, filepath.Join(candidate, "verify")); err != nil {
			return err
		}
		if !rep.Pass {
			_, failed := rep.Counts()
			return fmt.Errorf("%d checks failed; nothing published, the image stays in %s", failed, candidate)
		}
		return promote(candidate, res.OutDir)
	}) {
		return res
	}
	if !timed(stepDiff, func() error { return writeChangelog(res, last) }) {
		return res
	}
	if o.Publish && !timed(stepPublish, func() error {
		if err := steps.publish(ctx, res.OutDir); err != nil {
			return err
		}
		res.Published = filepath.Join(res.OutDir, "publish-aws.json")
		return nil
	}) {
		return res
	}
	res.Status = "built"
	return res
}

// writeVerifyReport writes verify's report into dir as JUnit XML (junit.xml, for CI to show)
// and JSON (report.json, as verify -o json prints it), 0600 like every verify artifact: they
// quote journal lines.
func writeVerifyReport(rep *verify.Report, dir string) error {
	var junit bytes.Buffer
	if err := rep.WriteJUnit(&junit); err != nil {
		return err
	}
	report, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "junit.xml"), junit.Bytes(), 0o600); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "report.json"), append(report, '\n'), 0o600)
}

// promote puts the proven build at dir: the build there before moves to dir.previous.
func promote(candidate, dir string) error {
	previous := dir + ".previous"
	if err := os.RemoveAll(previous); err != nil {
		return err
	}
	if err := os.Rename(dir, previous); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Rename(candidate, dir)
}

// readRelease reads the last release's manifest: a manifest.json or a build folder. A folder
// or file that is not there is no release yet (nil).
func readRelease(path string) (*manifest.Manifest, error) {
	file := path
	if st, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	} else if st.IsDir() {
		file = filepath.Join(path, manifest.Name)
		if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
	}
	return manifest.Read(file)
}

// writeChangelog writes CHANGELOG.md beside the new build, and changes.json (kubebake diff -o
// json) when there is a last release to compare with.
func writeChangelog(res *rebaseResult, last *manifest.Manifest) error {
	cur, err := manifest.Read(filepath.Join(res.OutDir, manifest.Name))
	if err != nil {
		return err
	}
	res.Changelog = filepath.Join(res.OutDir, "CHANGELOG.md")
	if last == nil {
		md := fmt.Sprintf("# %s\n\nFirst release: lock %s, kernel %s, %d Debian packages.\n", res.Recipe, res.LockHash[:12], cur.Image.Kernel, len(cur.Packages))
		return atomicfile.WriteFile(res.Changelog, []byte(md), 0o644)
	}
	changes := manifest.Diff(last, cur)
	if err := atomicfile.WriteFile(res.Changelog, []byte(changes.Markdown()), 0o644); err != nil {
		return err
	}
	data, err := json.MarshalIndent(changes, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(res.OutDir, "changes.json"), append(data, '\n'), 0o644)
}

func rebaseText(results []*rebaseResult) string {
	var b strings.Builder
	for _, r := range results {
		switch r.Status {
		case "unchanged":
			fmt.Fprintf(&b, "%s: unchanged since %s (lock %s): nothing built\n", r.Recipe, r.Since, r.LockHash[:12])
		case "built":
			fmt.Fprintf(&b, "%s: built and proven in %s (lock %s); changelog %s\n", r.Recipe, r.OutDir, r.LockHash[:12], r.Changelog)
			for _, c := range r.Changes {
				fmt.Fprintf(&b, "  %s\n", c)
			}
		default:
			fmt.Fprintf(&b, "%s: %s failed: %s\n", r.Recipe, r.FailedStep, r.Error)
		}
	}
	return b.String()
}
