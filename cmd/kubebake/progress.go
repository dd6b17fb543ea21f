package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubebake/kubebake/builder"
)

// buildProgress shows build stages on stderr: on a terminal one live line (stage, bytes,
// elapsed) redrawn every half second, otherwise a plain line per stage and log message.
type buildProgress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	cur   builder.Event
	at    time.Time
	drawn time.Time
	stop  chan struct{}
	done  sync.WaitGroup
	once  sync.Once
}

func newBuildProgress(w io.Writer) *buildProgress {
	p := &buildProgress{w: w, stop: make(chan struct{}), tty: isTerminal(w)}
	if p.tty {
		p.done.Add(1)
		go p.ticker()
	}
	return p
}

// isTerminal says whether w is a terminal (live progress lines) or a file or pipe (plain lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (p *buildProgress) ticker() {
	defer p.done.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			if p.cur.Stage != "" {
				p.redraw()
			}
			p.mu.Unlock()
		}
	}
}

// redraw writes the live line; the caller holds mu.
func (p *buildProgress) redraw() {
	e := p.cur
	elapsed := time.Since(p.at).Round(100 * time.Millisecond)
	line := fmt.Sprintf("[%d/%d] %-9s %s", e.Index, e.Stages, e.Stage, elapsed)
	switch {
	case e.Total > 0 && e.Stage == "outputs":
		line += fmt.Sprintf("  %d/%d formats", e.Bytes, e.Total)
	case e.Total > 0 && e.Bytes > 0:
		line += fmt.Sprintf("  %s / %s", humanBytes(e.Bytes), humanBytes(e.Total))
	case e.Bytes > 0:
		line += "  " + humanBytes(e.Bytes)
	}
	if e.Message != "" {
		msg := e.Message
		if len(msg) > 60 {
			msg = msg[:60] + "..."
		}
		line += "  " + msg
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.drawn = time.Now()
}

// Line prints one plain line (above the live line on a terminal).
func (p *buildProgress) Line(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
	if p.tty && p.cur.Stage != "" {
		p.redraw()
	}
}

// Event receives the builder's progress.
func (p *buildProgress) Event(e builder.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case builder.EventStart:
		p.cur, p.at = e, time.Now()
		if !p.tty {
			fmt.Fprintf(p.w, "build: [%d/%d] %s\n", e.Index, e.Stages, e.Stage)
		} else {
			p.redraw()
		}
	case builder.EventProgress:
		msg := p.cur.Message
		p.cur.Bytes, p.cur.Total = e.Bytes, e.Total
		if e.Message != "" {
			p.cur.Message = e.Message
		} else {
			p.cur.Message = msg
		}
		if p.tty && time.Since(p.drawn) >= 200*time.Millisecond {
			p.redraw()
		}
	case builder.EventLog:
		if p.tty {
			p.cur.Message = e.Message
			p.redraw()
		} else {
			fmt.Fprintf(p.w, "build: %s: %s\n", e.Stage, e.Message)
		}
	case builder.EventDone:
		done := fmt.Sprintf("build: [%d/%d] %s done in %s", e.Index, e.Stages, e.Stage, e.Elapsed.Round(10*time.Millisecond))
		if p.cur.Message != "" && e.Stage == "rootfs" {
			done += " (" + p.cur.Message + ")"
		}
		if p.tty {
			fmt.Fprintf(p.w, "\r\033[K%s\n", done)
		} else {
			fmt.Fprintln(p.w, done)
		}
		p.cur = builder.Event{}
	}
}

// Close stops the live line.
func (p *buildProgress) Close() {
	p.once.Do(func() {
		close(p.stop)
		p.done.Wait()
		p.mu.Lock()
		if p.tty && p.cur.Stage != "" {
			fmt.Fprint(p.w, "\r\033[K")
		}
		p.mu.Unlock()
	})
}
