package vnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// hangGuard bounds every wait in these tests so that a bug fails the test instead of hanging
// it. It is not a speed requirement: the happy path takes milliseconds.
const hangGuard = 30 * time.Second

// testLog sends the switch's log to the test's log and keeps a copy to search.
type testLog struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// count returns how many log lines contain every one of substrs.
func (l *testLog) count(substrs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
lines:
	for _, line := range strings.Split(l.b.String(), "\n") {
		for _, sub := range substrs {
			if !strings.Contains(line, sub) {
				continue lines
			}
		}
		n++
	}
	return n
}

var (
	testSubnet   = netip.MustParsePrefix("10.88.0.0/24")
	testServerIP = netip.MustParseAddr("10.88.0.1")
)

// startSwitch starts a switch on a socket in a fresh folder; it is closed when the test ends.
func startSwitch(t *testing.T, leases ...Lease) (*Switch, *testLog) {
	t.Helper()
	logs := &testLog{t: t}
	s, err := Start(context.Background(), Config{
		Socket:   filepath.Join(t.TempDir(), "vnet.sock"),
		Subnet:   testSubnet,
		ServerIP: testServerIP,
		Leases:   leases,
		Log:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// fakePort is a VM NIC as the switch sees it: a unix stream connection speaking QEMU's
// length-prefixed framing, written here independently of the switch's code.
type fakePort struct {
	t    *testing.T
	name string
	mac  [6]byte
	conn net.Conn
}

// connect opens n ports (MACs 52:54:00:00:00:01, ...) and waits until the switch has them all.
func connect(t *testing.T, s *Switch, names ...string) []*fakePort {
	t.Helper()
	want := s.Stats().Ports + len(names)
	var ports []*fakePort
	for i, name := range names {
		c, err := net.Dial("unix", s.Socket())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ports = append(ports, &fakePort{t: t, name: name, mac: [6]byte{0x52, 0x54, 0, 0, 0, byte(i + 1)}, conn: c})
	}
	waitFor(t, fmt.Sprintf("%d ports", want), func() bool { return s.Stats().Ports == want })
	return ports
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *fakePort) send(frame []byte) {
	p.t.Helper()
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(frame)))
	if _, err := p.conn.Write(append(msg, frame...)); err != nil {
		p.t.Fatalf("%s: send: %v", p.name, err)
	}
}

// recv returns the next frame the switch delivers to this port.
func (p *fakePort) recv() []byte {
	p.t.Helper()
	frame, err := p.tryRecv()
	if err != nil {
		p.t.Fatalf("%s: recv: %v", p.name, err)
	}
	return frame
}

func (p *fakePort) tryRecv() ([]byte, error) {
	p.conn.SetReadDeadline(time.Now().Add(hangGuard))
	var hdr [4]byte
	if _, err := io.ReadFull(p.conn, hdr[:]); err != nil {
		return nil, err
	}
	frame := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(p.conn, frame); err != nil {
		return nil, fmt.Errorf("frame body: %w", err)
	}
	return frame, nil
}

// rawFrame builds an Ethernet frame with an experimental EtherType and a text payload, so
// that a test can tell its frames apart.
func rawFrame(dst, src [6]byte, text string) []byte {
	f := append(append(append([]byte{}, dst[:]...), src[:]...), 0x88, 0xb5)
	f = append(f, text...)
	for len(f) < 60 {
		f = append(f, 0)
	}
	return f
}

func frameText(f []byte) string {
	if len(f) < 14 || f[12] != 0x88 || f[13] != 0xb5 {
		return fmt.Sprintf("<non-test frame, type %x>", f[12:14])
	}
	return string(bytes.TrimRight(f[14:], "\x00"))
}

var bcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// switchGoroutines lists the goroutines still running code of this package.
func switchGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "verify/vnet.(*Switch)") || strings.Contains(g, "verify/vnet.Start") {
			found = append(found, g)
		}
	}
	return found
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(fmt.Sprint(err), "connection reset")
}
