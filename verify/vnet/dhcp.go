package vnet

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DHCP as RFC 2131 describes it, reduced to one authoritative server with fixed leases on one
// segment: no relays, no pools, no lease database (a lease is the Config's word).

const (
	dhcpServerPort = 67
	dhcpClientPort = 68

	bootRequest = 1
	bootReply   = 2

	// dhcpFixedLen is the BOOTP header up to the options field; then comes the magic cookie.
	dhcpFixedLen = 236
	// bootpMinLen is the smallest BOOTP message (RFC 1542 section 2.1): older clients drop
	// shorter ones, so replies are padded.
	bootpMinLen = 300

	flagBroadcast = 0x8000
)

var magicCookie = [4]byte{99, 130, 83, 99}

// DHCP message types (option 53).
const (
	msgDiscover = 1
	msgOffer    = 2
	msgRequest  = 3
	msgDecline  = 4
	msgAck      = 5
	msgNak      = 6
	msgRelease  = 7
	msgInform   = 8
)

// DHCP options the server reads or writes (RFC 2132).
const (
	optPad           = 0
	optSubnetMask    = 1
	optHostname      = 12
	optRequestedIP   = 50
	optLeaseTime     = 51
	optMessageType   = 53
	optServerID      = 54
	optMessage       = 56
	optRenewalTime   = 58
	optRebindingTime = 59
	optEnd           = 255
)

// dhcpMessage is the part of a BOOTP/DHCP message the server uses.
type dhcpMessage struct {
	Op, Type               byte
	XID                    uint32
	Flags                  uint16
	CIAddr, YIAddr, GIAddr netip.Addr
	CHAddr                 [6]byte
	Options                map[byte][]byte
}

func parseDHCP(b []byte) (dhcpMessage, bool) {
	if len(b) < dhcpFixedLen+4 || [4]byte(b[dhcpFixedLen:dhcpFixedLen+4]) != magicCookie {
		return dhcpMessage{}, false
	}
	// Hardware type Ethernet, 6-byte addresses: the only kind on this segment.
	if b[1] != 1 || b[2] != 6 {
		return dhcpMessage{}, false
	}
	m := dhcpMessage{
		Op:      b[0],
		XID:     binary.BigEndian.Uint32(b[4:8]),
		Flags:   binary.BigEndian.Uint16(b[10:12]),
		CIAddr:  netip.AddrFrom4([4]byte(b[12:16])),
		YIAddr:  netip.AddrFrom4([4]byte(b[16:20])),
		GIAddr:  netip.AddrFrom4([4]byte(b[24:28])),
		CHAddr:  [6]byte(b[28:34]),
		Options: map[byte][]byte{},
	}
	opts := b[dhcpFixedLen+4:]
	for len(opts) > 0 {
		code := opts[0]
		if code == optEnd {
			break
		}
		if code == optPad {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || len(opts) < 2+int(opts[1]) {
			return dhcpMessage{}, false
		}
		// A repeated option is concatenated (RFC 3396); none of ours are long enough to need it.
		m.Options[code] = append(m.Options[code], opts[2:2+int(opts[1])]...)
		opts = opts[2+int(opts[1]):]
	}
	if t := m.Options[optMessageType]; len(t) == 1 {
		m.Type = t[0]
	}
	return m, true
}

// optAddr reads an option holding one IPv4 address.
func (m dhcpMessage) optAddr(code byte) (netip.Addr, bool) {
	v := m.Options[code]
	if len(v) != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(v)), true
}

// dhcpServer answers DISCOVER and REQUEST for the MACs it has leases for.
type dhcpServer struct {
	serverIP  netip.Addr
	serverMAC [6]byte
	mask      net.IPMask
	leaseTime time.Duration
	leases    map[[6]byte]Lease
	log       *slog.Logger

	mu      sync.Mutex
	unknown map[[6]byte]bool // MACs already logged as having no lease
}

// dhcpReply is the server's answer to one client message.
type dhcpReply struct {
	Type  byte
	Frame []byte
}

