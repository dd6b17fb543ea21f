package roles

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func joinScripts(t *testing.T) string {
	t.Helper()
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	l := mustRender(t, r, fakeLock(r))
	dir := filepath.Join(t.TempDir(), "lib")
	for _, name := range []string{"lib.sh", "minion-join"} {
		f, _ := l.File(ScriptDir + "/" + name)
		writeFile(t, filepath.Join(dir, name), string(f.Content), 0o755)
	}
	return dir
}

// joinBins is a folder with the lock's kubeadm and kubectl, which the join runs, first on the
// PATH the join tests give it.
func joinBins(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the lock's kubeadm")
	}
	if dir := os.Getenv("KUBEBAKE_TEST_BIN"); dir != "" {
		return dir
	}
	return fetchLockedBins(t, "kubeadm", "kubectl")
}

// joinEnv is the environment minion-join runs with in the tests: the lock's kubeadm first on
// the PATH, kubeadm's discovery cut to 5 s a run, and the given settings.
func joinEnv(bin, k8s string, settings ...string) []string {
	path := bin + ":" + os.Getenv("PATH")
	return append([]string{"PATH=" + path, "KUBEBAKE_PATH=" + path, "HOME=" + filepath.Dir(k8s),
		"KUBEBAKE_K8S_DIR=" + k8s, "KUBEBAKE_RUN=" + filepath.Join(filepath.Dir(k8s), "run"),
		"KUBEBAKE_JOIN_DISCOVERY_TIMEOUT=5s"}, settings...)
}

