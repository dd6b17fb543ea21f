// Package vnet is a private Ethernet segment for QEMU VMs: a learning frame switch on a unix
// socket, which each VM's NIC reaches through QEMU's stream netdev, plus a DHCP server that
// gives every known MAC a fixed address. It needs no root and sends nothing outside the host:
// the VMs of a local cluster talk to each other through this process only.
package vnet

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Lease is a fixed DHCP address for one MAC.
type Lease struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string // sent as option 12 when set
}

// Config describes one segment.
type Config struct {
	// Socket is the unix socket path the switch listens on, created with mode 0600. Its folder
	// must exist; a stale socket file left by a dead switch is replaced.
	Socket string
	// Subnet is the segment's IPv4 prefix, e.g. 10.88.0.0/24.
	Subnet netip.Prefix
	// ServerIP is the switch's own address in Subnet: the DHCP server identifier. The switch
	// answers ARP for it so that clients can renew by unicast.
	ServerIP netip.Addr
	Leases   []Lease
	// LeaseTime is the DHCP lease duration (default 24h).
	LeaseTime time.Duration
	// Log receives connections, leases and problems (default slog.Default()).
	Log *slog.Logger
}

// Stats counts what the switch did since Start.
type Stats struct {
	Ports      int    // connected ports now
	FramesIn   uint64 // frames received from ports
	Forwarded  uint64 // frame copies queued to a port (a flood to 3 ports counts 3)
	Dropped    uint64 // frame copies dropped because the receiving port's queue was full
	BadFrames  uint64 // ports closed for sending a length outside the framing's range
	Offers     uint64 // DHCPOFFERs sent
	Acks       uint64 // DHCPACKs sent
	Naks       uint64 // DHCPNAKs sent
	ARPReplies uint64 // ARP replies for ServerIP
}

// portQueueLen bounds the frames waiting for one port: a VM that stops reading (paused,
// hung) loses frames instead of stalling every other port.
const portQueueLen = 256

// Switch is a running segment. Close (or the Start context ending) stops it.
type Switch struct {
	socket    string
	socketID  os.FileInfo // the socket file as created, so Close removes only its own
	serverMAC [6]byte
	serverIP  netip.Addr
	dhcp      *dhcpServer
	log       *slog.Logger
	listener  *net.UnixListener

	mu     sync.Mutex
	ports  map[*port]struct{}
	fdb    map[[6]byte]*port // learned MAC -> the port it was last seen on
	nextID int

	closing   chan struct{} // closed when Close starts
	stopped   chan struct{} // closed when Close is done
	closeOnce sync.Once
	wg        sync.WaitGroup

	framesIn, forwarded, dropped, badFrames, offers, acks, naks, arpReplies atomic.Uint64
}

// port is one connected VM NIC (or any peer speaking the framing).
type port struct {
	id   int
	conn net.Conn
	out  chan []byte   // frames waiting to be written; never closed
	gone chan struct{} // closed when the port is removed
}

// Start validates cfg, listens on cfg.Socket and serves until Close or ctx ends. The socket
// accepts connections when Start returns.
func Start(ctx context.Context, cfg Config) (*Switch, error) {
	if cfg.LeaseTime == 0 {
		cfg.LeaseTime = 24 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	dhcp, err := newDHCPServer(cfg)
	if err != nil {
		return nil, err
	}
	socket, err := filepath.Abs(cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("vnet socket %q: %w", cfg.Socket, err)
	}
	listener, id, err := listen(socket)
	if err != nil {
		return nil, err
	}
	s := &Switch{
		socket:    socket,
		socketID:  id,
		serverMAC: dhcp.serverMAC,
		serverIP:  cfg.ServerIP,
		dhcp:      dhcp,
		log:       cfg.Log.With("vnet", filepath.Base(socket)),
		listener:  listener,
		ports:     map[*port]struct{}{},
		fdb:       map[[6]byte]*port{},
		closing:   make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	s.wg.Add(2)
	go s.acceptLoop()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
			go s.Close() // Close waits for this goroutine, so it cannot run here
		case <-s.closing:
		}
	}()
	s.log.Info("vnet: switch listening", "socket", socket, "subnet", cfg.Subnet, "server", cfg.ServerIP, "leases", len(cfg.Leases))
	return s, nil
}

