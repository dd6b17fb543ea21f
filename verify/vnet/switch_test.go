package vnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// expect fails unless p's next frame carries text.
func expect(t *testing.T, p *fakePort, text string) {
	t.Helper()
	if got := frameText(p.recv()); got != text {
		t.Fatalf("%s received %q, want %q", p.name, got, text)
	}
}

func TestBroadcastFloodsAndUnicastGoesOnlyToTheLearnedPort(t *testing.T) {
	s, _ := startSwitch(t)
	ps := connect(t, s, "a", "b", "c")
	a, b, c := ps[0], ps[1], ps[2]

	// A broadcast reaches every other port, never its sender.
	a.send(rawFrame(bcast, a.mac, "hello from a"))
	expect(t, b, "hello from a")
	expect(t, c, "hello from a")

	// A unicast to a MAC nobody has sent from is flooded.
	unknown := [6]byte{0x52, 0x54, 0, 0, 0, 0x99}
	b.send(rawFrame(unknown, b.mac, "b to nobody"))
	expect(t, a, "b to nobody")
	expect(t, c, "b to nobody")

	// a's MAC was learned from its broadcast: b's unicast to it reaches a only. c's next frame
	// is the marker b broadcasts after it (each port's frames keep their order), so c did not
	// get the unicast.
	b.send(rawFrame(a.mac, b.mac, "b to a"))
	b.send(rawFrame(bcast, b.mac, "marker 1"))
	expect(t, a, "b to a")
	expect(t, a, "marker 1")
	expect(t, c, "marker 1")

	// The largest frame the framing allows passes whole; b was learned by now.
	big := rawFrame(b.mac, a.mac, "big")
	big = append(big, bytes.Repeat([]byte{0xab}, maxFrameLen-len(big))...)
	a.send(big)
	a.send(rawFrame(bcast, a.mac, "marker 2"))
	if got := b.recv(); !bytes.Equal(got, big) {
		t.Fatalf("b received a %d-byte frame, want the %d-byte one a sent", len(got), len(big))
	}
	expect(t, b, "marker 2")
	expect(t, c, "marker 2")

	st := s.Stats()
	// Copies: 2 (a's broadcast) + 2 (flood) + 1 (unicast) + 2 + 1 (big) + 2 = 10.
	if st.FramesIn != 6 || st.Forwarded != 10 || st.Dropped != 0 || st.Ports != 3 {
		t.Errorf("stats = %+v, want 6 in, 10 forwarded, 0 dropped, 3 ports", st)
	}
}

func TestDisconnectedPortIsForgotten(t *testing.T) {
	s, _ := startSwitch(t)
	ps := connect(t, s, "a", "b", "c")
	a, b, c := ps[0], ps[1], ps[2]

	a.send(rawFrame(bcast, a.mac, "a is here"))
	expect(t, b, "a is here")
	expect(t, c, "a is here")
	c.send(rawFrame(a.mac, c.mac, "c to a"))
	c.send(rawFrame(bcast, c.mac, "marker"))
	expect(t, a, "c to a")
	expect(t, b, "marker") // b did not get the unicast: a's MAC is learned

	a.conn.Close()
	waitFor(t, "a's port to be removed", func() bool { return s.Stats().Ports == 2 })

	// a's MAC is forgotten with its port: a unicast to it is flooded again.
	c.send(rawFrame(a.mac, c.mac, "c to a again"))
	expect(t, b, "c to a again")
}

