package artifacts

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubebake/kubebake/artifacts/gomain"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/recipes"
)

// Mains kubebake provides (package gomain) are built in the same work folder, by the same go
// build and with the same flags as the module's own main packages: their source is written
// into the generated build module as cmd/<name>/main.go, so their Go package is
// kubebake.local/gomod/cmd/<name>. Everything in the build that deals in packages ("targets")
// uses that path for them.

// mainsDir is the folder of the provided mains in the work folder.
const mainsDir = "cmd"

// mainTarget is the Go package a provided main is built as.
func mainTarget(name string) string { return buildModulePath + "/" + mainsDir + "/" + name }

// providedMain reports whether a build target is a provided main, and which.
func providedMain(target string) (name string, ok bool) {
	return strings.CutPrefix(target, buildModulePath+"/"+mainsDir+"/")
}

// inputTarget is the build target of a gomod input.
func inputTarget(in recipes.Input) string {
	if in.Main != "" {
		return mainTarget(in.Main)
	}
	return in.Package
}

// artifactTarget is the build target of a locked gomod artifact.
func artifactTarget(a recipes.LockedArtifact) string {
	if a.Main != "" {
		return mainTarget(a.Main)
	}
	return a.Package
}

// checkProvidedMain checks that kubebake has the main an input or lock entry names, with the
// source it was pinned with (sum; "" accepts any).
func checkProvidedMain(name, sum string) error {
	have := gomain.SHA256(name)
	switch {
	case have == "":
		return fmt.Errorf("kubebake provides no main %q (it has %s)", name, strings.Join(gomain.Names(), ", "))
	case sum != "" && sum != have:
		return fmt.Errorf("it was pinned with a main.go of sha256 %s, but this kubebake's %s has sha256 %s, so it cannot build that binary; run \"kubebake lock\"",
			sum, gomain.Path(name), have)
	}
	return nil
}

// writeMains replaces the provided mains in the work folder with the ones among targets, so
// that a main from an earlier build cannot add requirements to go mod tidy's result.
func writeMains(work string, targets []string) error {
	dir := filepath.Join(work, mainsDir)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for _, t := range targets {
		name, ok := providedMain(t)
		if !ok {
			continue
		}
		src, err := gomain.BuildSource(name)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, name, "main.go"), src, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// modulePackages are the targets that are the module's own packages (imported by tools.go).
func modulePackages(targets []string) []string {
	var pkgs []string
	for _, t := range targets {
		if _, ok := providedMain(t); !ok {
			pkgs = append(pkgs, t)
		}
	}
	return pkgs
}
