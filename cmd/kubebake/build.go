package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/builder"
)

func init() {
	var (
		outDir  string
		formats []string
		locked  bool
	)
	cmd := &cobra.Command{
		Use:   "build NAME|PATH",
		Short: "Bake the recipe's golden disk images from its lock",
		Long: `Build the golden disk image of a recipe, in one pipeline: load, lint (an error refuses the
build, with its position), lock check, fetch, render the node layer, then bake: a root
filesystem from the pinned Debian packages
(mmdebstrap, cached by its inputs), the node layer merged in with image hygiene (no machine-id,
no SSH host keys, no cloud-init state, no logs, root password locked), a root ext4, an EFI
system partition with systemd-boot, a GPT disk, and each output format (raw, qcow2, vhd, vmdk),
with manifest.json and sbom.spdx.json beside them (copies are inside the image under
/etc/kubebake/).

The same lock gives byte-identical raw images, on any machine with the lock's Go toolchain:
even the Ignition applier baked into every image is pinned in the lock. The new images,
manifest and SBOM replace the old ones in --out together, in one rename; Ctrl-C, a failure
or a crash leaves the previous complete set. Progress goes to stderr, the result to stdout.`,
		Example: `  kubebake build debian-12
  kubebake build recipes/debian-12.yaml --out out/debian-12 --format raw,qcow2,vhd
  kubebake build debian-12 -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeRecipes,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBuild(cmd, args[0], outDir, formats, locked)
		},
	}
	cmd.Flags().StringVar(&outDir, "out", "", "output folder (default out/<recipe>)")
	cmd.Flags().StringSliceVar(&formats, "format", nil, "image formats, comma-separated: "+strings.Join(builder.FormatNames(), ", ")+" (default: the recipe's image.formats)")
	cmd.Flags().BoolVar(&locked, "locked", true, "refuse a recipe that does not match its lock (false: warn and build from the lock anyway)")
	rootCmd.AddCommand(cmd)
}

func runBuild(cmd *cobra.Command, arg, outDir string, formats []string, locked bool) error {
	for _, f := range formats {
		if !slices.Contains(builder.FormatNames(), f) {
			return fmt.Errorf("--format %q: use %s", f, strings.Join(builder.FormatNames(), ", "))
		}
	}
	cache, err := openCache(cmd.Context())
	if err != nil {
		return err
	}
	prog := newBuildProgress(cmd.ErrOrStderr())
	defer prog.Close()
	res, err := builder.Run(cmd.Context(), builder.Request{
		Recipe: arg, OutDir: outDir, Formats: formats, AllowDrift: !locked,
		Cache: cache, Progress: prog.Event, Version: version,
	})
	prog.Close()
	if err != nil {
		return err
	}
	return printResult(cmd, res, func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "built %s (lock %s) in %.1fs, rootfs %s\n", res.Recipe, res.LockHash[:12], res.Seconds, map[bool]string{true: "cached", false: "built"}[res.RootfsCached])
		w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "FILE\tFORMAT\tSIZE\tSHA256")
		for _, o := range res.Outputs {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", filepath.Join(res.OutDir, o.Name), o.Format, humanBytes(o.Size), o.SHA256)
		}
		fmt.Fprintf(w, "%s\tmanifest\t\t\n", res.Manifest)
		fmt.Fprintf(w, "%s\tspdx\t\t\n", res.SBOM)
		w.Flush()
		return b.String()
	})
}
