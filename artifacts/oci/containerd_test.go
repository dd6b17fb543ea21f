package oci

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
)

// The real proof: a private containerd (Debian's, the one the nodes run) imports the archive
// with the same command the first boot uses, names the three images from their annotations,
// unpacks them, and runs them the way a pod does: pause holds the network namespace, CoreDNS
// serves in it, busybox's nslookup asks CoreDNS; pause, as PID 1, exits 0 on SIGTERM.

const corednsVersion = "v1.15.0"

// ctrd is a containerd started for one test, on its own root, state and socket.
type ctrd struct {
	t    *testing.T
	sock string
}

// ctr runs `ctr --address SOCK -n k8s.io ARGS...` and returns its combined output.
func (c *ctrd) ctr(ctx context.Context, args ...string) (string, error) {
	c.t.Helper()
	return combinedCtx(ctx, &run.Cmd{Name: "ctr", Args: append([]string{"--address", c.sock, "-n", "k8s.io"}, args...)})
}

// startContainerd runs containerd with a minimal config (no CRI plugin: nothing here is
// Kubernetes) until the test ends; it removes every task it left first, since the runc
// shims live in process groups of their own.
func startContainerd(t *testing.T) *ctrd {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&run.Cmd{Name: "containerd", Args: []string{"--config", cfgPath}, Stdout: log, Stderr: log}).Run(ctx)
	}()
	c := &ctrd{t: t, sock: sock}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		if out, err := c.ctr(cctx, "task", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				c.ctr(cctx, "task", "kill", "-s", "SIGKILL", id)
				for i := 0; i < 100; i++ {
					if _, err := c.ctr(cctx, "task", "delete", id); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
		if out, err := c.ctr(cctx, "containers", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				c.ctr(cctx, "containers", "delete", id)
			}
		}
		cancel()
		<-done
		log.Close()
		if t.Failed() {
			data, _ := os.ReadFile(log.Name())
			t.Logf("containerd log (tail):\n%s", tail(string(data), 3000))
		}
	})
	// Wait until it serves (bounded: a containerd that never comes up fails the test).
	for i := 0; ; i++ {
		select {
		case err := <-done:
			data, _ := os.ReadFile(log.Name())
			t.Fatalf("containerd exited: %v\n%s", err, tail(string(data), 3000))
		default:
		}
		if _, err := c.ctr(context.Background(), "version"); err == nil {
			return c
		}
		if i == 600 {
			t.Fatal("containerd did not serve its socket within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// buildCoreDNS builds the CoreDNS binary from the Go module proxy, static as the image needs.
// The Go build cache makes later runs a link only. KUBEBAKE_TEST_COREDNS may name a binary
// of that version built before (e.g. the lock's, from the artifact cache) instead.
func buildCoreDNS(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KUBEBAKE_TEST_COREDNS"); p != "" {
		return p
	}
	testenv.NeedTime(t, 15*time.Minute) // builds CoreDNS from the Go module proxy
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute) // a hang guard only
	defer cancel()
	start := time.Now()
	out, err := combinedCtx(ctx, &run.Cmd{
		Name: "go", Args: []string{"install", "-trimpath", "-ldflags=-s -w", "github.com/coredns/coredns@" + corednsVersion},
		Env: []string{"CGO_ENABLED=0", "GOBIN=" + bin, "GOFLAGS=-mod=mod", "GOOS=linux", "GOARCH=amd64"},
		Dir: bin,
	})
	if err != nil {
		t.Fatalf("building coredns %s: %v\n%s", corednsVersion, err, tail(out, 3000))
	}
	t.Logf("built coredns %s in %v", corednsVersion, time.Since(start).Round(time.Second))
	return filepath.Join(bin, "coredns")
}

func TestContainerdImportAndRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd and builds CoreDNS; skipped under -short")
	}
	needRoot(t)
	needCommand(t, "containerd", "ctr", "runc")
	bb := busyboxBinary(t)
	version := busyboxVersion(t, bb)
	coredns := buildCoreDNS(t)

	start := time.Now()
	imgs, err := ClusterImages(
		BusyboxInput{Binary: bb, Version: version, SourceDateEpoch: testEpoch},
		CoreDNSInput{Binary: coredns, Version: corednsVersion, SourceDateEpoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	archive, err := WriteArchive(filepath.Join(t.TempDir(), "kubebake-images.tar"), imgs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built and wrote the archive in %v: %d bytes, sha256 %s", time.Since(start).Round(time.Millisecond), archive.Size, archive.SHA256)

	c := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // a hang guard only
	defer cancel()

	// What the first boot runs.
	start = time.Now()
	out, err := c.ctr(ctx, "images", "import", archive.Path)
	if err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	t.Logf("ctr images import (%v):\n%s", time.Since(start).Round(time.Millisecond), out)
	out, err = c.ctr(ctx, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{} // ref -> digest
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 3 {
			listed[f[0]] = f[2]
		}
	}
	for _, want := range archive.Images {
		if listed[want.Ref] != want.Digest {
			t.Errorf("ctr images ls: %s has digest %q, want %s", want.Ref, listed[want.Ref], want.Digest)
		}
	}
	if len(listed) != len(archive.Images) {
		t.Errorf("ctr images ls lists %d images, want %d:\n%s", len(listed), len(archive.Images), out)
	}
	if t.Failed() {
		t.FailNow()
	}
	busybox, pause, corednsRef := archive.Images[0].Ref, archive.Images[1].Ref, archive.Images[2].Ref

	// busybox runs from the unpacked snapshot: its user database, /tmp, applets.
	out, err = c.ctr(ctx, "run", "--rm", busybox, "bb-check", "sh", "-c", "id -un; ls -ld /tmp | head -c 10; echo; uname -m")
	if err != nil || strings.Fields(out) == nil || strings.Join(strings.Fields(out), " ") != "root drwxrwxrwt x86_64" {
		t.Errorf("busybox container: %v\n%s", err, out)
	}
	out, err = c.ctr(ctx, "run", "--rm", corednsRef, "coredns-version", "/coredns", "-version")
	if err != nil || !strings.Contains(out, "CoreDNS-"+strings.TrimPrefix(corednsVersion, "v")) {
		t.Errorf("coredns -version: %v\n%s", err, out)
	}

	// pause as PID 1: SIGTERM ends it with status 0 (ctr run returns the task's status).
	pauseDone := make(chan error, 1)
	var pauseOut string
	go func() {
		var err error
		pauseOut, err = c.ctr(ctx, "run", "--rm", pause, "pause-term")
		pauseDone <- err
	}()
	waitRunning(ctx, t, c, "pause-term")
	if out, err := c.ctr(ctx, "task", "kill", "-s", "SIGTERM", "pause-term"); err != nil {
		t.Fatalf("ctr task kill: %v\n%s", err, out)
	}
	if err := <-pauseDone; err != nil {
		t.Errorf("pause after SIGTERM: %v (want exit status 0)\n%s", err, pauseOut)
	}

	// A pod: pause holds the network namespace, CoreDNS and busybox join it.
	if out, err := c.ctr(ctx, "run", "-d", pause, "pod-sandbox"); err != nil {
		t.Fatalf("pause sandbox: %v\n%s", err, out)
	}
	pid := waitRunning(ctx, t, c, "pod-sandbox")
	netns := "network:/proc/" + pid + "/ns/net"
	conf := t.TempDir()
	corefile := ".:53 {\n    bind 127.0.0.1\n    hosts {\n        10.96.0.42 kubebake.test\n    }\n    errors\n}\n"
	if err := os.WriteFile(filepath.Join(conf, "Corefile"), []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.ctr(ctx, "run", "-d", "--with-ns", netns,
		"--mount", "type=bind,src="+conf+",dst=/etc/coredns,options=rbind:ro",
		corednsRef, "pod-coredns", "/coredns", "-conf", "/etc/coredns/Corefile"); err != nil {
		t.Fatalf("coredns in the pod: %v\n%s", err, out)
	}
	waitRunning(ctx, t, c, "pod-coredns")
	out, err = c.ctr(ctx, "run", "--rm", "--with-ns", netns, busybox, "pod-client", "sh", "-c",
		`i=0; until nslookup kubebake.test 127.0.0.1; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.2; done`)
	if err != nil || !strings.Contains(out, "10.96.0.42") {
		t.Errorf("nslookup kubebake.test through CoreDNS in the pod: %v\n%s", err, out)
	} else {
		t.Logf("nslookup from busybox in the pod:\n%s", out)
	}
}

// waitRunning waits until a task is RUNNING and returns its PID.
func waitRunning(ctx context.Context, t *testing.T, c *ctrd, id string) string {
	t.Helper()
	for i := 0; i < 600; i++ {
		out, _ := c.ctr(ctx, "task", "ls")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
				return f[1]
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("task %s never ran", id)
	return ""
}