func TestStuckPortDoesNotStallTheOthers(t *testing.T) {
	s, _ := startSwitch(t)
	ps := connect(t, s, "stuck", "b", "c")
	stuck, b, c := ps[0], ps[1], ps[2]
	_ = stuck // connected, never reads: its socket buffer and then its queue fill up

	// Each broadcast goes to both the stuck port and b. b reads each before the next is sent,
	// so b's queue never holds more than one frame; the stuck port's overflows once its
	// socket buffer (a few hundred KiB) and its queue (portQueueLen frames) are full.
	const frames, size = 1000, 16 << 10
	payload := strings.Repeat("x", size)
	for i := range frames {
		text := "frame " + string(rune('a'+i%26)) + payload
		c.send(rawFrame(bcast, c.mac, text))
		if got := frameText(b.recv()); got != text {
			t.Fatalf("frame %d: b received %.20q", i, got)
		}
	}
	st := s.Stats()
	if st.Dropped == 0 || st.Dropped >= frames {
		t.Fatalf("dropped %d frames for the stuck port, want some but not all of %d", st.Dropped, frames)
	}
	if st.Forwarded+st.Dropped != 2*frames {
		t.Errorf("forwarded %d + dropped %d != %d copies", st.Forwarded, st.Dropped, 2*frames)
	}
	if st.Ports != 3 {
		t.Errorf("ports = %d, want 3: a slow port stays connected", st.Ports)
	}
	t.Logf("stuck port: %d of %d frames dropped, %d forwarded in all", st.Dropped, frames, st.Forwarded)
}

func TestBogusLengthClosesThePort(t *testing.T) {
	for _, length := range []uint32{0, 13, maxFrameLen + 1, 1 << 31} {
		s, logs := startSwitch(t)
		ps := connect(t, s, "bad", "good", "other")
		bad, good, other := ps[0], ps[1], ps[2]

		hdr := binary.BigEndian.AppendUint32(nil, length)
		if _, err := bad.conn.Write(append(hdr, make([]byte, 64)...)); err != nil {
			t.Fatal(err)
		}
		if _, err := bad.tryRecv(); !isEOF(err) {
			t.Fatalf("length %d: the port stayed open (read: %v)", length, err)
		}
		waitFor(t, "the bad port to be removed", func() bool { return s.Stats().Ports == 2 })
		if st := s.Stats(); st.BadFrames != 1 {
			t.Errorf("length %d: BadFrames = %d, want 1", length, st.BadFrames)
		}
		if logs.count("port sent a bogus frame length") != 1 {
			t.Errorf("length %d: the bogus length was not logged", length)
		}
		good.send(rawFrame(bcast, good.mac, "still switching"))
		expect(t, other, "still switching")
	}
}

