// Package builder turns a locked recipe into golden disk images: a root filesystem from
// Debian packages (mmdebstrap), the node layer merged in with image hygiene applied as a tar
// stream rewrite (no mounts, no chroot), a root ext4 made by mke2fs straight from that
// tarball, a FAT32 EFI system partition with systemd-boot (go-diskfs), a GPT disk, and the
// output formats (qemu-img), plus manifest.json and sbom.spdx.json.
//
// Every identifier (disk and partition GUIDs, filesystem UUID, hash seed, FAT serial) derives
// from the lock hash and every timestamp from the lock's SOURCE_DATE_EPOCH, so equal locks
// give byte-identical raw images.
//
// The build runs as small named steps (compare kind's create actions and packer's
// multistep), each timed and logged; see Build.
package builder
