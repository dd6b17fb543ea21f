package run

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
