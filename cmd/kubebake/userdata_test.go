package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/recipes"
)

// kb runs kubebake in process and returns its stdout, its stderr (logs) and its error.
// Flags keep their values between runs of one cobra tree, so callers pass every flag they use.
func kb(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	errFile, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	oldStderr := os.Stderr
	os.Stderr = errFile // the slog handler is made in PersistentPreRunE from os.Stderr
	defer func() { os.Stderr = oldStderr }()
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(errFile)
	rootCmd.SetArgs(args)
	runErr := rootCmd.Execute()
	errFile.Seek(0, 0)
	logs, _ := io.ReadAll(errFile)
	errFile.Close()
	return out.String(), string(logs), runErr
}

func TestClusterUserdataSeedCommands(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "demo.bundle.yaml")
	var allLogs strings.Builder
	mustRun := func(args ...string) string {
		t.Helper()
		out, logs, err := kb(t, append(args, "--log-level", "debug")...)
		allLogs.WriteString(logs)
		if err != nil {
			t.Fatalf("kubebake %s: %v\n%s", strings.Join(args, " "), err, logs)
		}
		return out
	}

	out := mustRun("cluster", "init", "demo", "--key-type", "ecdsa-p256", "--master-endpoint", "10.0.2.15:6443", "--force=false", "--out", bundle, "-o", "text")
	b, err := cloudinit.LoadBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, b.CACertHash) || strings.Contains(out, b.BootstrapToken) {
		t.Errorf("cluster init said %q", out)
	}
	if _, _, err := kb(t, "cluster", "init", "demo", "--force=false", "--out", bundle, "-o", "text"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second init: %v", err)
	}

	key := filepath.Join(dir, "id.pub")
	os.WriteFile(key, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ3BkTj1yR1Auho8J4BcJxb98ZjB/Ilunr/p1ZN1SzzG t@x\n"), 0o644)
	for _, f := range cloudinit.Formats {
		ud := mustRun("userdata", "--role", "master", "--bundle", bundle, "--format", string(f), "--ssh-key", key, "--roles-from", "", "--out", "", "-o", "text")
		want, _ := cloudinit.Render(b, "master", f, cloudinit.Options{SSHUser: "root", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ3BkTj1yR1Auho8J4BcJxb98ZjB/Ilunr/p1ZN1SzzG t@x"}})
		if ud != string(want) {
			t.Errorf("userdata --format %s differs from cloudinit.Render", f)
		}
	}
	udFile := filepath.Join(dir, "minion.ign")
	mustRun("userdata", "--role", "minion", "--bundle", bundle, "--format", "ignition", "--ssh-key", "", "--out", udFile, "-o", "text")
	if st, err := os.Stat(udFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("userdata --out: %v %v", st.Mode(), err)
	}
	iso := filepath.Join(dir, "seed.iso")
	mustRun("seed", "--role", "minion", "--bundle", bundle, "--format", "cloud-config", "--ssh-key", key, "--out", iso, "-o", "text")
	label, files, err := cloudinit.ReadSeedISO(iso)
	if err != nil || label != "cidata" || !strings.HasPrefix(string(files["user-data"]), "#cloud-config") {
		t.Errorf("seed: %q %v %v", label, err, len(files))
	}

	logs := allLogs.String()
	if !strings.Contains(logs, "level=DEBUG") {
		t.Fatalf("no debug logs were captured:\n%s", logs)
	}
	for _, secret := range []string{b.BootstrapToken, strings.Split(b.CAKey, "\n")[1], "PRIVATE KEY"} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret is in the logs: %q", secret)
		}
	}
}

func TestUserdataCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "b.yaml")
	if _, _, err := kb(t, "cluster", "init", "demo", "--key-type", "ecdsa-p256", "--force=false", "--out", bundle, "-o", "text"); err != nil {
		t.Fatal(err)
	}
	_, _, err := kb(t, "userdata", "--role", "worker", "--bundle", bundle, "--format", "cloud-config", "--roles-from", "", "--out", "", "-o", "text")
	if err == nil || !strings.Contains(err.Error(), "known roles are master, minion") {
		t.Errorf("unknown role: %v", err)
	}
	_, _, err = kb(t, "userdata", "--role", "minion", "--bundle", bundle, "--format", "yaml", "--out", "", "-o", "text")
	if err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("bad format: %v", err)
	}
	os.Chmod(bundle, 0o644)
	_, _, err = kb(t, "userdata", "--role", "minion", "--bundle", bundle, "--format", "cloud-config", "--out", "", "-o", "text")
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+bundle) {
		t.Errorf("0644 bundle: %v", err)
	}
	os.Chmod(bundle, 0o600)
	_, _, err = kb(t, "seed", "--role", "minion", "--bundle", bundle, "--format", "ignition", "--ssh-key", "", "--out", filepath.Join(dir, "s.iso"), "-o", "text")
	if err == nil || !strings.Contains(err.Error(), "fw_cfg") {
		t.Errorf("ignition seed: %v", err)
	}

	// A recipe's custom role is accepted with --roles-from.
	base, err := recipes.EmbeddedFile("debian-12.yaml")
	if err != nil {
		t.Fatal(err)
	}
	custom := strings.Replace(string(base), "\nroles:\n", "\nroles:\n  - name: ingress\n    units:\n      - kube-proxy.service\n", 1)
	recipe := filepath.Join(dir, "custom.yaml")
	os.WriteFile(recipe, []byte(custom), 0o644)
	out, _, err := kb(t, "userdata", "--role", "ingress", "--bundle", bundle, "--format", "shell", "--roles-from", recipe, "--ssh-key", "", "--out", "", "-o", "text")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "touch /etc/sysconfig/kubernetes-ingress\n") {
		t.Errorf("custom role shell:\n%s", out)
	}
}
