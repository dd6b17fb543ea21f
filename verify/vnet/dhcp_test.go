package vnet

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The test client below builds and checks DHCP, IPv4, UDP and ARP on its own, from RFC 2131,
// 791, 768 and 826, rather than with the switch's helpers: a shared bug would go unseen.

type clientMsg struct {
	Type    byte
	XID     uint32
	Flags   uint16
	CIAddr  netip.Addr
	Options map[byte][]byte // besides 53
}

var (
	zeroIP  = netip.MustParseAddr("0.0.0.0")
	allOnes = netip.MustParseAddr("255.255.255.255")
)

// onesSum is the 16-bit one's-complement sum of b (RFC 1071), not complemented.
func onesSum(b ...[]byte) uint16 {
	var all []byte
	for _, p := range b {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		s += uint32(binary.BigEndian.Uint16(all[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// clientFrame wraps a DHCP message from mac in UDP 68 -> 67, IPv4 and Ethernet.
func clientFrame(mac, dstMAC [6]byte, src, dst netip.Addr, m clientMsg) []byte {
	bootp := make([]byte, 236)
	bootp[0], bootp[1], bootp[2] = 1, 1, 6 // BOOTREQUEST, Ethernet, 6-byte MAC
	binary.BigEndian.PutUint32(bootp[4:], m.XID)
	binary.BigEndian.PutUint16(bootp[10:], m.Flags)
	if m.CIAddr.IsValid() {
		copy(bootp[12:16], m.CIAddr.AsSlice())
	}
	copy(bootp[28:], mac[:])
	bootp = append(bootp, 99, 130, 83, 99, 53, 1, m.Type)
	for code, v := range m.Options {
		bootp = append(append(bootp, code, byte(len(v))), v...)
	}
	bootp = append(bootp, 255)
	for len(bootp) < 300 {
		bootp = append(bootp, 0)
	}
	udp := make([]byte, 8, 8+len(bootp))
	binary.BigEndian.PutUint16(udp[0:], 68)
	binary.BigEndian.PutUint16(udp[2:], 67)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(bootp)))
	udp = append(udp, bootp...)
	pseudo := append(append(src.AsSlice(), dst.AsSlice()...), 0, 17, udp[4], udp[5])
	binary.BigEndian.PutUint16(udp[6:], ^onesSum(pseudo, udp))
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip))
	eth := append(append(append([]byte{}, dstMAC[:]...), mac[:]...), 0x08, 0x00)
	return append(append(eth, ip...), udp...)
}

// serverMsg is a reply as the client sees it, after every header was checked.
type serverMsg struct {
	DstMAC         [6]byte
	SrcIP, DstIP   netip.Addr
	Op             byte
	XID            uint32
	Flags          uint16
	CIAddr, YIAddr netip.Addr
	CHAddr         [6]byte
	Options        map[byte][]byte
}

// parseReply checks a frame from the server: Ethernet to the client, IPv4 with a right header
// checksum, UDP 67 -> 68 with a right checksum, a BOOTREPLY with the magic cookie.
func parseReply(t *testing.T, s *Switch, f []byte) serverMsg {
	t.Helper()
	if len(f) < 14+20+8+240 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		t.Fatalf("not an IPv4 frame of DHCP size: % x", f[:min(len(f), 40)])
	}
	if !bytes.Equal(f[6:12], s.ServerMAC()) {
		t.Errorf("source MAC %v, want the switch's %v", net.HardwareAddr(f[6:12]), s.ServerMAC())
	}
	ip := f[14:34]
	if ip[0] != 0x45 || ip[9] != 17 {
		t.Fatalf("IPv4 header % x: want version 4, 20 bytes, UDP", ip)
	}
	if onesSum(ip) != 0xffff {
		t.Errorf("IPv4 header checksum %#04x is wrong", binary.BigEndian.Uint16(ip[10:]))
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	udp := f[34 : 14+total]
	if binary.BigEndian.Uint16(udp[0:]) != 67 || binary.BigEndian.Uint16(udp[2:]) != 68 {
		t.Errorf("UDP ports %d -> %d, want 67 -> 68", binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:]))
	}
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Errorf("UDP length %d, IPv4 says %d", binary.BigEndian.Uint16(udp[4:]), len(udp))
	}
	pseudo := append(append(append([]byte{}, ip[12:20]...), 0, 17), udp[4], udp[5])
	if binary.BigEndian.Uint16(udp[6:]) != 0 && onesSum(pseudo, udp) != 0xffff {
		t.Errorf("UDP checksum %#04x is wrong", binary.BigEndian.Uint16(udp[6:]))
	}
	b := udp[8:]
	if len(b) < 300 {
		t.Errorf("BOOTP message of %d bytes, want at least 300 (RFC 1542)", len(b))
	}
	if !bytes.Equal(b[236:240], []byte{99, 130, 83, 99}) {
		t.Fatalf("no magic cookie")
	}
	m := serverMsg{
		DstMAC: [6]byte(f[0:6]),
		SrcIP:  netip.AddrFrom4([4]byte(ip[12:16])), DstIP: netip.AddrFrom4([4]byte(ip[16:20])),
		Op: b[0], XID: binary.BigEndian.Uint32(b[4:]), Flags: binary.BigEndian.Uint16(b[10:]),
		CIAddr: netip.AddrFrom4([4]byte(b[12:16])), YIAddr: netip.AddrFrom4([4]byte(b[16:20])),
		CHAddr: [6]byte(b[28:34]), Options: map[byte][]byte{},
	}
	for o := b[240:]; len(o) > 0 && o[0] != 255; {
		if o[0] == 0 {
			o = o[1:]
			continue
		}
		if len(o) < 2 || len(o) < 2+int(o[1]) {
			t.Fatalf("options run past the message")
		}
		if _, dup := m.Options[o[0]]; dup {
			t.Errorf("option %d appears twice", o[0])
		}
		m.Options[o[0]] = o[2 : 2+o[1]]
		o = o[2+int(o[1]):]
	}
	return m
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// checkLeaseOptions checks what an OFFER or ACK carries, and what it must not.
func checkLeaseOptions(t *testing.T, m serverMsg, hostname string) {
	t.Helper()
	want := map[byte][]byte{
		54: testServerIP.AsSlice(),
		51: u32(86400), 58: u32(43200), 59: u32(75600),
		1: {255, 255, 255, 0},
	}
	if hostname != "" {
		want[12] = []byte(hostname)
	}
	for code, v := range want {
		if !bytes.Equal(m.Options[code], v) {
			t.Errorf("option %d = %v, want %v", code, m.Options[code], v)
		}
	}
	for _, code := range []byte{3, 6, 15, 121} { // router, DNS, domain, classless routes
		if v, ok := m.Options[code]; ok {
			t.Errorf("option %d present (%v): the cluster NIC must not get routes or DNS", code, v)
		}
	}
	if hostname == "" {
		if _, ok := m.Options[12]; ok {
			t.Errorf("hostname option sent for a lease without one")
		}
	}
}

