// Command kubebake-ignition applies an Ignition config at first boot on a kubebake image.
//
// The image runs it once per instance from kubebake-ignition.service, before the role units
// and cloud-init (docs/node-contract.md). It reads the config from QEMU fw_cfg
// (opt/com.coreos/config), else from EC2 user-data when that is Ignition JSON, validates it
// with ignition/v2 and applies files, directories, links, systemd units and users; then it
// stamps /var/lib/kubebake/ignition.done. With no config it says so and exits 0. Build it
// static: CGO_ENABLED=0 go build ./cmd/kubebake-ignition.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kubebake/kubebake/cloudinit/ignition"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the command; it is a function so that tests can run it in process.
func Main(args []string, stdout, stderr *os.File) int {
	fs := flag.NewFlagSet("kubebake-ignition", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		root         = fs.String("root", "/", "apply under this root folder")
		config       = fs.String("config", "", "apply the Ignition config in FILE instead of looking for one")
		fwcfg        = fs.String("fw-cfg", ignition.FwCfgPath, "QEMU fw_cfg file of the config")
		noFwCfg      = fs.Bool("no-fw-cfg", false, "do not look at QEMU fw_cfg")
		imdsEndpoint = fs.String("imds-endpoint", ignition.DefaultIMDSEndpoint, "EC2 instance metadata endpoint")
		imdsTimeout  = fs.Duration("imds-timeout", 3*time.Second, "give up on the instance metadata service after this long")
		noIMDS       = fs.Bool("no-imds", false, "do not ask the EC2 instance metadata service")
		force        = fs.Bool("force", false, "apply even if "+ignition.StampPath+" exists")
		dryRun       = fs.Bool("dry-run", false, "parse, validate and plan only; change nothing")
		noSystemd    = fs.Bool("no-systemd", false, "do not run systemctl daemon-reload / start after changing units")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kubebake-ignition [flags]\n\nApply an Ignition config (spec %s) found in QEMU fw_cfg or EC2 user-data, once.\n\n", ignition.SpecRange)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kubebake-ignition: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "kubebake-ignition: --log-level %q: use debug, info, warn or error\n", *logLevel)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	absRoot, err := filepath.Abs(*root)
	if err != nil {
		fmt.Fprintf(stderr, "kubebake-ignition: --root: %v\n", err)
		return 2
	}
	opts := ignition.Options{Root: absRoot, Force: *force, DryRun: *dryRun, Log: log}
	if *config != "" {
		opts.Sources = []ignition.Source{ignition.FileSource{Path: *config}}
	} else {
		if !*noFwCfg {
			opts.Sources = append(opts.Sources, ignition.FwCfg{Path: *fwcfg})
		}
		if !*noIMDS {
			opts.Sources = append(opts.Sources, ignition.IMDS{Endpoint: *imdsEndpoint, Timeout: *imdsTimeout})
		}
	}
	if absRoot == "/" && !*noSystemd && ignition.Running() {
		opts.Systemd = ignition.LiveSystemd{}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := ignition.Run(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "kubebake-ignition: %v\n", err)
		return 1
	}
	switch res.Status {
	case "no-config":
		fmt.Fprintln(stdout, "no Ignition config")
	case "already-applied":
		fmt.Fprintf(stdout, "Ignition config already applied (%s exists)\n", ignition.StampPath)
	case "planned":
		fmt.Fprintf(stdout, "Ignition config from %s is valid: %s (dry run, nothing changed)\n", res.Source, res.Summary)
	default:
		fmt.Fprintf(stdout, "applied the Ignition config from %s: %s\n", res.Source, res.Summary)
	}
	return 0
}
