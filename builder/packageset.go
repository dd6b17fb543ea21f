package builder

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
)

// ResolvePackageSet is the artifacts.ClosureFunc of `kubebake lock`: the packages a rootfs of
// r holds, as mmdebstrap picks them (the minbase variant plus includes, from mirror), taken
// from a simulated run (--simulate: apt resolves, nothing is downloaded). It is mmdebstrap's
// own choice, not a second resolver's guess; the build checks the result against the rootfs
// it makes (checkPackageSet).
func ResolvePackageSet(ctx context.Context, r *recipes.Recipe, includes []string, mirror, securityMirror string) ([]artifacts.PackageRef, error) {
	spec, err := recipeSpec(ctx, r, includes, mirror, securityMirror)
	if err != nil {
		return nil, err
	}
	tmpDir, err := os.MkdirTemp("", "kubebake-resolve-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	authDir, err := writeMirrorAuth(tmpDir, spec.Mirror)
	if err != nil {
		return nil, err
	}
	args := spec.mmdebstrapArgs(tmpDir+"/rootfs.tar", "")
	// Hooks do not run with --simulate: apt gets the credentials folder as an option (nothing
	// is written anywhere a rootfs could keep it).
	extra := []string{"--simulate", "--verbose"}
	if authDir != "" {
		extra = append(extra, `--aptopt=Dir::Etc::netrcparts "`+authDir+`"`)
	}
	cmd := run.Command("mmdebstrap", append(extra, args...)...)
	red := mirrorRedactor(spec.Mirror)
	cmd.Redact = red
	cmd.Env = []string{"TMPDIR=" + tmpDir, "LC_ALL=C.UTF-8"}
	var out bytes.Buffer
	cmd.Stderr = &out
	if err := cmd.Run(ctx); err != nil {
		return nil, red.Error(explainMmdebstrap(err, spec))
	}
	refs, err := parseSimulated(out.Bytes())
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("mmdebstrap --simulate named no package to install (%s); kubebake reads its \"Inst\" lines", spec.Tool)
	}
	return refs, nil
}

// instLine is apt-get --simulate's line for a package it would unpack:
// "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []".
var instLine = regexp.MustCompile(`(?m)^Inst (\S+) \((\S+) [^\[]*\[([^\]]+)\]\)`)

// parseSimulated returns the packages of the Inst lines, each once, sorted by name. mmdebstrap
// simulates the essential set and the rest in two apt runs that both list the essential
// packages; a name listed at two versions is an error.
func parseSimulated(out []byte) ([]artifacts.PackageRef, error) {
	byName := map[string]artifacts.PackageRef{}
	for _, m := range instLine.FindAllSubmatch(out, -1) {
		ref := artifacts.PackageRef{Name: string(m[1]), Version: string(m[2]), Arch: string(m[3])}
		ref.Name, _, _ = strings.Cut(ref.Name, ":") // "libc6:amd64" on multi-arch systems
		if prev, ok := byName[ref.Name]; ok && prev != ref {
			return nil, fmt.Errorf("mmdebstrap --simulate would install %s at %s and at %s", ref.Name, prev.Version, ref.Version)
		}
		byName[ref.Name] = ref
	}
	refs := make([]artifacts.PackageRef, 0, len(byName))
	for _, r := range byName {
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Name < refs[j].Name })
	return refs, nil
}

// checkPackageSet compares the packages of the rootfs with the lock's set: a hermetic rootfs
// holds exactly the pinned files. A difference means mmdebstrap chose otherwise than its
// simulated run at lock time; the error lists it and says how to re-pin.
func checkPackageSet(l *recipes.Lock, installed []DebPackage, recipe string) error {
	if len(l.Packages) == 0 {
		return nil
	}
	want := map[string]string{}
	for _, p := range l.Packages {
		want[p.Name] = p.Version
	}
	var diffs []string
	for _, p := range installed {
		v, ok := want[p.Name]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s %s is installed but not pinned", p.Name, p.Version))
		case v != p.Version:
			diffs = append(diffs, fmt.Sprintf("%s is installed at %s, pinned at %s", p.Name, p.Version, v))
		}
		delete(want, p.Name)
	}
	for name, v := range want {
		diffs = append(diffs, fmt.Sprintf("%s %s is pinned but not installed", name, v))
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	return fmt.Errorf("the rootfs does not hold the lock's package set: %s; run \"kubebake lock --update %s\" to pin it again", strings.Join(diffs, "; "), recipe)
}