func TestDHCPExchange(t *testing.T) {
	vm := MAC("demo-minion-1", 1)
	leaseIP := netip.MustParseAddr("10.88.0.11")
	s, _ := startSwitch(t, Lease{MAC: vm, IP: leaseIP, Hostname: "demo-minion-1"})
	ps := connect(t, s, "vm", "other")
	c, other := ps[0], ps[1]
	c.mac = [6]byte(vm)

	// DISCOVER with the broadcast bit: the OFFER is broadcast at L2 and L3.
	c.send(clientFrame(c.mac, bcast, zeroIP, allOnes, clientMsg{Type: 1, XID: 0x1234, Flags: 0x8000}))
	offer := parseReply(t, s, c.recv())
	if offer.Options[53][0] != 2 || offer.Op != 2 || offer.XID != 0x1234 || offer.CHAddr != c.mac {
		t.Fatalf("not an OFFER for this DISCOVER: %+v", offer)
	}
	if offer.YIAddr != leaseIP || offer.CIAddr != zeroIP {
		t.Errorf("OFFER yiaddr %v ciaddr %v, want %v and 0", offer.YIAddr, offer.CIAddr, leaseIP)
	}
	if offer.DstMAC != bcast || offer.DstIP != allOnes || offer.SrcIP != testServerIP || offer.Flags != 0x8000 {
		t.Errorf("OFFER to %v/%v from %v flags %#x: want broadcast from the server, flag kept",
			net.HardwareAddr(offer.DstMAC[:]), offer.DstIP, offer.SrcIP, offer.Flags)
	}
	checkLeaseOptions(t, offer, "demo-minion-1")
	// Broadcasts reach every port: the other port sees the DISCOVER, then the OFFER.
	if f := other.recv(); !bytes.Equal(f[6:12], vm) {
		t.Errorf("other port: first frame from %v, want the DISCOVER from %v", net.HardwareAddr(f[6:12]), vm)
	}
	if got := parseReply(t, s, other.recv()); got.XID != 0x1234 {
		t.Errorf("other port: second frame %+v, want the broadcast OFFER", got)
	}

	// REQUEST (SELECTING: server id and requested address): ACK, broadcast again.
	c.send(clientFrame(c.mac, bcast, zeroIP, allOnes, clientMsg{Type: 3, XID: 0x1235, Flags: 0x8000,
		Options: map[byte][]byte{50: leaseIP.AsSlice(), 54: testServerIP.AsSlice(), 12: []byte("whatever")}}))
	ack := parseReply(t, s, c.recv())
	if ack.Options[53][0] != 5 || ack.YIAddr != leaseIP || ack.XID != 0x1235 || ack.DstMAC != bcast {
		t.Fatalf("want a broadcast ACK for %v: %+v", leaseIP, ack)
	}
	checkLeaseOptions(t, ack, "demo-minion-1")

	// Without the broadcast bit and with no address yet, the reply is unicast to the client's
	// MAC and to the address being offered (RFC 2131 section 4.1).
	c.send(clientFrame(c.mac, bcast, zeroIP, allOnes, clientMsg{Type: 1, XID: 0x2000}))
	uni := parseReply(t, s, c.recv())
	if uni.DstMAC != c.mac || uni.DstIP != leaseIP || uni.Options[53][0] != 2 {
		t.Errorf("OFFER without broadcast bit went to %v/%v, want %v/%v",
			net.HardwareAddr(uni.DstMAC[:]), uni.DstIP, vm, leaseIP)
	}

	// A REQUEST for another address is refused with a broadcast NAK.
	c.send(clientFrame(c.mac, bcast, zeroIP, allOnes, clientMsg{Type: 3, XID: 0x2001,
		Options: map[byte][]byte{50: netip.MustParseAddr("10.88.0.99").AsSlice()}}))
	nak := parseReply(t, s, c.recv())
	if nak.Options[53][0] != 6 || nak.YIAddr != zeroIP || nak.DstMAC != bcast || nak.DstIP != allOnes {
		t.Errorf("want a broadcast NAK with yiaddr 0: %+v", nak)
	}
	if _, ok := nak.Options[51]; ok {
		t.Errorf("NAK carries a lease time")
	}

	// Renewal: the client resolves the server with ARP, then unicasts a REQUEST with ciaddr
	// set; the ACK is unicast to ciaddr with ciaddr echoed.
	c.send(arpWhoHas(c.mac, leaseIP, testServerIP))
	reply := c.recv()
	checkARPReply(t, s, reply, c.mac, leaseIP)
	c.send(clientFrame(c.mac, [6]byte(s.ServerMAC()), leaseIP, testServerIP, clientMsg{Type: 3, XID: 0x3000, CIAddr: leaseIP}))
	renew := parseReply(t, s, c.recv())
	if renew.Options[53][0] != 5 || renew.DstMAC != c.mac || renew.DstIP != leaseIP || renew.CIAddr != leaseIP || renew.YIAddr != leaseIP {
		t.Errorf("renewal ACK: %+v", renew)
	}

	// A REQUEST naming another server, and an INFORM, get no answer: the next frame c
	// receives is the reply to the ARP request sent after them.
	c.send(clientFrame(c.mac, bcast, zeroIP, allOnes, clientMsg{Type: 3, XID: 0x4000,
		Options: map[byte][]byte{50: leaseIP.AsSlice(), 54: netip.MustParseAddr("10.88.0.2").AsSlice()}}))
	c.send(clientFrame(c.mac, bcast, leaseIP, allOnes, clientMsg{Type: 8, XID: 0x4001, CIAddr: leaseIP}))
	c.send(arpWhoHas(c.mac, leaseIP, testServerIP))
	checkARPReply(t, s, c.recv(), c.mac, leaseIP)

	st := s.Stats()
	if st.Offers != 2 || st.Acks != 2 || st.Naks != 1 || st.ARPReplies != 2 {
		t.Errorf("stats %+v: want 2 offers, 2 acks, 1 nak, 2 ARP replies", st)
	}
}

