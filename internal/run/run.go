// Package run is the one way kubebake runs external commands: the command line is logged at
// debug level, stderr is captured into the error, and cancelling the context kills the command
// and every process it started (it runs in its own process group). URL credentials
// (user:password@) and PEM private keys are hidden in the logged line and in the error, and
// so are the strings a command names in Redact.
package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/kubebake/kubebake/internal/redact"
)

// Cmd describes one external command.
type Cmd struct {
	Name  string
	Args  []string
	Dir   string
	Env   []string // appended to the current environment; nil keeps it unchanged
	Stdin io.Reader
	// Stdout, when set, receives standard output instead of it being returned by Output.
	Stdout io.Writer
	// Stderr, when set, also receives standard error (it is captured for errors either way).
	Stderr io.Writer
	// Redact hides further secrets (a password given in an argument) in the logged command
	// line and in the error's line and stderr; nil: URL credentials and private keys only.
	Redact *redact.Redactor
}

// Command is a shorthand for Cmd{Name: name, Args: args}.
func Command(name string, args ...string) *Cmd { return &Cmd{Name: name, Args: args} }

// Error is returned when a command fails; it carries the tail of its stderr.
type Error struct {
	Line   string
	Err    error
	Stderr string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Line, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// stderrTail bounds how much stderr an error carries.
const stderrTail = 4096

// Run runs the command to completion.
func (c *Cmd) Run(ctx context.Context) error {
	_, err := c.run(ctx, c.Stdout)
	return err
}

// Output runs the command and returns its standard output.
func (c *Cmd) Output(ctx context.Context) ([]byte, error) {
	var out bytes.Buffer
	_, err := c.run(ctx, &out)
	return out.Bytes(), err
}

func (c *Cmd) run(ctx context.Context, stdout io.Writer) (*exec.Cmd, error) {
	line := c.Redact.String(c.String())
	slog.Debug("exec", "cmd", line, "dir", c.Dir)
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.Dir = c.Dir
	if c.Env != nil {
		cmd.Env = append(cmd.Environ(), c.Env...)
	}
	cmd.Stdin = c.Stdin
	cmd.Stdout = stdout
	var stderr tailBuffer
	if c.Stderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, c.Stderr)
	} else {
		cmd.Stderr = &stderr
	}
	// Own process group, so cancellation reaches grandchildren too (mmdebstrap, qemu helpers).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	slog.Debug("exec done", "cmd", c.Name, "elapsed", time.Since(start).Round(time.Millisecond), "err", err)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return cmd, &Error{Line: line, Err: err, Stderr: c.Redact.String(stderr.String())}
	}
	return cmd, nil
}

// String is the command line as a shell would show it.
func (c *Cmd) String() string {
	parts := make([]string, 0, len(c.Args)+1)
	for _, a := range append([]string{c.Name}, c.Args...) {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// IsNotFound reports whether err says the command's program is not installed.
func IsNotFound(err error) bool { return errors.Is(err, exec.ErrNotFound) }

// tailBuffer keeps the last stderrTail bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > stderrTail {
		t.b = append([]byte(nil), t.b[len(t.b)-stderrTail:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
