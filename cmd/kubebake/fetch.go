package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/recipes"
)

func init() {
	rootCmd.AddCommand(&cobra.Command{
		Use:   "fetch NAME|PATH",
		Short: "Fill the artifact cache with everything a recipe's lock pins",
		Long: `Download, build or unpack every artifact the recipe's lock pins into the content-addressed
cache, each checked against its sha256, and print where each one is. The .deb files of the
rootfs's pinned package set are fetched too (a summary goes to stderr): with them cached, the
lock builds without the mirror. The lock must match the
recipe (run "kubebake lock" first). Timing and cache hits go to stderr.`,
		Example:           `  kubebake fetch recipes/debian-12.yaml`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeRecipes,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFetch(cmd, args[0])
		},
	})
}

type fetchedArtifact struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Source  string `json:"source"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	Path    string `json:"path"`
	Cached  bool   `json:"cached"` // present in the cache before this fetch
}

func runFetch(cmd *cobra.Command, arg string) error {
	r, err := recipes.Load(arg)
	if err != nil {
		return err
	}
	l, err := recipes.ReadRecipeLock(r)
	if err != nil {
		return err
	}
	if err := recipes.CheckLock(r, l); err != nil {
		return err
	}
	cache, err := openCache(cmd.Context())
	if err != nil {
		return err
	}
	srcs, err := artifacts.RecipeSources(cache, r)
	if err != nil {
		return err
	}
	// Presence before fetching (a stat, not a verification) tells cold from warm.
	present := map[string]bool{}
	for _, a := range l.Artifacts {
		if _, err := os.Stat(cache.BlobPath(a.SHA256)); err == nil {
			present[a.Name] = true
		}
	}
	start := time.Now()
	paths, err := artifacts.Fetch(cmd.Context(), l, srcs)
	elapsed := time.Since(start)
	if err != nil {
		return artifacts.NameRecipe(err, arg)
	}
	out := make([]fetchedArtifact, 0, len(l.Artifacts))
	var total int64
	for _, a := range l.Artifacts {
		size := a.Size
		if st, err := os.Stat(paths[a.Name]); err == nil {
			size = st.Size()
		}
		total += size
		out = append(out, fetchedArtifact{Name: a.Name, Version: a.Version, Source: a.Source, SHA256: a.SHA256, Size: size, Path: paths[a.Name], Cached: present[a.Name]})
	}
	state := "warm"
	switch {
	case len(present) == 0:
		state = "cold"
	case len(present) < len(l.Artifacts):
		state = "partly warm"
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "fetch: %d artifacts, %s, %d from cache, %d fetched (%s) in %s\n",
		len(out), humanBytes(total), len(present), len(out)-len(present), state, elapsed.Round(time.Millisecond))
	if len(l.Packages) > 0 {
		var have int
		var size int64
		for _, p := range l.Packages {
			size += p.Size
			if _, err := os.Stat(cache.BlobPath(p.SHA256)); err == nil {
				have++
			}
		}
		start := time.Now()
		if _, err := artifacts.FetchPackages(cmd.Context(), l, srcs, recipes.LockPath(r.File)); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "fetch: %d Debian packages of the rootfs, %s, %d from cache, %d fetched in %s\n",
			len(l.Packages), humanBytes(size), have, len(l.Packages)-have, time.Since(start).Round(time.Millisecond))
	}
	if st := cache.RemoteStats(); st != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "fetch: shared cache %s: %d downloaded, %d uploaded%s\n",
			st.Remote, st.Downloaded, st.Uploaded, map[bool]string{true: " (unavailable: see the warning above)"}[st.Unavailable])
	}
	return printResult(cmd, out, func() string {
		var b strings.Builder
		w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tVERSION\tSHA256\tPATH")
		for _, a := range out {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", a.Name, a.Version, a.SHA256[:12], a.Path)
		}
		w.Flush()
		return b.String()
	})
}

// humanBytes prints a size with a binary unit (12.3 MiB).
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
