package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
)

// Exit statuses of kubebake diff, as diff(1) has them: scripts branch on them.
const (
	diffExitDifferent = 1 // with --exit-code: the builds differ
	diffExitTrouble   = 2 // nothing was compared: an input or an argument is wrong
)

func init() {
	var (
		format   string
		exitCode bool
	)
	cmd := &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "Show what changed between two builds, for release notes and CI changelogs",
		Long: `Compare two builds and print what changed from OLD to NEW, for release notes and CI
changelogs: the recipe and lock hash, the kernel (called out on its own line), lock artifacts
(Kubernetes components, etcd, CNI plugins, flanneld, container images, Debian packages) with
version and sha256, the image's installed Debian packages, node layer files (content sha256,
mode, owner, link target) and systemd units with their roles. Each list is sorted; equal
builds print "no changes".

OLD and NEW are each a build output directory (its manifest.json is read), a manifest.json
(the output folder's or the image's /etc/kubebake/manifest.json), or a lock file (.lock).
Both must be of one kind. Two locks compare their artifacts only.

A layer file that is a copy of an artifact (/usr/bin/kubelet) is listed only when more than
that artifact's new content changed: the artifact's line says it. Image outputs, build
timings and the disk's UUIDs are not compared: they differ between any two builds.

--format markdown prints "###" sections with name | old | new tables for release notes;
-o json prints every change with the old and new entries as the manifests hold them.

Exit status: with --exit-code, 1 when the builds differ and 0 when they do not, like
"git diff --exit-code"; without it, 0 either way. 2, with or without --exit-code, when
nothing was compared: an input that cannot be read, inputs of two kinds, a wrong argument.`,
		Example: `  kubebake diff out/debian-12-2025w01 out/debian-12
  kubebake diff old/manifest.json out/debian-12/manifest.json --format markdown >> RELEASE-NOTES.md
  kubebake diff old/debian-12.lock recipes/debian-12.lock -o json
  kubebake diff --exit-code out/last-release out/debian-12 || echo "the image changed"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return &exitStatus{code: diffExitTrouble, err: fmt.Errorf("diff takes two arguments, OLD and NEW, and got %d; %s", len(args), diffInputs)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			err := runDiff(cmd, args[0], args[1], format, exitCode)
			var st *exitStatus
			if err != nil && !errors.As(err, &st) {
				err = &exitStatus{code: diffExitTrouble, err: err}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "text result format: text or markdown (release notes); -o json prints JSON")
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit with status 1 when the builds differ, 0 when they do not")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitStatus{code: diffExitTrouble, err: err}
	})
	rootCmd.AddCommand(cmd)
}

// diffInputs says what diff takes, for errors.
const diffInputs = "pass a build's output directory, its manifest.json or a .lock file"

// diffResult is what `kubebake diff -o json` reports: the files compared and the changes.
type diffResult struct {
	Old       string `json:"old"`
	New       string `json:"new"`
	Kind      string `json:"kind"` // manifest or lock
	Different bool   `json:"different"`
	*manifest.Changes
}

func runDiff(cmd *cobra.Command, oldArg, newArg, format string, exitCode bool) error {
	switch format {
	case "text", "markdown":
	default:
		return fmt.Errorf("--format %q: use text or markdown (-o json prints JSON)", format)
	}
	if globals.output == "json" && format == "markdown" {
		return fmt.Errorf("--format markdown with -o json: pick one (--format is how the text result looks)")
	}
	old, err := loadDiffInput(oldArg)
	if err != nil {
		return err
	}
	new, err := loadDiffInput(newArg)
	if err != nil {
		return err
	}
	res := diffResult{Old: old.file, New: new.file, Kind: old.kind()}
	switch {
	case old.kind() != new.kind():
		return fmt.Errorf("%s is a %s and %s a %s: compare two builds (output directories or manifest.json files) or two .lock files",
			old.file, old.kind(), new.file, new.kind())
	case old.lock != nil:
		res.Changes = manifest.DiffLocks(old.lock, new.lock)
	default:
		res.Changes = manifest.Diff(old.manifest, new.manifest)
	}
	res.Different = !res.Changes.Empty()
	if err := printResult(cmd, res, func() string {
		if format == "markdown" {
			return res.Changes.Markdown()
		}
		return res.Changes.Text()
	}); err != nil {
		return err
	}
	if exitCode && res.Different {
		return &exitStatus{code: diffExitDifferent} // the changes are on stdout; nothing to add
	}
	return nil
}

// diffInput is one side of a diff: a build's manifest or a lock.
type diffInput struct {
	file     string // the file read
	manifest *manifest.Manifest
	lock     *recipes.Lock
}

func (in diffInput) kind() string {
	if in.lock != nil {
		return "lock"
	}
	return "manifest"
}

// loadDiffInput reads a build output directory's manifest.json, a manifest.json, or a lock.
// A file is taken for a lock by its .lock name or by its kind, so that a lock saved under
// another name (a CI artifact) works too.
func loadDiffInput(arg string) (diffInput, error) {
	st, err := os.Stat(arg)
	if errors.Is(err, fs.ErrNotExist) {
		return diffInput{}, fmt.Errorf("%s: no such file or directory; %s", arg, diffInputs)
	} else if err != nil {
		return diffInput{}, fmt.Errorf("%w; %s", err, diffInputs)
	}
	file := arg
	if st.IsDir() {
		file = filepath.Join(arg, manifest.Name)
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			return diffInput{}, fmt.Errorf("%s: no %s here; %s", arg, manifest.Name, diffInputs)
		}
	}
	if strings.HasSuffix(file, ".lock") {
		l, err := recipes.ReadLock(file)
		return diffInput{file: file, lock: l}, err
	}
	data, err := readJSONFile(file)
	if err != nil {
		return diffInput{}, err
	}
	var head struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(data, &head) == nil && head.Kind == recipes.KindLock {
		l, err := recipes.ReadLock(file)
		return diffInput{file: file, lock: l}, err
	}
	m, err := manifest.Parse(data, file)
	return diffInput{file: file, manifest: m}, err
}

// readJSONFile reads file after a look at its first bytes: a disk image given by mistake
// (out/debian-12/debian-12.raw) is refused without reading gigabytes.
func readJSONFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("%w; %s", err, diffInputs)
	}
	defer f.Close()
	start := make([]byte, 512)
	n, err := io.ReadFull(f, start)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	if t := bytes.TrimSpace(start[:n]); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%s: not a manifest.json or a lock (not a JSON document); %s", file, diffInputs)
	}
	rest, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return append(start[:n], rest...), nil
}
