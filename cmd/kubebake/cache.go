package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/artifacts/remotecache"
	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/recipes"
)

func init() {
	cacheCmd := &cobra.Command{
		Use:   "cache",
		Short: "Inspect and maintain the artifact cache",
		Long: `The artifact cache holds every fetched or built artifact by sha256 (blobs/sha256/<hex>),
plus work folders (scratch/) and locks. Its place: --cache-dir, else $KUBEBAKE_CACHE, else
$XDG_CACHE_HOME/kubebake, else ~/.cache/kubebake.

CI runners can share one cache in S3 behind their local ones: --cache-remote
s3://BUCKET/PREFIX, or $KUBEBAKE_CACHE_REMOTE (docs/cache.md). A local miss is looked up
there and a new local blob or rootfs tarball is uploaded. verify and prune work on the
local cache only.`,
	}
	cacheCmd.AddCommand(cachePathCmd(), cacheVerifyCmd(), cachePruneCmd())
	rootCmd.AddCommand(cacheCmd)
}

// openCache opens the local cache (--cache-dir) with the shared cache that --cache-remote or
// $KUBEBAKE_CACHE_REMOTE names behind it, if any. ctx bounds the shared cache's requests.
func openCache(ctx context.Context) (*artifacts.Cache, error) {
	// The local folder and the shared bucket are two settings: an s3:// URL given as the
	// folder would quietly become a folder named "s3:".
	for _, s := range [][2]string{{"--cache-dir", globals.cacheDir}, {"KUBEBAKE_CACHE", os.Getenv("KUBEBAKE_CACHE")}} {
		if strings.Contains(s[1], "://") {
			return nil, fmt.Errorf("%s %q is a URL, but it names the local cache folder; give a shared S3 cache as --cache-remote or %s (s3://BUCKET/PREFIX), beside the local one", s[0], redact.URL(s[1]), remotecache.EnvRemote)
		}
	}
	c, err := artifacts.OpenCache(globals.cacheDir)
	if err != nil {
		return nil, err
	}
	remote, err := openRemote(ctx)
	if err != nil {
		return nil, err
	}
	if remote != nil {
		c.UseRemote(ctx, remote)
	}
	return c, nil
}

// openRemote is the shared cache the flag, else the environment, names (nil: none). A bad URL
// is an error naming where it came from; an unreachable bucket is not (the cache warns once
// and goes on without it).
func openRemote(ctx context.Context) (*remotecache.S3, error) {
	raw, setting := globals.cacheRemote, "--cache-remote"
	if raw == "" {
		raw, setting = os.Getenv(remotecache.EnvRemote), remotecache.EnvRemote
	}
	if raw == "" {
		return nil, nil
	}
	loc, err := remotecache.ParseLocation(raw)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", setting, redact.URL(raw), err)
	}
	return remotecache.New(ctx, loc, remotecache.Options{})
}

// remoteName is the shared cache of c for output ("" without one).
func remoteName(c *artifacts.Cache) string {
	if st := c.RemoteStats(); st != nil {
		return st.Remote
	}
	return ""
}

func cachePathCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "path",
		Short: "Print the cache folder",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := openCache(cmd.Context())
			if err != nil {
				return err
			}
			res := map[string]string{"path": c.Dir()}
			if r := remoteName(c); r != "" {
				res["remote"] = r
				// stdout stays the one line that scripts read as $(kubebake cache path).
				fmt.Fprintf(cmd.ErrOrStderr(), "shared cache: %s\n", r)
			}
			return printResult(cmd, res, func() string { return c.Dir() + "\n" })
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
			c, err := openCache(cmd.Context())
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
				if r := remoteName(c); r != "" {
					s += "the shared cache " + r + " was not checked: every download from it is checked against its sha256\n"
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
					for _, p := range l.Packages {
						pinned[p.SHA256] = true // the .deb files the rootfs is made of
					}
				}
				keep = func(h string) bool { return pinned[h] }
			}
			c, err := openCache(cmd.Context())
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
				if r := remoteName(c); r != "" {
					b.WriteString("the shared cache " + r + " was left alone (expire its objects with a bucket lifecycle rule)\n")
				}
				return b.String()
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "remove every cached blob")
	return cmd
}
