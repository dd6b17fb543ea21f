package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

func TestLayerCommand(t *testing.T) {
	r, err := recipes.Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	// A lock pinning every input of the recipe, as `kubebake lock` writes it.
	l := &recipes.Lock{Recipe: r.Name, InputsDigest: r.InputsDigest(), SourceDateEpoch: 1767225600}
	for _, in := range r.Inputs() {
		l.Artifacts = append(l.Artifacts, recipes.LockedArtifact{Name: in.Name, Kind: in.Kind, Source: in.Source.Type,
			Version: "v1.35.4", SHA256: strings.Repeat("ab", 32), Size: 42})
	}
	lockFile := filepath.Join(t.TempDir(), "debian-12.lock")
	if err := recipes.WriteLock(lockFile, l); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, logs, err := kb(t, append([]string{"layer"}, args...)...)
		if err != nil {
			t.Fatalf("kubebake layer %s: %v\n%s", strings.Join(args, " "), err, logs)
		}
		return out
	}

	out := run("debian-12", "--lock", lockFile, "--units=false", "--cat=", "-o", "text")
	for _, want := range []string{"/usr/bin/kubelet", "artifact kubelet sha256:abababababab", "/opt/cni/bin/loopback",
		"/usr/lib/systemd/system/kubelet.service.d/10-role.conf", "lock " + lockFile} {
		if !strings.Contains(out, want) {
			t.Errorf("layer output lacks %q:\n%s", want, out)
		}
	}

	var res layerResult
	if err := json.Unmarshal([]byte(run("debian-12", "--lock", lockFile, "--units=false", "--cat=", "-o", "json")), &res); err != nil {
		t.Fatal(err)
	}
	if res.Unlocked || res.LockHash != recipes.LockHash(l) || len(res.Files) < 50 {
		t.Errorf("json result: unlocked %v, lock hash %s, %d files", res.Unlocked, res.LockHash, len(res.Files))
	}

	units := run("debian-12", "--lock", lockFile, "--units", "--cat=", "-o", "text")
	if !strings.Contains(units, "kubelet.service") || !strings.Contains(units, "Debian package (drop-in only)") {
		t.Errorf("--units:\n%s", units)
	}

	drop := run("debian-12", "--lock", lockFile, "--units=false", "--cat", "/usr/lib/systemd/system/etcd.service.d/10-role.conf", "-o", "text")
	if !strings.Contains(drop, "ConditionPathExists=/etc/sysconfig/kubernetes-master\n") {
		t.Errorf("--cat:\n%s", drop)
	}
	if _, _, err := kb(t, "layer", "debian-12", "--lock", lockFile, "--units=false", "--cat", "/usr/bin/kubelet", "-o", "text"); err == nil || !strings.Contains(err.Error(), "not a rendered file") {
		t.Errorf("--cat of a binary: %v", err)
	}

	// With the recipe's own lock, or none (then marked unlocked), the layer is shown.
	out, logs, err := kb(t, "layer", "debian-12", "--lock=", "--units=false", "--cat=", "-o", "text")
	if err != nil {
		t.Fatalf("own lock: %v\n%s", err, logs)
	}
	if !strings.Contains(out, "/usr/bin/kubelet") || (strings.Contains(logs, "without a lock") && !strings.Contains(out, "(not locked)")) {
		t.Errorf("output with the recipe's own lock:\n%s\n%s", out, logs)
	}
}
