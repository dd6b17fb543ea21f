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

	"github.com/kubebake/kubebake/internal/testenv"
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
	for _, name := range []string{"lib.sh", "minion-join", "kubebake-discover"} {
		f, _ := l.File(ScriptDir + "/" + name)
		writeFile(t, filepath.Join(dir, name), string(f.Content), 0o755)
	}
	return dir
}

// TestMinionJoinWaits: with no master answering, the join keeps retrying with backoff and
// does not exit (the unit stays activating: waiting, not failed).
func TestMinionJoinWaits(t *testing.T) {
	testenv.NeedTool(t, "python3")
	scripts := joinScripts(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	k8s := filepath.Join(t.TempDir(), "k8s")
	cmd := exec.Command(filepath.Join(scripts, "minion-join"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KUBEBAKE_PATH=" + os.Getenv("PATH"), "KUBEBAKE_K8S_DIR=" + k8s,
		"KUBEBAKE_MASTER_ENDPOINT=" + addr, "KUBEBAKE_BOOTSTRAP_TOKEN=abcdef.0123456789abcdef",
		"KUBEBAKE_CA_CERT_HASH=sha256:" + strings.Repeat("a", 64)}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to stop its sleep too
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Until the second attempt is announced (about 5 s; a loaded machine takes longer, so the
	// limit is generous and only ends a join that never retries).
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
	for _, want := range []string{"cannot reach " + addr, "not ready (attempt 1); retrying in 5s", "not ready (attempt 2); retrying in 10s"} {
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
// master does not sign for gets four more tries 5 s apart (a token created a moment ago is
// signed a little later), then it is a refusal too.
func TestMinionJoinRefused(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 not installed: the join's refusals cannot be tested")
	}
	scripts := joinScripts(t)
	const id, secret = "abcdef", "0123456789abcdef"
	c := newTestCluster(t)
	c.signFor[id] = secret
	for _, tc := range []struct{ name, token, pin, want, refusal string }{
		{"wrong token", "zzzzzz.0123456789abcdef", c.pin, "but not for zzzzzz: KUBEBAKE_BOOTSTRAP_TOKEN is wrong, expired or deleted", "the master does not know this node's join token"},
		{"wrong secret", id + ".ffffffffffffffff", c.pin, "does not match the secret in KUBEBAKE_BOOTSTRAP_TOKEN", "the master refused the join"},
		{"wrong CA hash", id + "." + secret, "sha256:" + strings.Repeat("0", 64), "does not match KUBEBAKE_CA_CERT_HASH", "the master refused the join"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k8s := filepath.Join(t.TempDir(), "k8s")
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(scripts, "minion-join"))
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KUBEBAKE_PATH=" + os.Getenv("PATH"), "KUBEBAKE_K8S_DIR=" + k8s,
				"KUBEBAKE_PKI=" + filepath.Join(k8s, "pki"), "KUBEBAKE_MASTER_ENDPOINT=" + c.endpoint(),
				"KUBEBAKE_BOOTSTRAP_TOKEN=" + tc.token, "KUBEBAKE_CA_CERT_HASH=" + tc.pin}
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("minion-join kept waiting on a refusal:\n%s", out)
			}
			for _, want := range []string{"join refused", tc.want, tc.refusal} {
				if err == nil || !strings.Contains(string(out), want) {
					t.Errorf("%v; output lacks %q:\n%s", err, want, out)
				}
			}
			if n := strings.Count(string(out), "not signed by the master"); strings.Contains(string(out), "not ready") ||
				(tc.name == "wrong token") != (n == 4) {
				t.Errorf("a refusal was retried as a master not ready, or an unsigned token not 4 times:\n%s", out)
			}
			if _, err := os.Stat(filepath.Join(k8s, "bootstrap-kubelet.conf")); err == nil {
				t.Errorf("a refused join wrote the bootstrap kubeconfig")
			}
		})
	}
}
