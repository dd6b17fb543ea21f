package builder

import (
	"encoding/binary"
	"fmt"
	"io"
)

// FAT32 fix-ups for what go-diskfs v1.9 writes, so that fsck.fat finds nothing to say:
//   - a directory in the root directory must point its ".." entry at cluster 0, not at the
//     root directory's cluster (go-diskfs writes the latter);
//   - the FSInfo sector's free-cluster count and next-free hint are left "unknown"
//     (0xFFFFFFFF); they are filled in from the FAT.
//
// Both are plain byte patches on a finished filesystem and depend only on its content, so
// they keep the ESP reproducible.

type fat32Geometry struct {
	start          int64 // byte offset of the filesystem on the device
	bytesPerSector int64
	secPerCluster  int64
	reserved       int64
	numFATs        int64
	secPerFAT      int64
	totalSectors   int64
	rootCluster    uint32
	fsInfoSector   int64
	backupBoot     int64
}

func (g *fat32Geometry) dataStart() int64 { return g.reserved + g.numFATs*g.secPerFAT }
func (g *fat32Geometry) clusterCount() uint32 {
	return uint32((g.totalSectors - g.dataStart()) / g.secPerCluster)
}
func (g *fat32Geometry) clusterOffset(c uint32) int64 {
	return g.start + (g.dataStart()+int64(c-2)*g.secPerCluster)*g.bytesPerSector
}
func (g *fat32Geometry) clusterBytes() int64 { return g.secPerCluster * g.bytesPerSector }

type readerWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

func readFAT32Geometry(dev io.ReaderAt, start int64) (*fat32Geometry, error) {
	bs := make([]byte, 512)
	if _, err := dev.ReadAt(bs, start); err != nil {
		return nil, err
	}
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(bs[o:])) }
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(bs[o:])) }
	g := &fat32Geometry{
		start:          start,
		bytesPerSector: le16(11),
		secPerCluster:  int64(bs[13]),
		reserved:       le16(14),
		numFATs:        int64(bs[16]),
		totalSectors:   le32(32),
		secPerFAT:      le32(36),
		rootCluster:    uint32(le32(44)),
		fsInfoSector:   le16(48),
		backupBoot:     le16(50),
	}
	if bs[510] != 0x55 || bs[511] != 0xAA || g.bytesPerSector == 0 || g.secPerCluster == 0 || g.secPerFAT == 0 {
		return nil, fmt.Errorf("no FAT32 boot sector at offset %d", start)
	}
	return g, nil
}

// readFAT reads the first FAT.
func (g *fat32Geometry) readFAT(dev io.ReaderAt) ([]uint32, error) {
	raw := make([]byte, g.secPerFAT*g.bytesPerSector)
	if _, err := dev.ReadAt(raw, g.start+g.reserved*g.bytesPerSector); err != nil {
		return nil, err
	}
	n := int(g.clusterCount()) + 2
	if n*4 > len(raw) {
		n = len(raw) / 4
	}
	fat := make([]uint32, n)
	for i := range fat {
		fat[i] = binary.LittleEndian.Uint32(raw[i*4:]) & 0x0FFFFFFF
	}
	return fat, nil
}

func (g *fat32Geometry) chain(fat []uint32, first uint32) ([]uint32, error) {
	var cs []uint32
	for c := first; c >= 2 && c < 0x0FFFFFF8; c = fat[c] {
		if int(c) >= len(fat) || len(cs) > len(fat) {
			return nil, fmt.Errorf("FAT chain from cluster %d is broken", first)
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// fixFAT32 applies the fix-ups to the FAT32 filesystem at byte offset start of dev.
func fixFAT32(dev readerWriterAt, start int64) error {
	g, err := readFAT32Geometry(dev, start)
	if err != nil {
		return err
	}
	fat, err := g.readFAT(dev)
	if err != nil {
		return err
	}
	// ".." of every directory in the root directory -> cluster 0.
	rootClusters, err := g.chain(fat, g.rootCluster)
	if err != nil {
		return err
	}
	cb := g.clusterBytes()
	buf := make([]byte, cb)
	for _, rc := range rootClusters {
		if _, err := dev.ReadAt(buf, g.clusterOffset(rc)); err != nil {
			return err
		}
		for off := int64(0); off < cb; off += 32 {
			e := buf[off : off+32]
			if e[0] == 0x00 {
				break
			}
			attr := e[11]
			if e[0] == 0xE5 || attr == 0x0F || attr&0x10 == 0 || attr&0x08 != 0 {
				continue
			}
			sub := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
			if sub < 2 {
				continue
			}
			dotdot := make([]byte, 32)
			at := g.clusterOffset(sub) + 32
			if _, err := dev.ReadAt(dotdot, at); err != nil {
				return err
			}
			if string(dotdot[:11]) != "..         " {
				return fmt.Errorf("FAT32 directory at cluster %d has no \"..\" entry in its second slot", sub)
			}
			var zero [2]byte
			if _, err := dev.WriteAt(zero[:], at+20); err != nil {
				return err
			}
			if _, err := dev.WriteAt(zero[:], at+26); err != nil {
				return err
			}
		}
	}
	// FSInfo: free clusters and the first free one.
	var free, next uint32
	for c := 2; c < len(fat); c++ {
		if fat[c] == 0 {
			if free == 0 {
				next = uint32(c)
			}
			free++
		}
	}
	if free == 0 {
		next = 0xFFFFFFFF
	}
	var info [8]byte
	binary.LittleEndian.PutUint32(info[0:], free)
	binary.LittleEndian.PutUint32(info[4:], next)
	for _, sector := range []int64{g.fsInfoSector, g.backupBoot + g.fsInfoSector} {
		if sector == 0 || sector == 0xFFFF {
			continue
		}
		if _, err := dev.WriteAt(info[:], g.start+sector*g.bytesPerSector+0x1E8); err != nil {
			return err
		}
	}
	return nil
}
