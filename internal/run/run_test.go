package run

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/redact"
)

func TestOutputAndStderrInError(t *testing.T) {
	out, err := Command("sh", "-c", "echo out; echo oops >&2").Output(context.Background())
	if err != nil || string(out) != "out\n" {
		t.Fatalf("Output = %q, %v", out, err)
	}
	err = Command("sh", "-c", "echo 'disk on fire' >&2; exit 3").Run(context.Background())
	var rerr *Error
	if !errors.As(err, &rerr) {
		t.Fatalf("err = %v, want *run.Error", err)
	}
	if !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("error %q lacks the stderr or the exit status", err)
	}
}

func TestStderrTailIsBounded(t *testing.T) {
	err := Command("sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1").Run(context.Background())
	var rerr *Error
	if !errors.As(err, &rerr) {
		t.Fatal(err)
	}
	if len(rerr.Stderr) > stderrTail || !strings.HasSuffix(strings.TrimSpace(rerr.Stderr), "END") {
		t.Errorf("stderr kept %d bytes, ending %q; want at most %d ending END", len(rerr.Stderr), rerr.Stderr[len(rerr.Stderr)-10:], stderrTail)
	}
}

func TestNotFound(t *testing.T) {
	err := Command("kubebake-no-such-program").Run(context.Background())
	if !IsNotFound(err) {
		t.Errorf("IsNotFound(%v) = false", err)
	}
}

// Cancelling the context kills the command and the processes it started (its group).
func TestCancelKillsGrandchildren(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild.pid")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// The grandchild ignores SIGTERM and outlives a plain kill of its parent.
		done <- Command("sh", "-c", "sh -c 'trap \"\" TERM; echo $$ > "+pidFile+"; exec sleep 300' & wait").Run(ctx)
	}()
	var pid int
	for i := 0; i < 100 && pid == 0; i++ {
		time.Sleep(50 * time.Millisecond)
		if b, err := os.ReadFile(pidFile); err == nil && strings.TrimSpace(string(b)) != "" {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	if pid == 0 {
		t.Fatal("the grandchild never started")
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	for i := 0; i < 100; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("grandchild %d still runs after cancel", pid)
	syscall.Kill(pid, syscall.SIGKILL)
}

func TestStringQuotes(t *testing.T) {
	got := Command("mke2fs", "-L", "root fs", "-d", "").String()
	if got != `mke2fs -L "root fs" -d ""` {
		t.Errorf("String() = %s", got)
	}
}

// The logged command line and the error hide URL credentials and the command's secrets.
func TestRedactedLineAndStderr(t *testing.T) {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)
	cmd := Command("sh", "-c", "echo \"E: Failed to fetch $0: 401 for hunter22-pass\" >&2; exit 1", "http://apt:hunter22-pass@127.0.0.1:9/debian")
	cmd.Redact = redact.New("hunter22-pass")
	err := cmd.Run(context.Background())
	var rerr *Error
	if !errors.As(err, &rerr) {
		t.Fatalf("err = %v", err)
	}
	for what, s := range map[string]string{"log": buf.String(), "error": err.Error(), "line": rerr.Line, "stderr": rerr.Stderr} {
		if strings.Contains(s, "hunter22") {
			t.Errorf("the %s shows the password: %s", what, s)
		}
	}
	if !strings.Contains(rerr.Stderr, "http://***@127.0.0.1:9/debian: 401 for ***") || !strings.Contains(rerr.Line, "http://***@127.0.0.1:9/debian") {
		t.Errorf("line %q, stderr %q", rerr.Line, rerr.Stderr)
	}
}
