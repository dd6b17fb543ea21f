package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/builder"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
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
		Long: `Build the golden disk image of a recipe: a root filesystem from the pinned Debian packages
(mmdebstrap, cached by its inputs), the node layer merged in with image hygiene (no machine-id,
no SSH host keys, no cloud-init state, no logs, root password locked), a root ext4, an EFI
system partition with systemd-boot, a GPT disk, and each output format (raw, qcow2, vhd, vmdk),
with manifest.json and sbom.spdx.json beside them (copies are inside the image under
/etc/kubebake/).

The same lock gives byte-identical raw images. Files appear in --out only when complete;
Ctrl-C or a failure leaves nothing behind. Progress goes to stderr, the result to stdout.`,
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
	ctx := cmd.Context()
	for _, f := range formats {
		if !slices.Contains(builder.FormatNames(), f) {
			return fmt.Errorf("--format %q: use %s", f, strings.Join(builder.FormatNames(), ", "))
		}
	}
	r, err := recipes.Load(arg)
	if err != nil {
		return err
	}
	l, err := recipes.ReadRecipeLock(r)
	if err != nil {
		return err
	}
	if err := recipes.CheckLock(r, l); err != nil {
		if locked {
			return err
		}
		slog.Warn("building from a lock that does not match the recipe", "drift", err)
	}
	if outDir == "" {
		outDir = filepath.Join("out", r.Name)
	}
	cache, err := artifacts.OpenCache(globals.cacheDir)
	if err != nil {
		return err
	}
	mirror := r.Base.Mirror
	if mirror == "" {
		if mirror, err = artifacts.SystemDebianMirror(); err != nil {
			return err
		}
	}

	prog := newBuildProgress(cmd.ErrOrStderr())
	defer prog.Close()
	prog.Line("fetch: %d artifacts of %s", len(l.Artifacts), r.Name)
	t0 := time.Now()
	srcs, err := artifacts.RecipeSources(cache, r)
	if err != nil {
		return err
	}
	paths, err := artifacts.Fetch(ctx, l, srcs)
	if err != nil {
		return err
	}
	layer, err := roles.Render(r, l)
	if err != nil {
		return err
	}
	local, err := localArtifacts(ctx, cache, layer)
	if err != nil {
		return err
	}
	prog.Line("fetch: done in %s", time.Since(t0).Round(10*time.Millisecond))
	open := func(name string) (io.ReadCloser, error) {
		p, ok := paths[name]
		if !ok {
			p, ok = local[name]
		}
		if !ok {
			return nil, fmt.Errorf("artifact %s is neither in the lock nor built locally", name)
		}
		return os.Open(p)
	}

	res, err := builder.Build(ctx, builder.Options{
		Recipe: r, Lock: l, Layer: layer, Open: open, Store: cache, Mirror: mirror,
		OutDir: outDir, Formats: formats, Progress: prog.Event, Version: version,
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

// localArtifacts builds the layer's artifacts that come from this repository rather than
// the lock (roles.LocalArtifacts: the Ignition applier), into the cache. $KUBEBAKE_IGNITION
// or a kubebake-ignition beside this executable is used as it is; otherwise it is compiled
// from the kubebake module (static, -trimpath, so the same source gives the same bytes).
func localArtifacts(ctx context.Context, cache *artifacts.Cache, layer *roles.Layer) (map[string]string, error) {
	out := map[string]string{}
	need := false
	for _, a := range layer.Artifacts() {
		if a == roles.IgnitionArtifact {
			need = true
		}
	}
	if !need {
		return out, nil
	}
	if p := os.Getenv("KUBEBAKE_IGNITION"); p != "" {
		out[roles.IgnitionArtifact] = p
		return out, nil
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), roles.IgnitionArtifact); fileExists(p) {
			out[roles.IgnitionArtifact] = p
			return out, nil
		}
	}
	dir, err := cache.Scratch("local")
	if err != nil {
		return nil, err
	}
	unlock, err := cache.Lock(ctx, "local-build")
	if err != nil {
		return nil, err
	}
	defer unlock()
	dst := filepath.Join(dir, roles.IgnitionArtifact)
	tmp := dst + ".tmp"
	c := run.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=", "-o", tmp, "github.com/kubebake/kubebake/cmd/kubebake-ignition")
	c.Env = []string{"CGO_ENABLED=0"}
	if err := c.Run(ctx); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("building %s (put a built one beside kubebake or in $KUBEBAKE_IGNITION): %w", roles.IgnitionArtifact, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return nil, err
	}
	out[roles.IgnitionArtifact] = dst
	return out, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// buildProgress shows build stages on stderr: on a terminal one live line (stage, bytes,
// elapsed) redrawn every half second, otherwise a plain line per stage and log message.
type buildProgress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	cur   builder.Event
	at    time.Time
	drawn time.Time
	stop  chan struct{}
	done  sync.WaitGroup
	once  sync.Once
}

