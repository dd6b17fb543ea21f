package verify

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSettle(t *testing.T) {
	out := "12 kubelet.service start waiting\n13 multi-user.target start waiting\n" + settleSep + "\n" +
		"kube-apiserver.service loaded failed failed Kubernetes API Server\n" + settleSep + "\n" +
		"ok\n"
	jobs, failed, readyz := parseSettle(out)
	if !slices.Equal(jobs, []string{"kubelet.service", "multi-user.target"}) || !slices.Equal(failed, []string{"kube-apiserver.service"}) || readyz != "ok" {
		t.Errorf("jobs %v, failed %v, readyz %q", jobs, failed, readyz)
	}
	// Nothing pending, nothing failed, no answer yet; and a cut-off output.
	for _, o := range []string{"\n" + settleSep + "\n" + settleSep + "\n", "", "garbage"} {
		if jobs, failed, readyz := parseSettle(o); len(jobs)+len(failed) != 0 || readyz != "" {
			t.Errorf("%q: jobs %v, failed %v, readyz %q", o, jobs, failed, readyz)
		}
	}
}

// settleOf is the stage/settle check of a report's only node.
func settleOf(t *testing.T, rep *Report) Check {
	t.Helper()
	var b bytes.Buffer
	rep.WriteText(&b)
	t.Log("\n" + b.String())
	if len(rep.Results) != 1 {
		t.Fatalf("%d results", len(rep.Results))
	}
	for _, c := range rep.Results[0].Checks {
		if c.Name == "stage/settle" {
			return c
		}
	}
	t.Fatal("no stage/settle check in the report")
	return Check{}
}

// TestVerifyStopsWaiting boots real guests and breaks them right after login: verify must
// stop waiting at once and say why, not use up the settle budget. One guest powers off
// during settle (QEMU exits: -no-reboot); on a master, etcd fails for good.
func TestVerifyStopsWaiting(t *testing.T) {
	image := defaultTestImage(t)
	const budget = 10 * time.Minute
	t.Run("powered off during settle", func(t *testing.T) {
		var broke time.Time
		rep, err := Run(context.Background(), Options{
			Image: image, Roles: []string{RoleMinion}, Accel: AccelAuto, TimeoutSettle: budget,
			ArtifactsDir: filepath.Join(t.TempDir(), "artifacts"),
			afterLogin: func(ctx context.Context, s *Session) error {
				broke = time.Now()
				_, err := s.Run(ctx, "systemd-run --on-active=2 systemctl poweroff --force --force")
				return err
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		c := settleOf(t, rep)
		if c.Pass || !strings.Contains(c.Got, "powered off or rebooted during settle") || !strings.Contains(c.Got, "console") {
			t.Errorf("stage/settle: %+v", c)
		}
		if waited := time.Since(broke); waited > budget/2 {
			t.Errorf("verify waited %s after the power-off (settle budget %s)", waited.Round(time.Second), budget)
		}
	})
	t.Run("master unit failed", func(t *testing.T) {
		const unit = "etcd.service" // the first master unit to start: it fails within seconds of the break
		rep, err := Run(context.Background(), Options{
			// The checks of a master without etcd wait for units that cannot start: 45 s of
			// them are enough to see that they ran and saved the journals.
			Image: image, Roles: []string{RoleMaster}, UserData: []string{UserDataIgnition}, Accel: AccelAuto,
			TimeoutSettle: budget, TimeoutChecks: 45 * time.Second,
			ArtifactsDir: filepath.Join(t.TempDir(), "artifacts"),
			afterLogin: func(ctx context.Context, s *Session) error {
				script := "mkdir -p /run/systemd/system/" + unit + ".d && " +
					"printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\nRestart=no\\n' > /run/systemd/system/" + unit + ".d/zz-broken.conf && " +
					"systemctl daemon-reload && systemctl restart --no-block " + unit
				out, err := s.Run(ctx, script)
				if err == nil && out.Exit != 0 {
					t.Errorf("breaking %s: exit %d: %s", unit, out.Exit, out.Stderr)
				}
				return err
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		c := settleOf(t, rep)
		if c.Pass || !strings.Contains(c.Got, "failed during boot") || !slices.Contains(c.Units, unit) {
			t.Errorf("stage/settle: %+v", c)
		}
		// Settle stops waiting; the checks that follow take their own time on a master without
		// an API server (each kubectl probe runs into its timeout).
		if settled := stageSeconds(rep.Results[0], "settle"); settled > (budget / 2).Seconds() {
			t.Errorf("settle waited %.0fs with %s failed (settle budget %s)", settled, unit, budget)
		}
		// The checks still ran after settle (any that finished must show the unit failed), and
		// the failed unit's journal was saved.
		for _, c := range rep.Results[0].Checks {
			if c.Name == "unit/"+unit+"/active" && c.Pass {
				t.Errorf("unit/%s/active passed: %+v", unit, c)
			}
		}
		if stageSeconds(rep.Results[0], "checks") == 0 {
			t.Error("the checks did not run after settle stopped")
		}
		saved := strings.Join(rep.Results[0].Artifacts, " ")
		if !strings.Contains(saved, unit) {
			t.Errorf("no journal of %s among the artifacts: %s", unit, saved)
		}
	})
}

// stageSeconds is how long a node's stage took (0 when it did not run).
func stageSeconds(r Result, name string) float64 {
	for _, s := range r.Stages {
		if s.Name == name {
			return s.Seconds
		}
	}
	return 0
}
