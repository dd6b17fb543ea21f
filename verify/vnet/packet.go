package vnet

import (
	"encoding/binary"
	"net/netip"
)

// The few wire formats the switch's own stack speaks: Ethernet II, ARP for IPv4, IPv4 and UDP.
// Only what DHCP and ARP need; anything else is switched without being parsed.

const (
	etherHeaderLen = 14
	// minFrameLen is the shortest Ethernet frame without its FCS; shorter replies are padded
	// because some NIC models drop runts.
	minFrameLen = 60
	// maxFrameLen is the largest frame a port may send: the framing's length field could say
	// more, but QEMU never sends a frame above 64 KiB (NET_BUFSIZE holds one plus a header).
	maxFrameLen = 65535

	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806

	ipv4HeaderLen = 20
	protoUDP      = 17
	udpHeaderLen  = 8
	arpLen        = 28
)

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// etherDst and etherSrc read the addresses of a frame at least etherHeaderLen long.
func etherDst(frame []byte) [6]byte { return [6]byte(frame[0:6]) }
func etherSrc(frame []byte) [6]byte { return [6]byte(frame[6:12]) }

// isGroup reports whether a MAC is broadcast or multicast (the I/G bit of the first octet).
func isGroup(mac [6]byte) bool { return mac[0]&1 == 1 }

// etherFrame builds a frame around payload, padded to the Ethernet minimum.
func etherFrame(dst, src [6]byte, etherType uint16, payload []byte) []byte {
	n := max(etherHeaderLen+len(payload), minFrameLen)
	f := make([]byte, n)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], etherType)
	copy(f[etherHeaderLen:], payload)
	return f
}

// udpPacket is a UDP datagram carried in IPv4, as parsed from or written to a frame.
type udpPacket struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Payload          []byte
}

// parseUDP returns the UDP datagram in an IPv4 frame, or false for anything else (other
// protocols, fragments, truncated or inconsistent headers).
func parseUDP(frame []byte) (udpPacket, bool) {
	if len(frame) < etherHeaderLen+ipv4HeaderLen+udpHeaderLen ||
		binary.BigEndian.Uint16(frame[12:14]) != etherTypeIPv4 {
		return udpPacket{}, false
	}
	ip := frame[etherHeaderLen:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	fragment := binary.BigEndian.Uint16(ip[6:8]) & 0x3fff // MF flag or an offset
	if ip[0]>>4 != 4 || ihl < ipv4HeaderLen || total < ihl+udpHeaderLen || total > len(ip) ||
		ip[9] != protoUDP || fragment != 0 {
		return udpPacket{}, false
	}
	udp := ip[ihl:total]
	udpLen := int(binary.BigEndian.Uint16(udp[4:6]))
	if udpLen < udpHeaderLen || udpLen > len(udp) {
		return udpPacket{}, false
	}
	return udpPacket{
		Src:     netip.AddrFrom4([4]byte(ip[12:16])),
		Dst:     netip.AddrFrom4([4]byte(ip[16:20])),
		SrcPort: binary.BigEndian.Uint16(udp[0:2]),
		DstPort: binary.BigEndian.Uint16(udp[2:4]),
		Payload: udp[udpHeaderLen:udpLen],
	}, true
}

// udpFrame builds an Ethernet/IPv4/UDP frame with both checksums filled in.
func udpFrame(dstMAC, srcMAC [6]byte, p udpPacket) []byte {
	udpLen := udpHeaderLen + len(p.Payload)
	pkt := make([]byte, ipv4HeaderLen+udpLen)
	ip := pkt[:ipv4HeaderLen]
	ip[0] = 0x45 // version 4, 5 words of header
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(pkt)))
	ip[8] = 64 // TTL
	ip[9] = protoUDP
	src, dst := p.Src.As4(), p.Dst.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(0, ip))

	udp := pkt[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:2], p.SrcPort)
	binary.BigEndian.PutUint16(udp[2:4], p.DstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpLen))
	copy(udp[udpHeaderLen:], p.Payload)
	// The UDP checksum covers a pseudo-header of addresses, protocol and length.
	var pseudo [12]byte
	copy(pseudo[0:4], src[:])
	copy(pseudo[4:8], dst[:])
	pseudo[9] = protoUDP
	binary.BigEndian.PutUint16(pseudo[10:12], uint16(udpLen))
	sum := checksum(sumWords(0, pseudo[:]), udp)
	if sum == 0 {
		sum = 0xffff // 0 means "no checksum" in UDP over IPv4 (RFC 768)
	}
	binary.BigEndian.PutUint16(udp[6:8], sum)
	return etherFrame(dstMAC, srcMAC, etherTypeIPv4, pkt)
}

// sumWords adds b as big-endian 16-bit words (odd length padded with zero) to a running
// one's-complement sum.
func sumWords(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

// checksum is the Internet checksum (RFC 1071) of b added to a partial sum.
func checksum(partial uint32, b []byte) uint16 {
	sum := sumWords(partial, b)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// arpPacket is an ARP message for IPv4 over Ethernet.
type arpPacket struct {
	Op                   uint16 // 1 request, 2 reply
	SenderMAC, TargetMAC [6]byte
	SenderIP, TargetIP   netip.Addr
}

const (
	arpRequest = 1
	arpReply   = 2
)

func parseARP(frame []byte) (arpPacket, bool) {
	if len(frame) < etherHeaderLen+arpLen || binary.BigEndian.Uint16(frame[12:14]) != etherTypeARP {
		return arpPacket{}, false
	}
	a := frame[etherHeaderLen:]
	// Hardware type Ethernet (1), protocol IPv4, address lengths 6 and 4.
	if binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != etherTypeIPv4 ||
		a[4] != 6 || a[5] != 4 {
		return arpPacket{}, false
	}
	return arpPacket{
		Op:        binary.BigEndian.Uint16(a[6:8]),
		SenderMAC: [6]byte(a[8:14]),
		SenderIP:  netip.AddrFrom4([4]byte(a[14:18])),
		TargetMAC: [6]byte(a[18:24]),
		TargetIP:  netip.AddrFrom4([4]byte(a[24:28])),
	}, true
}

func arpFrame(dstMAC [6]byte, p arpPacket) []byte {
	a := make([]byte, arpLen)
	binary.BigEndian.PutUint16(a[0:2], 1)
	binary.BigEndian.PutUint16(a[2:4], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], p.Op)
	sip, tip := p.SenderIP.As4(), p.TargetIP.As4()
	copy(a[8:14], p.SenderMAC[:])
	copy(a[14:18], sip[:])
	copy(a[18:24], p.TargetMAC[:])
	copy(a[24:28], tip[:])
	return etherFrame(dstMAC, p.SenderMAC, etherTypeARP, a)
}
