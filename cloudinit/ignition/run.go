package ignition

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kubebake/kubebake/internal/run"
)

// StampPath marks a root where a config was applied; Run does nothing while it exists.
const StampPath = "/var/lib/kubebake/ignition.done"

// hostnamePath is the static host name; a config that writes it renames the node.
const hostnamePath = "/etc/hostname"

// Systemd is what Run tells a running system after it changed units or the host name.
type Systemd interface {
	// SetHostname gives the running system the name the config wrote to /etc/hostname.
	SetHostname(ctx context.Context, name string) error
	DaemonReload(ctx context.Context) error
	// StartTargets starts again those targets that are active or have a start job queued, so
	// that the units just enabled in them start in this boot too.
	StartTargets(ctx context.Context, targets []string) error
}

// Options tune Run.
type Options struct {
	Root    string   // default "/"
	Sources []Source // tried in order; the first with a config wins
	Force   bool     // apply even if StampPath exists
	DryRun  bool     // parse, validate and plan, write nothing
	Systemd Systemd  // nil: do not talk to systemd (any root but a live "/")
	Log     *slog.Logger
	Now     func() time.Time
}

// Result says what Run did.
type Result struct {
	Status  string // "applied", "planned" (dry run), "no-config", "already-applied"
	Source  string
	Summary string
	Apply   *ApplyResult
}

// Run finds a config, checks it completely, applies it and stamps the root.
func Run(ctx context.Context, opts Options) (*Result, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	root := rootFS{root: opts.Root}
	stampHost := root.host(StampPath)
	if !opts.Force && !opts.DryRun {
		if _, err := os.Stat(stampHost); err == nil {
			log.Info("an Ignition config was already applied on this instance; nothing to do", "stamp", StampPath)
			return &Result{Status: "already-applied"}, nil
		}
	}
	var (
		raw []byte
		src string
	)
	for _, s := range opts.Sources {
		data, err := s.Fetch(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name(), err)
		}
		if data != nil {
			raw, src = data, s.Name()
			break
		}
		log.Debug("no config", "source", s.Name())
	}
	if raw == nil {
		log.Info("no Ignition config; nothing to do")
		return &Result{Status: "no-config"}, nil
	}
	log.Info("Ignition config found", "source", src, "bytes", len(raw))
	cfg, rpt, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	for _, e := range rpt.Entries {
		log.Warn("Ignition config", "report", e.String())
	}
	plan, err := NewPlan(cfg, opts.Root)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	res := &Result{Source: src, Summary: plan.Summary()}
	if opts.DryRun {
		res.Status = "planned"
		log.Info("dry run: the config is valid and would apply", "plan", res.Summary)
		return res, nil
	}
	log.Info("applying", "plan", res.Summary, "root", opts.Root)
	ar, err := plan.Apply(ctx, log)
	res.Apply = ar
	if err != nil {
		return res, fmt.Errorf("applying the Ignition config from %s: %w (not stamped: it is tried again at next boot)", src, err)
	}
	sum := sha256.Sum256(raw)
	stamp := fmt.Sprintf("source=%s\nsha256=%s\napplied=%s\n", src, hex.EncodeToString(sum[:]), opts.Now().UTC().Format(time.RFC3339))
	if err := plan.writeRootFile(StampPath, []byte(stamp), 0o644); err != nil {
		return res, fmt.Errorf("writing %s: %w", StampPath, err)
	}
	res.Status = "applied"
	if opts.Systemd != nil && ar.Hostname != "" {
		if err := opts.Systemd.SetHostname(ctx, ar.Hostname); err != nil {
			return res, fmt.Errorf("setting the host name %q: %w", ar.Hostname, err)
		}
	}
	if opts.Systemd != nil && ar.UnitsChanged {
		if err := opts.Systemd.DaemonReload(ctx); err != nil {
			return res, fmt.Errorf("systemctl daemon-reload: %w", err)
		}
		if err := opts.Systemd.StartTargets(ctx, ar.Targets); err != nil {
			return res, err
		}
	}
	log.Info("Ignition config applied", "source", src, "plan", res.Summary)
	return res, nil
}

// LiveSystemd talks to the running systemd with systemctl.
type LiveSystemd struct{}

// Running reports whether systemd is PID 1 here.
func Running() bool {
	st, err := os.Stat("/run/systemd/system")
	return err == nil && st.IsDir()
}

func (LiveSystemd) SetHostname(ctx context.Context, name string) error {
	return run.Command("hostname", name).Run(ctx)
}

func (LiveSystemd) DaemonReload(ctx context.Context) error {
	return run.Command("systemctl", "daemon-reload").Run(ctx)
}

func (LiveSystemd) StartTargets(ctx context.Context, targets []string) error {
	var errs []error
	for _, t := range targets {
		state, _ := run.Command("systemctl", "is-active", t).Output(ctx)
		jobs, _ := run.Command("systemctl", "list-jobs", "--no-legend", "--plain", t).Output(ctx)
		s := strings.TrimSpace(string(state))
		if s != "active" && s != "activating" && s != "reloading" && strings.TrimSpace(string(jobs)) == "" {
			slog.Debug("target not part of this boot; its new units start at next boot", "target", t, "state", s)
			continue
		}
		slog.Info("starting target again for newly enabled units", "target", t)
		if err := run.Command("systemctl", "--no-block", "start", t).Run(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
