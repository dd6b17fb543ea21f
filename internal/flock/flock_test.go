package flock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestAcquireExcludesAndReleases(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	unlock, err := Acquire(context.Background(), p, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A second holder waits, says so once, and gives up with its context.
	waited := 0
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, p, func() { waited++ }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Acquire while held: %v", err)
	}
	if waited != 1 {
		t.Errorf("waiting called %d times", waited)
	}
	unlock()
	unlock() // twice is harmless
	again, err := Acquire(context.Background(), p, func() { t.Error("waited for a free lock") })
	if err != nil {
		t.Fatal(err)
	}
	again()
}
