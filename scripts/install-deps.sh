#!/usr/bin/env bash
# Installs the system packages kubebake's build, tests and demo need, from the Debian mirror
# this machine's apt is already configured for. Idempotent: a second run only checks.
set -euo pipefail

# Tools whose presence means the packages below are installed. Every tool a test needs
# (testenv.NeedTool: with CI=true a missing one fails the run) is here.
need_tools=(qemu-system-x86_64 qemu-img mmdebstrap xorriso mcopy mtype mdir fsck.fat sgdisk sfdisk blkid cloud-init busybox
	bsdtar shellcheck socat containerd ctr runc iptables ip unshare nsenter mke2fs debugfs e2fsck chattr python3 gpg gpgv
	systemd-analyze dpkg dpkg-deb)
# e2fsprogs >= 1.47.1 takes a tarball for `mke2fs -d` and honours SOURCE_DATE_EPOCH.
min_e2fs=1.47.1

have_all=1
for t in "${need_tools[@]}"; do command -v "$t" >/dev/null || have_all=0; done
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -f /usr/share/OVMF/OVMF_CODE.fd ] || have_all=0
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || have_all=0
e2fs_version=$(dpkg-query -W -f='${Version}' e2fsprogs 2>/dev/null || echo 0)
dpkg --compare-versions "$e2fs_version" ge "$min_e2fs" || have_all=0
if [ "$have_all" = 1 ]; then
	echo "install-deps: all system packages present"
	exit 0
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# The machine's Debian mirror, read from its own apt sources (never written into the repo).
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
	grep -v security | grep -oE 'https?://[^ ]+/debian/?' | head -n 1 || true)
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ -n "$mirror" ] && [ "$codename" = bookworm ] &&
	! grep -rqs "bookworm-backports" /etc/apt/sources.list.d/ /etc/apt/sources.list; then
	echo "install-deps: adding bookworm-backports from the configured mirror"
	$SUDO tee /etc/apt/sources.list.d/kubebake-backports.sources >/dev/null <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
	qemu-system-x86 qemu-utils ovmf mmdebstrap xorriso mtools dosfstools gdisk \
	libarchive13 libarchive-tools cloud-init busybox-static e2fsprogs \
	systemd-boot-efi zstd shellcheck socat containerd runc iptables \
	iproute2 util-linux fdisk python3 gpg gpgv debian-archive-keyring systemd dpkg >/dev/null
e2fs_version=$(dpkg-query -W -f='${Version}' e2fsprogs)
if ! dpkg --compare-versions "$e2fs_version" ge "$min_e2fs"; then
	$SUDO apt-get install -y -qq -t "${codename}-backports" e2fsprogs >/dev/null
fi
echo "install-deps: e2fsprogs $(dpkg-query -W -f='${Version}' e2fsprogs), qemu $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}')"