func TestDHCPWithoutHostnameAndUnknownMAC(t *testing.T) {
	known := MAC("plain", 0)
	s, logs := startSwitch(t, Lease{MAC: known, IP: netip.MustParseAddr("10.88.0.20")})
	ps := connect(t, s, "known", "stranger")
	k, stranger := ps[0], ps[1]
	k.mac = [6]byte(known)

	// No broadcast bit: the OFFER goes to k alone; the stranger sees only the DISCOVER.
	k.send(clientFrame(k.mac, bcast, zeroIP, allOnes, clientMsg{Type: 1, XID: 7}))
	offer := parseReply(t, s, k.recv())
	checkLeaseOptions(t, offer, "")
	if f := stranger.recv(); !bytes.Equal(f[6:12], known) {
		t.Fatalf("stranger received a frame from %v, want k's DISCOVER", net.HardwareAddr(f[6:12]))
	}

	// A MAC with no lease gets nothing, twice, and is logged once. Its DISCOVERs are
	// flooded to k like any broadcast; what k must not see is a reply from the server.
	for xid := range uint32(2) {
		stranger.send(clientFrame(stranger.mac, bcast, zeroIP, allOnes, clientMsg{Type: 1, XID: 100 + xid, Flags: 0x8000}))
	}
	stranger.send(arpWhoHas(stranger.mac, netip.MustParseAddr("10.88.0.77"), testServerIP))
	checkARPReply(t, s, stranger.recv(), stranger.mac, netip.MustParseAddr("10.88.0.77"))
	for range 2 {
		f := k.recv()
		if !bytes.Equal(f[6:12], stranger.mac[:]) {
			t.Fatalf("k received a frame from %v, want the stranger's flooded DISCOVER", net.HardwareAddr(f[6:12]))
		}
	}
	if n := logs.count("no lease for this MAC"); n != 1 {
		t.Errorf("unknown MAC logged %d times, want once", n)
	}
	if st := s.Stats(); st.Offers != 1 {
		t.Errorf("%d offers, want 1 (none for the stranger)", st.Offers)
	}
}