func TestCloseEndsEveryGoroutineAndRemovesTheSocket(t *testing.T) {
	if g := switchGoroutines(); len(g) != 0 {
		t.Fatalf("goroutines of an earlier test still run:\n%s", strings.Join(g, "\n\n"))
	}
	s, _ := startSwitch(t)
	ps := connect(t, s, "a", "stuck")
	// Leave the stuck port's writer blocked in a write: Close must still end it.
	for range 300 {
		ps[0].send(rawFrame(bcast, ps[0].mac, strings.Repeat("y", 8000)))
	}
	waitFor(t, "frames to be switched", func() bool { return s.Stats().FramesIn == 300 })
	if n := len(switchGoroutines()); n != 6 { // accept, ctx watch, 2 x (reader, writer)
		t.Errorf("%d switch goroutines while running, want 6", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if g := switchGoroutines(); len(g) != 0 {
		t.Fatalf("after Close:\n%s", strings.Join(g, "\n\n"))
	}
	if _, err := os.Lstat(s.Socket()); !os.IsNotExist(err) {
		t.Errorf("socket file still there after Close: %v", err)
	}
	if _, err := net.Dial("unix", s.Socket()); err == nil {
		t.Error("dial after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestContextEndStopsTheSwitch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Start(ctx, Config{
		Socket: filepath.Join(t.TempDir(), "s"), Subnet: testSubnet, ServerIP: testServerIP,
		Log: slog.New(slog.NewTextHandler(&testLog{t: t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	connect(t, s, "a")
	cancel()
	<-s.Done()
	waitFor(t, "no switch goroutine", func() bool { return len(switchGoroutines()) == 0 })
	if _, err := os.Lstat(s.Socket()); !os.IsNotExist(err) {
		t.Errorf("socket file still there: %v", err)
	}
}

func TestSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vnet.sock")
	cfg := Config{Socket: path, Subnet: testSubnet, ServerIP: testServerIP, Log: slog.New(slog.NewTextHandler(&testLog{t: t}, nil))}

	// A stale socket (bound, then its process gone) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer s.Close()
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v, mode %v: want a 0600 socket", err, st.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".vnet*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// A socket in use is not taken over.
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second switch on a live socket: %v", err)
	}
	// Neither is a file that is not a socket.
	cfg.Socket = filepath.Join(dir, "file")
	os.WriteFile(cfg.Socket, []byte("x"), 0o644)
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	// A missing folder is an error that says so.
	cfg.Socket = filepath.Join(dir, "missing", "s")
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "folder") {
		t.Errorf("missing folder: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	mac := MAC("vm", 0)
	ok := func() Config {
		return Config{
			Socket: filepath.Join(t.TempDir(), "s"), Subnet: testSubnet, ServerIP: testServerIP,
			Leases: []Lease{{MAC: mac, IP: netip.MustParseAddr("10.88.0.10")}},
		}
	}
	for name, tc := range map[string]struct {
		edit func(*Config)
		want string
	}{
		"no subnet":          {func(c *Config) { c.Subnet = netip.Prefix{} }, "IPv4 prefix"},
		"server outside":     {func(c *Config) { c.ServerIP = netip.MustParseAddr("10.89.0.1") }, "ServerIP"},
		"server is network":  {func(c *Config) { c.ServerIP = netip.MustParseAddr("10.88.0.0") }, "ServerIP"},
		"lease outside":      {func(c *Config) { c.Leases[0].IP = netip.MustParseAddr("10.88.1.5") }, "Leases[0]"},
		"lease is broadcast": {func(c *Config) { c.Leases[0].IP = netip.MustParseAddr("10.88.0.255") }, "Leases[0]"},
		"lease is server":    {func(c *Config) { c.Leases[0].IP = testServerIP }, "taken by ServerIP"},
		"multicast MAC":      {func(c *Config) { c.Leases[0].MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }, "unicast"},
		"duplicate MAC": {func(c *Config) {
			c.Leases = append(c.Leases, Lease{MAC: mac, IP: netip.MustParseAddr("10.88.0.11")})
		}, "twice"},
		"duplicate IP": {func(c *Config) {
			c.Leases = append(c.Leases, Lease{MAC: MAC("vm", 1), IP: netip.MustParseAddr("10.88.0.10")})
		}, "taken by Leases[0]"},
	} {
		cfg := ok()
		tc.edit(&cfg)
		_, err := Start(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

func TestMAC(t *testing.T) {
	seen := map[string]bool{}
	for _, seed := range []string{"demo-master", "demo-minion-1", "demo-minion-2"} {
		for i := range 3 {
			m := MAC(seed, i)
			if len(m) != 6 || m[0] != 0x52 || m[1] != 0x54 || m[0]&1 != 0 || m[0]&2 == 0 {
				t.Errorf("MAC(%q, %d) = %v: want 52:54:..., unicast and locally administered", seed, i, m)
			}
			if !bytes.Equal(m, MAC(seed, i)) {
				t.Errorf("MAC(%q, %d) is not deterministic", seed, i)
			}
			if seen[m.String()] {
				t.Errorf("MAC(%q, %d) = %v repeats", seed, i, m)
			}
			seen[m.String()] = true
		}
	}
}

func TestNetdev(t *testing.T) {
	s := &Switch{socket: "/run/a,b/vnet.sock"}
	want := "stream,id=c0,server=off,addr.type=unix,addr.path=/run/a,,b/vnet.sock"
	if got := s.Netdev("c0"); got != want {
		t.Errorf("Netdev = %q, want %q", got, want)
	}
}