func newDHCPServer(cfg Config) (*dhcpServer, error) {
	if !cfg.Subnet.IsValid() || !cfg.Subnet.Addr().Is4() {
		return nil, fmt.Errorf("vnet: Subnet %v is not an IPv4 prefix: set it, e.g. 10.88.0.0/24", cfg.Subnet)
	}
	subnet := cfg.Subnet.Masked()
	if subnet.Bits() > 30 {
		return nil, fmt.Errorf("vnet: Subnet %v has no room for a server and a client: use /30 or wider", subnet)
	}
	last := lastAddr(subnet)
	usable := func(a netip.Addr) bool {
		return a.Is4() && subnet.Contains(a) && a != subnet.Addr() && a != last
	}
	if !usable(cfg.ServerIP) {
		return nil, fmt.Errorf("vnet: ServerIP %v is not a host address of Subnet %v", cfg.ServerIP, subnet)
	}
	if cfg.LeaseTime < 2*time.Second || cfg.LeaseTime/time.Second > 0xffffffff {
		return nil, fmt.Errorf("vnet: LeaseTime %v is out of range (2s to 136 years)", cfg.LeaseTime)
	}
	d := &dhcpServer{
		serverIP:  cfg.ServerIP,
		serverMAC: [6]byte(MAC("kubebake-vnet-server "+cfg.ServerIP.String(), 0)),
		mask:      net.CIDRMask(subnet.Bits(), 32),
		leaseTime: cfg.LeaseTime,
		leases:    map[[6]byte]Lease{},
		log:       cfg.Log,
		unknown:   map[[6]byte]bool{},
	}
	byIP := map[netip.Addr]string{cfg.ServerIP: "ServerIP"}
	for i, l := range cfg.Leases {
		where := fmt.Sprintf("vnet: Leases[%d] (%v)", i, l.MAC)
		if len(l.MAC) != 6 || l.MAC[0]&1 == 1 {
			return nil, fmt.Errorf("%s: MAC must be a 6-byte unicast address (see vnet.MAC)", where)
		}
		if !usable(l.IP) {
			return nil, fmt.Errorf("%s: IP %v is not a host address of Subnet %v", where, l.IP, subnet)
		}
		if other, dup := byIP[l.IP]; dup {
			return nil, fmt.Errorf("%s: IP %v is already taken by %s", where, l.IP, other)
		}
		mac := [6]byte(l.MAC)
		if _, dup := d.leases[mac]; dup || mac == d.serverMAC {
			return nil, fmt.Errorf("%s: MAC appears twice (or is the switch's own)", where)
		}
		if len(l.Hostname) > 255 {
			return nil, fmt.Errorf("%s: Hostname longer than 255 bytes", where)
		}
		byIP[l.IP] = fmt.Sprintf("Leases[%d]", i)
		d.leases[mac] = l
	}
	return d, nil
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v)))
}

