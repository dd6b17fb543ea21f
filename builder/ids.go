package builder

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/google/uuid"
)

// idNamespace scopes every identifier the builder derives, so that the same lock hash used by
// another tool never yields the same UUIDs.
var idNamespace = uuid.MustParse("8a1e53f4-6c0b-4d55-9f3b-6b75c2a1d0e7")

// IDs are the identifiers written into an image. They derive from the lock hash alone, so
// equal locks give equal images and different locks give different (non-colliding) ones.
type IDs struct {
	DiskGUID   uuid.UUID // GPT disk GUID
	ESPPart    uuid.UUID // GPT partition GUID of the EFI system partition
	RootPart   uuid.UUID // GPT partition GUID of the root partition (root=PARTUUID=)
	RootFS     uuid.UUID // ext4 filesystem UUID
	RootHash   uuid.UUID // ext4 directory hash seed
	ESPSerial  uint32    // FAT volume serial ("XXXX-XXXX", /dev/disk/by-uuid of the ESP)
	VHD        uuid.UUID // the VHD footer's unique id
	VMDKCID    uint32    // the VMDK descriptor's content id
	SBOMPrefix uuid.UUID // SPDX documentNamespace suffix
}

// deriveID is an RFC 9562 version 8 UUID (name-based, SHA-256) of lockHash and purpose.
func deriveID(lockHash, purpose string) uuid.UUID {
	return uuid.NewHash(sha256.New(), idNamespace, []byte(lockHash+"\x00"+purpose), 8)
}

func derive32(lockHash, purpose string) uint32 {
	sum := sha256.Sum256([]byte("kubebake\x00" + lockHash + "\x00" + purpose))
	return binary.BigEndian.Uint32(sum[:4])
}

// DeriveIDs returns the identifiers for an image built from the lock with this hash.
func DeriveIDs(lockHash string) IDs {
	return IDs{
		DiskGUID:   deriveID(lockHash, "gpt-disk"),
		ESPPart:    deriveID(lockHash, "gpt-part-esp"),
		RootPart:   deriveID(lockHash, "gpt-part-root"),
		RootFS:     deriveID(lockHash, "ext4-uuid"),
		RootHash:   deriveID(lockHash, "ext4-hash-seed"),
		ESPSerial:  derive32(lockHash, "fat-serial"),
		VHD:        deriveID(lockHash, "vhd-unique-id"),
		VMDKCID:    derive32(lockHash, "vmdk-cid"),
		SBOMPrefix: deriveID(lockHash, "spdx-namespace"),
	}
}
