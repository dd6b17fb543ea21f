package verify

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/manifest"
)

// fakeManifest is enough of a manifest for runs that never reach the checks.
func fakeManifest(t *testing.T, dir string) string {
	t.Helper()
	m := map[string]any{
		"apiVersion": manifest.APIVersion, "kind": manifest.Kind,
		"files": []map[string]any{{"path": "/usr/bin/kubelet", "type": "file", "artifact": "kubelet", "sha256": "00"}},
		"units": []map[string]any{{"name": "kubelet.service", "roles": []string{"minion"}}},
	}
	b, _ := json.Marshal(m)
	p := filepath.Join(dir, "manifest.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func requireQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU: skipped with -short")
	}
	requireTool(t, "qemu-system-x86_64")
	requireTool(t, "qemu-img")
	if _, err := FindFirmware(); err != nil {
		testenv.Missing(t, "OVMF firmware", err.Error())
	}
}

// TestBootHangReported boots a disk with nothing on it: the firmware finds no boot loader and
// no SSH server ever answers. The report must name the boot stage, keep the serial log, and
// leave no QEMU process and no overlay behind.
func TestBootHangReported(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	image := filepath.Join(dir, "blank.raw")
	if err := os.WriteFile(image, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	rep, err := Run(context.Background(), Options{
		Image: image, Manifest: fakeManifest(t, dir), Roles: []string{RoleMinion}, Accel: AccelTCG,
		TimeoutBoot: 20 * time.Second, WorkDir: work, ArtifactsDir: filepath.Join(dir, "artifacts"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pass || len(rep.Results) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	c := rep.Results[0].Checks[0]
	if c.Name != "stage/boot" || !strings.Contains(c.Got, "boot hung") {
		t.Errorf("stage check: %+v", c)
	}
	t.Logf("%s: %s", c.Name, c.Got)
	arts := rep.Results[0].Artifacts
	if len(arts) == 0 || !strings.HasSuffix(arts[0], "minion-cloud-init-serial.log") {
		t.Errorf("artifacts: %v", arts)
	}
	assertNoLeftovers(t, work)
}

// TestCancelStopsEverything cancels a run while the VM boots (Ctrl-C does the same).
func TestCancelStopsEverything(t *testing.T) {
	requireQEMU(t)
	dir := t.TempDir()
	image := filepath.Join(dir, "blank.raw")
	os.WriteFile(image, make([]byte, 8<<20), 0o644)
	work := filepath.Join(dir, "work")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, Options{
		Image: image, Manifest: fakeManifest(t, dir), Roles: []string{RoleMaster, RoleMinion}, Accel: AccelTCG,
		WorkDir: work, ArtifactsDir: filepath.Join(dir, "artifacts"),
	})
	if err == nil {
		t.Fatal("cancelled run returned no error")
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("run took %s to stop after cancel", time.Since(start))
	}
	assertNoLeftovers(t, work)
}

// assertNoLeftovers: no QEMU runs on files of work, and no overlay or vars copy remains.
func assertNoLeftovers(t *testing.T, work string) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	out, _ := exec.Command("pgrep", "-af", "qemu-system").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, work) {
			t.Errorf("QEMU still running: %s", l)
		}
	}
	for _, pat := range []string{"*.qcow2", "*-vars.fd"} {
		left, _ := filepath.Glob(filepath.Join(work, pat))
		if len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	}
}

// TestAccelProbe runs the real KVM probe: on this project's machines /dev/kvm exists but cannot
// boot firmware, so auto must come out as tcg with a reason; on real hardware, kvm.
func TestAccelProbe(t *testing.T) {
	requireQEMU(t)
	start := time.Now()
	ok, verdict, err := ProbeKVM(context.Background(), "", Firmware{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("KVM usable: %v (%s) in %s", ok, verdict, time.Since(start).Round(time.Millisecond))
	if verdict == "" {
		t.Error("no verdict")
	}
	accel, _, err := ResolveAccel(context.Background(), AccelAuto, "", Firmware{})
	if err != nil || (accel != AccelKVM && accel != AccelTCG) || (accel == AccelKVM) != ok {
		t.Errorf("ResolveAccel(auto) = %s, %v (probe said %v)", accel, err, ok)
	}
	if a, _, _ := ResolveAccel(context.Background(), AccelTCG, "", Firmware{}); a != AccelTCG {
		t.Errorf("tcg resolved to %s", a)
	}
	if _, _, err := ResolveAccel(context.Background(), "hvf", "", Firmware{}); err == nil {
		t.Error("unknown accelerator accepted")
	}
}