// listen binds the socket in a private temporary folder, makes it 0600 and renames it onto
// path: it never exists at path with looser permissions, and a stale socket is replaced in
// one step. (Peers find the socket by its inode, so the rename is harmless; only getsockname,
// and so QEMU's "info network", still shows the temporary name.)
func listen(path string) (*net.UnixListener, os.FileInfo, error) {
	if err := checkStale(path); err != nil {
		return nil, nil, err
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".vnet")
	if err != nil {
		return nil, nil, fmt.Errorf("vnet: creating socket %s: %w (does its folder exist?)", path, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	// sockaddr_un holds 108 bytes including the final NUL.
	if len(path) > 107 || len(tmp) > 107 {
		return nil, nil, fmt.Errorf("vnet: socket path %s is too long for a unix socket (max 107 bytes): use a shorter folder", path)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("vnet: listening on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // the file moves to path; Close removes it there
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		l.Close()
		return nil, nil, fmt.Errorf("vnet: creating socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	id, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return l, id, nil
}

// checkStale refuses to replace anything but a socket nobody listens on.
func checkStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vnet: socket path %s: %w", path, err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("vnet: socket path %s exists and is not a socket: remove it or choose another path", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("vnet: socket %s is in use by a running process: stop it or choose another path", path)
	}
	return nil // ECONNREFUSED: a leftover of a switch that died; it is replaced
}

// Netdev returns the QEMU -netdev value that connects a NIC with the given netdev id to the
// switch, e.g. "-netdev", s.Netdev("c0"), "-device", "virtio-net-pci,netdev=c0,mac=...".
// QEMU 7.2's stream client connects once, when the VM starts: start the switch first, and a
// switch restart needs the VMs restarted.
func (s *Switch) Netdev(id string) string {
	// QEMU's option syntax escapes a comma in a value by doubling it.
	return "stream,id=" + id + ",server=off,addr.type=unix,addr.path=" + strings.ReplaceAll(s.socket, ",", ",,")
}

// Socket is the absolute path of the switch's socket.
func (s *Switch) Socket() string { return s.socket }

// ServerMAC is the switch's own MAC: the source of its DHCP and ARP replies.
func (s *Switch) ServerMAC() net.HardwareAddr { return net.HardwareAddr(s.serverMAC[:]) }

// Stats returns the counters now.
func (s *Switch) Stats() Stats {
	s.mu.Lock()
	n := len(s.ports)
	s.mu.Unlock()
	return Stats{
		Ports:      n,
		FramesIn:   s.framesIn.Load(),
		Forwarded:  s.forwarded.Load(),
		Dropped:    s.dropped.Load(),
		BadFrames:  s.badFrames.Load(),
		Offers:     s.offers.Load(),
		Acks:       s.acks.Load(),
		Naks:       s.naks.Load(),
		ARPReplies: s.arpReplies.Load(),
	}
}

// Done is closed once the switch has stopped, by Close or by its Start context ending.
func (s *Switch) Done() <-chan struct{} { return s.stopped }

// Close stops accepting, disconnects every port, removes the socket file and returns once
// every goroutine of the switch has ended.
func (s *Switch) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closing)
		err = s.listener.Close()
		s.mu.Lock()
		for p := range s.ports {
			p.conn.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		// Remove the socket unless another switch has replaced it since.
		if st, statErr := os.Lstat(s.socket); statErr == nil && os.SameFile(st, s.socketID) {
			if rmErr := os.Remove(s.socket); rmErr != nil && err == nil {
				err = rmErr
			}
		}
		s.log.Info("vnet: switch stopped", "socket", s.socket)
		close(s.stopped)
	})
	return err
}

func (s *Switch) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			select {
			case <-s.closing:
				return
			default:
			}
			var errno syscall.Errno
			if errors.As(err, &errno) && (errno == syscall.EMFILE || errno == syscall.ENFILE) {
				s.log.Error("vnet: accept: out of file descriptors, retrying", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			s.log.Error("vnet: accept failed: the switch takes no new ports", "err", err)
			return
		}
		s.addPort(conn)
	}
}

func (s *Switch) addPort(conn net.Conn) {
	s.mu.Lock()
	select {
	case <-s.closing: // Close has already disconnected the ports it knew
		s.mu.Unlock()
		conn.Close()
		return
	default:
	}
	s.nextID++
	p := &port{id: s.nextID, conn: conn, out: make(chan []byte, portQueueLen), gone: make(chan struct{})}
	s.ports[p] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	s.log.Info("vnet: port connected", "port", p.id)
	go s.readPort(p)
	go s.writePort(p)
}

// removePort forgets a port and every MAC learned on it.
func (s *Switch) removePort(p *port, reason string) {
	s.mu.Lock()
	delete(s.ports, p)
	for mac, q := range s.fdb {
		if q == p {
			delete(s.fdb, mac)
		}
	}
	s.mu.Unlock()
	close(p.gone)
	p.conn.Close()
	s.log.Info("vnet: port disconnected", "port", p.id, "reason", reason)
}

