package verify

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/kubebake/kubebake/internal/shell"
)

// KeyPair is an ephemeral SSH key for one verify run: the private half never touches disk.
type KeyPair struct {
	Signer        ssh.Signer
	AuthorizedKey string // "ssh-ed25519 AAAA... kubebake-verify"
	priv          ed25519.PrivateKey
}

// NewKeyPair generates an ed25519 key pair.
func NewKeyPair() (*KeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " kubebake-verify"
	return &KeyPair{Signer: signer, AuthorizedKey: line, priv: priv}, nil
}

// PrivateKeyPEM returns the private key in OpenSSH form, for --keep (so a person can log in).
func (k *KeyPair) PrivateKeyPEM() ([]byte, error) {
	blk, err := ssh.MarshalPrivateKey(k.priv, "kubebake-verify")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(blk), nil
}

// Session is an authenticated SSH connection to a guest.
type Session struct {
	client  *ssh.Client
	Addr    string
	User    string
	HostKey ssh.PublicKey
}

// ErrNoBanner means nothing answered as an SSH server; ErrAuth means the server answered but
// refused the key (cloud-init or Ignition has not installed it yet, or never will).
var (
	ErrNoBanner = errors.New("no SSH banner")
	ErrAuth     = errors.New("SSH authentication refused")
)

// SSHBanner connects once and reads the server's identification line. Slirp accepts the TCP
// connection on the host side even before the guest listens, so only the banner proves that
// the guest's SSH server is up.
func SSHBanner(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoBanner, err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH-") {
		return "", fmt.Errorf("%w: %v", ErrNoBanner, err)
	}
	return strings.TrimSpace(line), nil
}

// Dial authenticates once with the key.
func Dial(ctx context.Context, addr, user string, signer ssh.Signer, timeout time.Duration) (*Session, error) {
	s := &Session{Addr: addr, User: user}
	cfg := &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		// The guest's host key is generated at its first boot: nothing to pin it against.
		// It is recorded so that the hygiene checks can compare it with the keys on disk.
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			s.HostKey = key
			return nil
		},
		Timeout: timeout,
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoBanner, err)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("%w: %v", ErrAuth, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrNoBanner, err)
	}
	conn.SetDeadline(time.Time{})
	s.client = ssh.NewClient(c, chans, reqs)
	return s, nil
}

// DialRetry dials until it succeeds or ctx ends, backing off from 1 s to 5 s between tries.
// The last error says whether the guest never answered or refused the key.
func DialRetry(ctx context.Context, addr, user string, signer ssh.Signer) (*Session, error) {
	wait := time.Second
	var last error
	for {
		s, err := Dial(ctx, addr, user, signer, 10*time.Second)
		if err == nil {
			return s, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), last)
		case <-time.After(wait):
		}
		if wait < 5*time.Second {
			wait += time.Second
		}
	}
}

// CmdResult is the outcome of one remote command.
type CmdResult struct {
	Stdout []byte
	Stderr []byte
	Exit   int
}

// Run runs a shell command line in the guest. A non-zero exit status is a CmdResult, not an
// error; errors are for a broken connection or ctx ending (the remote command is then
// signalled and the session closed).
func (s *Session) Run(ctx context.Context, cmdline string) (CmdResult, error) {
	return s.run(ctx, cmdline, nil)
}

// RunScript runs a shell script, given on standard input, in the guest.
func (s *Session) RunScript(ctx context.Context, script string) (CmdResult, error) {
	return s.run(ctx, "sh -s", strings.NewReader(script))
}

func (s *Session) run(ctx context.Context, cmdline string, stdin io.Reader) (CmdResult, error) {
	sess, err := s.client.NewSession()
	if err != nil {
		return CmdResult{}, fmt.Errorf("ssh %s: %w", s.Addr, err)
	}
	defer sess.Close()
	var out, errb bytes.Buffer
	sess.Stdout = &out
	sess.Stderr = &errb
	sess.Stdin = stdin
	done := make(chan error, 1)
	if err := sess.Start(cmdline); err != nil {
		return CmdResult{}, fmt.Errorf("ssh %s: %w", s.Addr, err)
	}
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		sess.Signal(ssh.SIGKILL)
		sess.Close()
		return CmdResult{Stdout: out.Bytes(), Stderr: errb.Bytes(), Exit: -1}, fmt.Errorf("guest command %q: %w", short(cmdline), ctx.Err())
	}
	res := CmdResult{Stdout: out.Bytes(), Stderr: errb.Bytes()}
	var ee *ssh.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Exit = ee.ExitStatus()
	default:
		return res, fmt.Errorf("guest command %q: %w", short(cmdline), err)
	}
	return res, nil
}

// Output runs a command and returns its standard output; a non-zero exit is an error that
// carries stderr.
func (s *Session) Output(ctx context.Context, cmdline string) ([]byte, error) {
	r, err := s.Run(ctx, cmdline)
	if err != nil {
		return nil, err
	}
	if r.Exit != 0 {
		return r.Stdout, fmt.Errorf("guest command %q exited %d: %s", short(cmdline), r.Exit, strings.TrimSpace(string(r.Stderr)))
	}
	return r.Stdout, nil
}

// ReadFile returns a guest file's content.
func (s *Session) ReadFile(ctx context.Context, path string) ([]byte, error) {
	q, err := shell.QuoteErr(path)
	if err != nil {
		return nil, fmt.Errorf("guest file %q: %w", path, err)
	}
	return s.Output(ctx, "cat -- "+q)
}

// sshCommand is the command line a person runs to log in to a kept guest as root through its
// forwarded port: the key file's path is quoted (the artifacts folder is the user's choice).
// No path holds a NUL byte (the kernel would refuse it), so Quote cannot panic here.
func sshCommand(keyFile, port string) string {
	return "ssh -i " + shell.Quote(keyFile) + " -p " + shell.Quote(port) + " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1"
}

// Close ends the connection.
func (s *Session) Close() error {
	if s.client == nil {
		return nil
	}
	return s.client.Close()
}

func short(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