// TestMinionJoinWaits: with no master answering, the join keeps retrying with backoff and
// does not exit (the unit stays activating: waiting, not failed).
func TestMinionJoinWaits(t *testing.T) {
	bin := joinBins(t)
	scripts := joinScripts(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	k8s := filepath.Join(t.TempDir(), "k8s")
	cmd := exec.Command(filepath.Join(scripts, "minion-join"))
	cmd.Env = joinEnv(bin, k8s, "KUBEBAKE_MASTER_ENDPOINT="+addr, "KUBEBAKE_BOOTSTRAP_TOKEN=abcdef.0123456789abcdef",
		"KUBEBAKE_CA_CERT_HASH=sha256:"+strings.Repeat("a", 64))
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to stop its sleep too
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Until the second attempt is announced (about 15 s: two kubeadm runs of 5 s and a 5 s
	// pause; a loaded machine takes longer, so the limit is generous and only ends a join that
	// never retries).
	deadline := time.After(2 * time.Minute)
wait:
	for !strings.Contains(out.String(), "not ready (attempt 2)") {
		select {
		case err := <-done:
			t.Fatalf("minion-join exited (%v) while the master is unreachable; it must wait:\n%s", err, out.String())
		case <-deadline:
			break wait
		case <-time.After(200 * time.Millisecond):
		}
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	got := out.String()
	for _, want := range []string{"failed to request the cluster-info ConfigMap", addr, "connection refused",
		"not ready (attempt 1); retrying in 5s", "not ready (attempt 2); retrying in 10s"} {
		if !strings.Contains(got, want) {
			t.Errorf("join output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "0123456789abcdef") {
		t.Errorf("the token secret is in the join's output:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(k8s, "bootstrap-kubelet.conf")); err == nil {
		t.Errorf("a bootstrap kubeconfig was written without a master")
	}
}

// TestMinionJoinSettings: missing or malformed settings fail at once with a clear message.
func TestMinionJoinSettings(t *testing.T) {
	scripts := joinScripts(t)
	k8s := filepath.Join(t.TempDir(), "k8s")
	base := []string{"PATH=" + os.Getenv("PATH"), "KUBEBAKE_PATH=" + os.Getenv("PATH"), "KUBEBAKE_K8S_DIR=" + k8s}
	cases := []struct {
		env  []string
		want string
	}{
		{nil, "KUBEBAKE_MASTER_ENDPOINT is not set: the minion's user-data must write it to /etc/kubebake/cluster.env"},
		{[]string{"KUBEBAKE_MASTER_ENDPOINT=10.0.2.15:6443", "KUBEBAKE_BOOTSTRAP_TOKEN=x"}, "KUBEBAKE_CA_CERT_HASH is not set"},
		{[]string{"KUBEBAKE_MASTER_ENDPOINT=10.0.2.15", "KUBEBAKE_BOOTSTRAP_TOKEN=x", "KUBEBAKE_CA_CERT_HASH=sha256:00"}, `KUBEBAKE_MASTER_ENDPOINT "10.0.2.15" in /etc/kubebake/cluster.env is not host:port`},
		{[]string{"KUBEBAKE_MASTER_ENDPOINT=10.0.2.15:6443", "KUBEBAKE_BOOTSTRAP_TOKEN=Abcdef.0123456789abcdef", "KUBEBAKE_CA_CERT_HASH=sha256:00"}, "KUBEBAKE_BOOTSTRAP_TOKEN in /etc/kubebake/cluster.env is not a kubeadm token"},
		{[]string{"KUBEBAKE_MASTER_ENDPOINT=10.0.2.15:6443", "KUBEBAKE_BOOTSTRAP_TOKEN=abcdef.0123456789abcdef", "KUBEBAKE_CA_CERT_HASH=md5:00"}, "KUBEBAKE_CA_CERT_HASH in /etc/kubebake/cluster.env is not sha256:<64 hex digits>"},
	}
	for _, c := range cases {
		cmd := exec.Command(filepath.Join(scripts, "minion-join"))
		cmd.Env = append(append([]string(nil), base...), c.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("env %v: %v, want a failure saying %q:\n%s", c.env, err, c.want, out)
		}
	}
	// Already joined: nothing to do.
	writeFile(t, filepath.Join(k8s, "kubelet.conf"), "apiVersion: v1\n", 0o600)
	cmd := exec.Command(filepath.Join(scripts, "minion-join"))
	cmd.Env = base
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "already joined") {
		t.Errorf("joined node: %v\n%s", err, out)
	}
}

// TestMinionJoinRefused: a master that answers but knows neither the token nor the CA hash
// is a refusal, named (the unit fails), not a wait that ends in a generic timeout. A token the
// master does not sign for gets three kubeadm runs (a token created a moment ago is signed a
// little later), then it is a refusal too.
func TestMinionJoinRefused(t *testing.T) {
	bin := joinBins(t)
	scripts := joinScripts(t)
	const id, secret = "abcdef", "0123456789abcdef"
	c := newTestCluster(t)
	c.signFor[id] = secret
	run := func(t *testing.T, c *testCluster, token, pin string, limit time.Duration) (string, error, bool) {
		k8s := filepath.Join(t.TempDir(), "k8s")
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(scripts, "minion-join"))
		cmd.Env = joinEnv(bin, k8s, "KUBEBAKE_MASTER_ENDPOINT="+c.endpoint(), "KUBEBAKE_BOOTSTRAP_TOKEN="+token, "KUBEBAKE_CA_CERT_HASH="+pin)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		out, err := cmd.CombinedOutput()
		if _, err := os.Stat(filepath.Join(k8s, "bootstrap-kubelet.conf")); err == nil {
			t.Errorf("a join that was not accepted wrote the bootstrap kubeconfig")
		}
		if strings.Contains(string(out), strings.SplitN(token, ".", 2)[1]) {
			t.Errorf("the token secret is in the join's output:\n%s", out)
		}
		return string(out), err, ctx.Err() != nil
	}
	for _, tc := range []struct{ name, token, pin, want string }{
		{"wrong token", "zzzzzz.0123456789abcdef", c.pin, "join refused: the master serves cluster-info but has not signed it for bootstrap token zzzzzz (3 tries of 5s): KUBEBAKE_BOOTSTRAP_TOKEN is wrong, expired or deleted"},
		{"wrong secret", id + ".ffffffffffffffff", c.pin, "join refused: cluster-info's signature for token abcdef does not match the secret in KUBEBAKE_BOOTSTRAP_TOKEN"},
		{"wrong CA hash", id + "." + secret, "sha256:" + strings.Repeat("0", 64), "join refused: the cluster CA of the master does not match KUBEBAKE_CA_CERT_HASH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err, timedOut := run(t, c, tc.token, tc.pin, 2*time.Minute)
			if timedOut {
				t.Fatalf("minion-join kept waiting on a refusal:\n%s", out)
			}
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("%v; output lacks %q:\n%s", err, tc.want, out)
			}
			if n := strings.Count(out, "not signed by the master"); strings.Contains(out, "not ready") ||
				(tc.name == "wrong token") != (n == 3) {
				t.Errorf("a refusal was retried as a master not ready, or an unsigned token not 3 times:\n%s", out)
			}
		})
	}
}