// readPort reads frames in QEMU's stream framing until the peer goes away.
//
// The framing, from QEMU 7.2 net/stream.c (the same as net/socket.c in stream mode):
// net_stream_receive writes each frame as the iovec {uint32_t len = htonl(size); buf}, and
// net_stream_send feeds the bytes it reads to net_fill_rstate (net/net.c), which takes a
// 4-byte big-endian length and then that many bytes of frame (no vnet header: the reader is
// set up with net_socket_rs_init(..., false)).
func (s *Switch) readPort(p *port) {
	defer s.wg.Done()
	var hdr [4]byte
	for {
		if _, err := readFull(p.conn, hdr[:]); err != nil {
			s.removePort(p, closeReason(err))
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n < etherHeaderLen || n > maxFrameLen {
			s.badFrames.Add(1)
			s.log.Warn("vnet: port sent a bogus frame length: closing it (is the peer a QEMU stream netdev?)",
				"port", p.id, "length", n, "valid", strconv.Itoa(etherHeaderLen)+".."+strconv.Itoa(maxFrameLen))
			s.removePort(p, "bogus frame length")
			return
		}
		// A fresh buffer per frame: it is shared, read-only, by every queue it goes to.
		frame := make([]byte, n)
		if _, err := readFull(p.conn, frame); err != nil {
			s.removePort(p, "truncated frame: "+closeReason(err))
			return
		}
		s.framesIn.Add(1)
		s.switchFrame(p, frame)
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func closeReason(err error) string {
	if errors.Is(err, net.ErrClosed) {
		return "switch closing"
	}
	if errors.Is(err, io.EOF) {
		return "peer closed the connection"
	}
	return err.Error()
}

// writePort writes queued frames, each with its length prefix, until the port goes away.
func (s *Switch) writePort(p *port) {
	defer s.wg.Done()
	var hdr [4]byte
	for {
		select {
		case <-p.gone:
			return
		case <-s.closing:
			return
		case frame := <-p.out:
			binary.BigEndian.PutUint32(hdr[:], uint32(len(frame)))
			bufs := net.Buffers{hdr[:], frame}
			if _, err := bufs.WriteTo(p.conn); err != nil {
				// The reader sees the same failure and removes the port.
				p.conn.Close()
				return
			}
		}
	}
}

// switchFrame learns the sender's MAC and delivers a frame from port `from` (nil: the switch's
// own stack) to the port that owns its destination, or floods it.
func (s *Switch) switchFrame(from *port, frame []byte) {
	dst, src := etherDst(frame), etherSrc(frame)
	toStack := from != nil && (dst == s.serverMAC || isGroup(dst))

	s.mu.Lock()
	if from != nil && !isGroup(src) && src != s.serverMAC {
		s.fdb[src] = from
	}
	switch owner, known := s.fdb[dst]; {
	case dst == s.serverMAC:
	case !isGroup(dst) && known:
		if owner != from { // never reflect a frame to the port it came from
			s.enqueue(owner, frame)
		}
	default:
		for p := range s.ports {
			if p != from {
				s.enqueue(p, frame)
			}
		}
	}
	s.mu.Unlock()

	if toStack {
		s.stack(frame)
	}
}

// enqueue queues a frame for p without ever blocking; s.mu is held.
func (s *Switch) enqueue(p *port, frame []byte) {
	select {
	case p.out <- frame:
		s.forwarded.Add(1)
	default:
		s.dropped.Add(1)
	}
}

// stack is the switch's own host on the segment: it answers ARP for ServerIP and DHCP.
func (s *Switch) stack(frame []byte) {
	if a, ok := parseARP(frame); ok {
		if a.Op == arpRequest && a.TargetIP == s.serverIP {
			s.arpReplies.Add(1)
			s.switchFrame(nil, arpFrame(a.SenderMAC, arpPacket{
				Op:        arpReply,
				SenderMAC: s.serverMAC, SenderIP: s.serverIP,
				TargetMAC: a.SenderMAC, TargetIP: a.SenderIP,
			}))
		}
		return
	}
	udp, ok := parseUDP(frame)
	if !ok {
		return
	}
	reply, ok := s.dhcp.handle(udp)
	if !ok {
		return
	}
	switch reply.Type {
	case msgOffer:
		s.offers.Add(1)
	case msgAck:
		s.acks.Add(1)
	case msgNak:
		s.naks.Add(1)
	}
	s.switchFrame(nil, reply.Frame)
}

// MAC returns a deterministic MAC for NIC index of the VM named seed: 52:54 (QEMU's locally
// administered, unicast prefix) followed by four bytes of a hash of both.
func MAC(seed string, index int) net.HardwareAddr {
	h := sha256.Sum256([]byte(seed + "\x00" + strconv.Itoa(index)))
	return net.HardwareAddr{0x52, 0x54, h[0], h[1], h[2], h[3]}
}
