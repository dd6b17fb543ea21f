// Command kubebake bakes golden VM images for Kubernetes nodes and proves them by booting them.
//
// Commands are thin: flags in, package calls, results on stdout, logs on stderr. Each command
// lives in its own file and registers itself with rootCmd from an init function.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/internal/redact"
)

// Set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Global flags, read by every command.
var globals struct {
	output      string // text or json
	logLevel    string
	cacheDir    string
	cacheRemote string // s3://bucket/prefix; "" means $KUBEBAKE_CACHE_REMOTE (openCache)
}

var rootCmd = &cobra.Command{
	Use:   "kubebake",
	Short: "Bake golden VM images for Kubernetes nodes and prove them by booting them",
	Long: `kubebake turns a recipe (what a Kubernetes node image holds) into pinned, reproducible
disk images, and verifies each image by booting it once per role.

  kubebake recipe list                      the embedded recipes
  kubebake recipe lint recipes/debian-12.yaml
  kubebake lock recipes/debian-12.yaml      pin every input by version and sha256
  kubebake fetch recipes/debian-12.yaml     fill the artifact cache from the lock
  kubebake diff out/old out/debian-12       what changed between two builds`,
	SilenceUsage:  true,
	SilenceErrors: true,
	PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
		var level slog.Level
		if err := level.UnmarshalText([]byte(globals.logLevel)); err != nil {
			return fmt.Errorf("--log-level %q: use debug, info, warn or error", globals.logLevel)
		}
		// Whatever a package logs, URL credentials (a mirror's user:password@) and private
		// keys never reach stderr.
		slog.SetDefault(slog.New(redact.Handler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}), nil)))
		if globals.output != "text" && globals.output != "json" {
			return fmt.Errorf("--output %q: use text or json", globals.output)
		}
		return nil
	},
}

func init() {
	pf := rootCmd.PersistentFlags()
	pf.VarP(newOutputFormat(&globals.output, "text"), "output", "o", "result format: text or json (files are written with --out)")
	pf.StringVar(&globals.logLevel, "log-level", "info", "log level on stderr: debug, info, warn, error")
	pf.StringVar(&globals.cacheDir, "cache-dir", "", "artifact cache (default $KUBEBAKE_CACHE or $XDG_CACHE_HOME/kubebake)")
	pf.StringVar(&globals.cacheRemote, "cache-remote", "", "shared cache behind the local one, for CI runners: s3://BUCKET/PREFIX (default $KUBEBAKE_CACHE_REMOTE; endpoint $KUBEBAKE_S3_ENDPOINT)")
	rootCmd.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the kubebake version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return printResult(cmd, map[string]string{"version": version}, func() string { return "kubebake " + version + "\n" })
		},
	})
}

func main() {
	// Ctrl-C or SIGTERM cancels the context: running commands (QEMU, mmdebstrap, go build)
	// are killed with their process groups and temporary files are removed by their owners.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := rootCmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "kubebake: interrupted")
			os.Exit(130)
		}
		code, say := exitCode(err)
		if say {
			fmt.Fprintln(os.Stderr, "kubebake: "+redact.Err(err).Error())
		}
		os.Exit(code)
	}
}

// exitCode is the status kubebake ends with after err (0 for nil), and whether err has
// anything to say on stderr. Every error is 1, unless a command chose another status.
func exitCode(err error) (code int, say bool) {
	if err == nil {
		return 0, false
	}
	var st *exitStatus
	if errors.As(err, &st) {
		return st.code, st.err != nil
	}
	return 1, true
}

// exitStatus is an error that ends kubebake with another status than 1: a command whose
// status is an answer (diff --exit-code). Without err nothing is printed.
type exitStatus struct {
	code int
	err  error
}

func (e *exitStatus) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitStatus) Unwrap() error { return e.err }