func arpWhoHas(mac [6]byte, senderIP, target netip.Addr) []byte {
	f := append(append(append([]byte{}, bcast[:]...), mac[:]...), 0x08, 0x06)
	f = append(f, 0, 1, 0x08, 0x00, 6, 4, 0, 1)
	f = append(append(f, mac[:]...), senderIP.AsSlice()...)
	f = append(append(f, 0, 0, 0, 0, 0, 0), target.AsSlice()...)
	return append(f, make([]byte, 18)...) // pad to 60 bytes
}

func checkARPReply(t *testing.T, s *Switch, f []byte, askerMAC [6]byte, askerIP netip.Addr) {
	t.Helper()
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != 0x0806 {
		t.Fatalf("not an ARP frame: % x", f[:min(len(f), 20)])
	}
	a := f[14:42]
	want := append(append([]byte{0, 1, 0x08, 0x00, 6, 4, 0, 2}, s.ServerMAC()...), testServerIP.AsSlice()...)
	want = append(append(want, askerMAC[:]...), askerIP.AsSlice()...)
	if !bytes.Equal(a, want) || !bytes.Equal(f[0:6], askerMAC[:]) || !bytes.Equal(f[6:12], s.ServerMAC()) {
		t.Errorf("ARP reply\n got % x\nwant % x (to %v)", a, want, net.HardwareAddr(askerMAC[:]))
	}
	if len(f) < 60 {
		t.Errorf("ARP reply of %d bytes, want it padded to 60", len(f))
	}
}

func TestARPOnlyForTheServerAddress(t *testing.T) {
	s, _ := startSwitch(t)
	ps := connect(t, s, "a", "b")
	a, b := ps[0], ps[1]
	me := netip.MustParseAddr("10.88.0.30")

	a.send(arpWhoHas(a.mac, me, netip.MustParseAddr("10.88.0.31"))) // someone else's address
	a.send(arpWhoHas(a.mac, me, testServerIP))
	checkARPReply(t, s, a.recv(), a.mac, me) // the first request got no answer from the switch
	for range 2 {
		if f := b.recv(); binary.BigEndian.Uint16(f[12:]) != 0x0806 || f[21] != 1 {
			t.Fatalf("b should see both broadcast requests, got % x", f[:22])
		}
	}
	if st := s.Stats(); st.ARPReplies != 1 {
		t.Errorf("ARPReplies = %d, want 1", st.ARPReplies)
	}
}

func TestLeaseTimeOption(t *testing.T) {
	vm := MAC("short", 0)
	s, err := Start(t.Context(), Config{
		Socket: t.TempDir() + "/s", Subnet: netip.MustParsePrefix("192.168.77.0/28"),
		ServerIP: netip.MustParseAddr("192.168.77.14"), LeaseTime: 10 * time.Minute,
		Leases: []Lease{{MAC: vm, IP: netip.MustParseAddr("192.168.77.2")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := connect(t, s, "c")[0]
	c.mac = [6]byte(vm)
	c.send(clientFrame(c.mac, bcast, zeroIP, allOnes, clientMsg{Type: 1, XID: 9}))
	m := parseReply(t, s, c.recv())
	for code, want := range map[byte][]byte{51: u32(600), 58: u32(300), 59: u32(525), 1: {255, 255, 255, 240}, 54: {192, 168, 77, 14}} {
		if !bytes.Equal(m.Options[code], want) {
			t.Errorf("option %d = %v, want %v", code, m.Options[code], want)
		}
	}
}