func newBuildProgress(w io.Writer) *buildProgress {
	p := &buildProgress{w: w, stop: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.tty = true
		}
	}
	if p.tty {
		p.done.Add(1)
		go p.ticker()
	}
	return p
}

func (p *buildProgress) ticker() {
	defer p.done.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			if p.cur.Stage != "" {
				p.redraw()
			}
			p.mu.Unlock()
		}
	}
}

// redraw writes the live line; the caller holds mu.
func (p *buildProgress) redraw() {
	e := p.cur
	elapsed := time.Since(p.at).Round(100 * time.Millisecond)
	line := fmt.Sprintf("[%d/%d] %-9s %s", e.Index, e.Stages, e.Stage, elapsed)
	switch {
	case e.Total > 0 && e.Stage == "outputs":
		line += fmt.Sprintf("  %d/%d formats", e.Bytes, e.Total)
	case e.Total > 0 && e.Bytes > 0:
		line += fmt.Sprintf("  %s / %s", humanBytes(e.Bytes), humanBytes(e.Total))
	case e.Bytes > 0:
		line += "  " + humanBytes(e.Bytes)
	}
	if e.Message != "" {
		msg := e.Message
		if len(msg) > 60 {
			msg = msg[:60] + "..."
		}
		line += "  " + msg
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.drawn = time.Now()
}

// Line prints one plain line (above the live line on a terminal).
func (p *buildProgress) Line(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
	if p.tty && p.cur.Stage != "" {
		p.redraw()
	}
}

// Event receives the builder's progress.
func (p *buildProgress) Event(e builder.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case builder.EventStart:
		p.cur, p.at = e, time.Now()
		if !p.tty {
			fmt.Fprintf(p.w, "build: [%d/%d] %s\n", e.Index, e.Stages, e.Stage)
		} else {
			p.redraw()
		}
	case builder.EventProgress:
		msg := p.cur.Message
		p.cur.Bytes, p.cur.Total = e.Bytes, e.Total
		if e.Message != "" {
			p.cur.Message = e.Message
		} else {
			p.cur.Message = msg
		}
		if p.tty && time.Since(p.drawn) >= 200*time.Millisecond {
			p.redraw()
		}
	case builder.EventLog:
		if p.tty {
			p.cur.Message = e.Message
			p.redraw()
		} else {
			fmt.Fprintf(p.w, "build: %s: %s\n", e.Stage, e.Message)
		}
	case builder.EventDone:
		done := fmt.Sprintf("build: [%d/%d] %s done in %s", e.Index, e.Stages, e.Stage, e.Elapsed.Round(10*time.Millisecond))
		if p.cur.Message != "" && e.Stage == "rootfs" {
			done += " (" + p.cur.Message + ")"
		}
		if p.tty {
			fmt.Fprintf(p.w, "\r\033[K%s\n", done)
		} else {
			fmt.Fprintln(p.w, done)
		}
		p.cur = builder.Event{}
	}
}

// Close stops the live line.
func (p *buildProgress) Close() {
	p.once.Do(func() {
		close(p.stop)
		p.done.Wait()
		p.mu.Lock()
		if p.tty && p.cur.Stage != "" {
			fmt.Fprint(p.w, "\r\033[K")
		}
		p.mu.Unlock()
	})
}
