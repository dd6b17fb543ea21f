package verify

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVerifyCluster boots the default image as one master and two minions (cloud-init,
// cloud-init, Ignition) on a private segment and runs every smoke step. Under TCG on two cores
// it takes the better part of an hour: run it alone, with a long -timeout.
func TestVerifyCluster(t *testing.T) {
	image := defaultTestImage(t)
	dir := t.TempDir()
	rep, err := RunCluster(context.Background(), ClusterOptions{
		Image: image, Accel: AccelAuto, ArtifactsDir: filepath.Join(dir, "artifacts"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The failed checks come first: CI shows the start of a failure's output, and the whole
	// report (every node's every check) runs to hundreds of lines.
	for _, r := range rep.Results {
		for _, c := range Failed(r.Checks) {
			t.Errorf("%s: %s: expected %s, got %s", r.Name(), c.Name, c.Expected, c.Got)
		}
	}
	if len(rep.Results) != 4 {
		t.Fatalf("%d results, want master, 2 minions and the cluster", len(rep.Results))
	}
	var steps []string
	for _, c := range rep.Results[3].Checks {
		steps = append(steps, strings.TrimPrefix(c.Name, "cluster/"))
	}
	if strings.Join(steps, " ") != strings.Join(SmokeSteps, " ") {
		t.Errorf("cluster checks %v, want %v", steps, SmokeSteps)
	}
	recordTimes(t, rep)
	if !rep.Pass {
		for _, r := range rep.Results {
			for _, a := range r.Artifacts {
				if data, err := os.ReadFile(a); err == nil {
					t.Logf("--- %s (tail)\n%s", a, tail(string(data), 30))
				}
			}
		}
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	t.Log("\n" + b.String())
}

// TestClusterBootHangReported boots a cluster from a blank disk: QEMU must accept the
// cluster NIC (a stream netdev on the switch's socket, with its MAC) and the API forward, the
// master's boot must time out by name, the minion must not be started, every smoke step must
// say why it did not run, and the master's serial log must be saved 0600 in a 0700 folder,
// with no VM, overlay or socket left behind.
func TestClusterBootHangReported(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	image := filepath.Join(dir, "blank.raw")
	if err := os.WriteFile(image, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	arts := filepath.Join(dir, "artifacts")
	start := time.Now()
	rep, err := RunCluster(context.Background(), ClusterOptions{
		Image: image, Manifest: fakeManifest(t, dir), Minions: 1, Name: "hang", Accel: AccelTCG,
		TimeoutBoot: 20 * time.Second, WorkDir: work, ArtifactsDir: arts,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster run over in %s", time.Since(start).Round(time.Second))
	if rep.Pass || len(rep.Results) != 3 {
		t.Fatalf("report: %+v", rep)
	}
	master, minion, cluster := rep.Results[0], rep.Results[1], rep.Results[2]
	if master.Node != "hang-master" || master.Checks[0].Name != "stage/boot" || !strings.Contains(master.Checks[0].Got, "boot hung") {
		t.Errorf("master: %+v", master)
	}
	if minion.Node != "hang-minion-1" || minion.Checks[0].Name != "stage/start" || !strings.Contains(minion.Checks[0].Got, "the master did not boot") {
		t.Errorf("minion: %+v", minion)
	}
	if len(cluster.Checks) != len(SmokeSteps) {
		t.Errorf("cluster checks: %+v", cluster.Checks)
	}
	for _, c := range cluster.Checks {
		if c.Pass || !strings.HasPrefix(c.Got, "not run: hang-master, hang-minion-1 did not boot") {
			t.Errorf("%s: %+v", c.Name, c)
		}
	}
	folder := filepath.Join(arts, "cluster-hang")
	if rep.ArtifactsDir != folder {
		t.Errorf("report's artifacts folder %q, want %q", rep.ArtifactsDir, folder)
	}
	if st, err := os.Stat(folder); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("artifacts folder: %v %v", st, err)
	}
	if len(master.Artifacts) == 0 || filepath.Base(master.Artifacts[0]) != "hang-master-serial.log" {
		t.Errorf("master artifacts: %v", master.Artifacts)
	}
	for _, a := range master.Artifacts {
		if st, err := os.Stat(a); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", a, st, err)
		}
	}
	assertNoLeftovers(t, work)
	if _, err := os.Stat(filepath.Join(work, "vnet.sock")); !os.IsNotExist(err) {
		t.Errorf("switch socket left behind: %v", err)
	}
}
