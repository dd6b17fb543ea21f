package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/recipes"
)

func init() {
	cacheCmd := &cobra.Command{
		Use:   "cache",
		Short: "Inspect and maintain the artifact cache",
		Long: `The artifact cache holds every fetched or built artifact by sha256 (blobs/sha256/<hex>),
plus work folders (scratch/) and locks. Its place: --cache-dir, else $KUBEBAKE_CACHE, else
$XDG_CACHE_HOME/kubebake, else ~/.cache/kubebake.`,
	}
	cacheCmd.AddCommand(cachePathCmd(), cacheVerifyCmd(), cachePruneCmd())
	rootCmd.AddCommand(cacheCmd)
}

func openCache() (*artifacts.Cache, error) { return artifacts.OpenCache(globals.cacheDir) }

func cachePathCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "path",
		Short: "Print the cache folder",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := openCache()
			if err != nil {
				return err
			}
			return printResult(cmd, map[string]string{"path": c.Dir()}, func() string { return c.Dir() + "\n" })
		},
	}
}

func cacheVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every cached artifact; remove the corrupt ones",
		Long: `Lookups trust a blob whose size, mtime and inode match the stamp written when it was last
hashed, which keeps warm fetches fast. verify ignores the stamps and re-hashes every blob.
A corrupt blob is removed (the next fetch gets it again) and verify exits with an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := openCache()
			if err != nil {
				return err
			}
			start := time.Now()
			rep, err := c.Verify(cmd.Context())
			if err != nil {
				return err
			}
			if err := printResult(cmd, rep, func() string {
				s := fmt.Sprintf("%d blobs intact (%s) in %s\n", rep.Checked-len(rep.Removed), humanBytes(rep.Bytes), time.Since(start).Round(time.Millisecond))
				for _, h := range rep.Removed {
					s += "removed corrupt blob " + h + "\n"
				}
				return s
			}); err != nil {
				return err
			}
			if len(rep.Removed) > 0 {
				return fmt.Errorf("%d corrupt blobs removed from %s; run \"kubebake fetch RECIPE\" to get them again", len(rep.Removed), c.Dir())
			}
			return nil
		},
	}
}

func cachePruneCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "prune [NAME|PATH...]",
		Short: "Remove cached artifacts that the given recipes' locks do not pin",
		Long: `Remove leftovers of interrupted downloads and, given recipes, every blob that none of their
locks pins (Debian indexes included: they are downloaded again when needed). With --all,
remove every blob. Without recipes or --all only leftovers go.`,
		Example: `  kubebake cache prune recipes/debian-12.yaml recipes/debian-13.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all && len(args) > 0 {
				return fmt.Errorf("--all removes every blob: give either recipes or --all")
			}
			var keep func(string) bool
			switch {
			case all:
				keep = func(string) bool { return false }
			case len(args) > 0:
				pinned := map[string]bool{}
				for _, arg := range args {
					r, err := recipes.Load(arg)
					if err != nil {
						return err
					}
					l, err := recipes.ReadRecipeLock(r)
					if err != nil {
						return fmt.Errorf("%w (prune keeps what locks pin, so it needs every lock)", err)
					}
					for _, a := range l.Artifacts {
						pinned[a.SHA256] = true
					}
				}
				keep = func(h string) bool { return pinned[h] }
			}
			c, err := openCache()
			if err != nil {
				return err
			}
			rep, err := c.Prune(keep)
			if err != nil {
				return err
			}
			return printResult(cmd, rep, func() string {
				var b strings.Builder
				fmt.Fprintf(&b, "removed %d blobs (%s), %d temporary files, %d stale stamps\n", len(rep.Blobs), humanBytes(rep.Bytes), rep.TempFiles, rep.Stamps)
				if keep == nil {
					b.WriteString("no recipe given: only leftovers were removed (name recipes to keep what their locks pin, or --all)\n")
				}
				return b.String()
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "remove every cached blob")
	return cmd
}