// handle answers a client message carried in udp, or returns false when it is not one the
// server answers (not DHCP, relayed, INFORM, RELEASE, unknown MAC, another server's choice).
func (d *dhcpServer) handle(udp udpPacket) (dhcpReply, bool) {
	if udp.DstPort != dhcpServerPort {
		return dhcpReply{}, false
	}
	m, ok := parseDHCP(udp.Payload)
	if !ok || m.Op != bootRequest {
		return dhcpReply{}, false
	}
	mac := net.HardwareAddr(m.CHAddr[:]).String()
	if m.GIAddr != netip.IPv4Unspecified() {
		// A relay on an isolated segment means something is misconfigured: stay out of it.
		d.log.Debug("dhcp: ignoring a relayed message", "mac", mac, "giaddr", m.GIAddr)
		return dhcpReply{}, false
	}
	lease, known := d.leases[m.CHAddr]
	if !known {
		if m.Type == msgDiscover || m.Type == msgRequest {
			d.logUnknownOnce(m.CHAddr)
		}
		return dhcpReply{}, false
	}
	switch m.Type {
	case msgDiscover:
		d.log.Debug("dhcp: offer", "mac", mac, "ip", lease.IP)
		return dhcpReply{msgOffer, d.reply(m, msgOffer, lease)}, true
	case msgRequest:
		if id, ok := m.optAddr(optServerID); ok && id != d.serverIP {
			return dhcpReply{}, false // the client took another server's offer
		}
		requested, ok := m.optAddr(optRequestedIP) // SELECTING and INIT-REBOOT
		if !ok {
			requested = m.CIAddr // RENEWING and REBINDING
		}
		if requested == netip.IPv4Unspecified() {
			d.log.Warn("dhcp: REQUEST names no address (no option 50, ciaddr 0): ignored", "mac", mac)
			return dhcpReply{}, false
		}
		if requested != lease.IP {
			d.log.Warn("dhcp: nak: client asked for an address that is not its lease",
				"mac", mac, "requested", requested, "lease", lease.IP)
			return dhcpReply{msgNak, d.reply(m, msgNak, lease)}, true
		}
		d.log.Info("dhcp: ack", "mac", mac, "ip", lease.IP, "hostname", lease.Hostname)
		return dhcpReply{msgAck, d.reply(m, msgAck, lease)}, true
	case msgInform, msgRelease, msgDecline:
		// INFORM would hand out options only; RELEASE and DECLINE change nothing for a fixed lease.
		d.log.Debug("dhcp: ignored", "mac", mac, "type", m.Type)
	}
	return dhcpReply{}, false
}

func (d *dhcpServer) logUnknownOnce(mac [6]byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unknown[mac] {
		return
	}
	d.unknown[mac] = true
	d.log.Warn("dhcp: no lease for this MAC: ignoring it (give the VM a MAC from the Config's Leases)",
		"mac", net.HardwareAddr(mac[:]).String())
}

// reply builds the OFFER, ACK or NAK frame for request m, addressed as RFC 2131 section 4.1
// says for a server on the client's own segment (giaddr zero):
//   - NAK: broadcast;
//   - ciaddr set (renewing): unicast to ciaddr;
//   - broadcast bit set: broadcast;
//   - otherwise: unicast to chaddr at L2 and to yiaddr at L3 (the client has no address yet
//     but listens on its MAC).
func (d *dhcpServer) reply(m dhcpMessage, msgType byte, lease Lease) []byte {
	b := make([]byte, dhcpFixedLen, bootpMinLen)
	b[0] = bootReply
	b[1], b[2] = 1, 6
	binary.BigEndian.PutUint32(b[4:8], m.XID)
	binary.BigEndian.PutUint16(b[10:12], m.Flags)
	yiaddr := netip.IPv4Unspecified()
	if msgType != msgNak {
		yiaddr = lease.IP
	}
	if msgType == msgAck {
		copy(b[12:16], m.CIAddr.AsSlice())
	}
	copy(b[16:20], yiaddr.AsSlice())
	copy(b[28:34], m.CHAddr[:])
	b = append(b, magicCookie[:]...)

	opt := func(code byte, v ...byte) { b = append(append(b, code, byte(len(v))), v...) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	opt(optMessageType, msgType)
	opt(optServerID, d.serverIP.AsSlice()...)
	if msgType == msgNak {
		opt(optMessage, []byte("requested address is not this client's lease")...)
	} else {
		secs := uint32(d.leaseTime / time.Second)
		opt(optLeaseTime, u32(secs)...)
		opt(optRenewalTime, u32(secs/2)...)     // T1: 0.5 of the lease (RFC 2131 4.4.5)
		opt(optRebindingTime, u32(secs/8*7)...) // T2: 0.875 of the lease
		opt(optSubnetMask, d.mask...)
		// No router (3) and no DNS (6): the cluster segment must never become the default route.
		if lease.Hostname != "" {
			opt(optHostname, []byte(lease.Hostname)...)
		}
	}
	b = append(b, optEnd)
	for len(b) < bootpMinLen {
		b = append(b, 0)
	}

	dstMAC, dstIP := broadcastMAC, netip.AddrFrom4([4]byte{255, 255, 255, 255})
	switch {
	case msgType == msgNak:
	case m.CIAddr != netip.IPv4Unspecified():
		dstMAC, dstIP = m.CHAddr, m.CIAddr
	case m.Flags&flagBroadcast != 0:
	default:
		dstMAC, dstIP = m.CHAddr, lease.IP
	}
	return udpFrame(dstMAC, d.serverMAC, udpPacket{
		Src: d.serverIP, Dst: dstIP,
		SrcPort: dhcpServerPort, DstPort: dhcpClientPort,
		Payload: b,
	})
}
