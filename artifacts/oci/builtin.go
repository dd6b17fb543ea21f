package oci

import (
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// The built-in images of a kubebake cluster. Each takes pinned inputs only: a binary the lock
// fetched (a host path), its version, and the lock's SOURCE_DATE_EPOCH.

// Registry is the registry part of every built-in image's name. It is never contacted: the
// images are imported from archives, and the name only has to be full so containerd and
// kubelet agree on it.
const Registry = "kubebake.local"

// BusyboxInput is Debian's busybox-static binary and its version.
type BusyboxInput struct {
	// Binary is /bin/busybox out of busybox-static's .deb (statically linked).
	Binary string
	// Version is the Debian upstream version, as the lock records it: "v1.35.0" or "1.35.0".
	Version string
	// SourceDateEpoch is the lock's SOURCE_DATE_EPOCH.
	SourceDateEpoch int64
}

// CoreDNSInput is a CoreDNS binary and its version.
type CoreDNSInput struct {
	Binary          string // statically linked (CGO_ENABLED=0), linux/amd64
	Version         string // "v1.15.0"
	SourceDateEpoch int64
}

// BusyboxApplets are the /bin symlinks of the busybox image: what cluster tests run.
var BusyboxApplets = []string{
	"sh", "nc", "httpd", "wget", "nslookup", "sleep", "cat", "echo", "ls", "hostname", "ip",
	"ps", "env", "true", "false", "mkdir", "printf", "test", "[", "id", "uname", "date", "grep",
	"wc", "head", "tail", "timeout", "ping", "kill",
}

// pathEnv is PATH in every built-in image.
const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// passwd and group name root and nobody, so tools that look users up (id, the kubernetes
// plugin's client-go) find them.
const (
	etcPasswd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	etcGroup  = "root:x:0:\nnobody:x:65534:\n"
)

// BusyboxRef is the busybox image's name for a busybox version.
func BusyboxRef(version string) string {
	return Registry + "/busybox:" + strings.TrimPrefix(version, "v")
}

// PauseRef is the pod sandbox image's name (kubelet's and containerd's sandbox image).
func PauseRef(busyboxVersion string) string {
	return Registry + "/pause:" + strings.TrimPrefix(busyboxVersion, "v")
}

// CoreDNSRef is the CoreDNS image's name; the tag keeps CoreDNS's own "v".
func CoreDNSRef(version string) string { return Registry + "/coredns:" + version }

// BusyboxImage is busybox with the cluster-test applets linked in /bin, /tmp, /root and
// /etc/passwd and /etc/group; it runs sh by default.
func BusyboxImage(in BusyboxInput) (NamedImage, error) {
	if err := checkStaticBinary(in.Binary); err != nil {
		return NamedImage{}, fmt.Errorf("busybox image: %w; use /bin/busybox from Debian's busybox-static", err)
	}
	files := append(baseFiles(), File{Path: "/bin/busybox", Mode: 0o755, Open: hostFile(in.Binary)})
	for _, a := range BusyboxApplets {
		files = append(files, File{Path: "/bin/" + a, Mode: fs.ModeSymlink | 0o777, Target: "busybox"})
	}
	img, err := Build(Spec{
		Files: files,
		Config: Config{
			Cmd: []string{"sh"},
			Env: []string{pathEnv},
			Labels: map[string]string{
				"org.opencontainers.image.title":   "busybox",
				"org.opencontainers.image.version": strings.TrimPrefix(in.Version, "v"),
			},
		},
		SourceDateEpoch: in.SourceDateEpoch,
	})
	if err != nil {
		return NamedImage{}, fmt.Errorf("busybox image: %w", err)
	}
	return NamedImage{Ref: BusyboxRef(in.Version), Image: img}, nil
}

// PauseScript is the pause image's entrypoint script. As PID 1 of a pod a process gets no
// default signal handling (the kernel drops SIGTERM and SIGINT unless it has a handler), so
// the trap is what makes it stop, with status 0, when the runtime stops the sandbox. The sleep
// runs in the background because ash runs a trap only between commands, and `wait` returns at
// once on a trapped signal; the trap also ends that sleep, which would otherwise outlive the
// shell when it is not PID 1.
const PauseScript = "trap 'kill $! 2>/dev/null; exit 0' TERM INT; while :; do sleep 2147483647 & wait $!; done"

// PauseImage is the pod sandbox image. Upstream's pause is a tiny C program published only
// as a registry image, and no registry is reachable when baking (nor from the nodes), while
// busybox-static comes as a Debian package through the same apt mirror as the rest of the
// image. So the sandbox is busybox's sh sleeping forever: it holds the pod's namespaces and
// exits 0 on SIGTERM/SIGINT, as pause does. It runs as 65535:65535, like upstream's.
func PauseImage(in BusyboxInput) (NamedImage, error) {
	if err := checkStaticBinary(in.Binary); err != nil {
		return NamedImage{}, fmt.Errorf("pause image: %w; use /bin/busybox from Debian's busybox-static", err)
	}
	files := []File{
		{Path: "/bin/busybox", Mode: 0o755, Open: hostFile(in.Binary)},
		{Path: "/bin/sh", Mode: fs.ModeSymlink | 0o777, Target: "busybox"},
		{Path: "/bin/sleep", Mode: fs.ModeSymlink | 0o777, Target: "busybox"},
	}
	img, err := Build(Spec{
		Files: files,
		Config: Config{
			Entrypoint: []string{"/bin/sh", "-c", PauseScript},
			Env:        []string{pathEnv},
			User:       "65535:65535",
			Labels: map[string]string{
				"org.opencontainers.image.title":   "pause (busybox sh)",
				"org.opencontainers.image.version": strings.TrimPrefix(in.Version, "v"),
			},
		},
		SourceDateEpoch: in.SourceDateEpoch,
	})
	if err != nil {
		return NamedImage{}, fmt.Errorf("pause image: %w", err)
	}
	return NamedImage{Ref: PauseRef(in.Version), Image: img}, nil
}

// CoreDNSImage is /coredns run as its entrypoint, with DNS on 53/udp and 53/tcp and metrics
// on 9153/tcp; kubeadm-style manifests pass "-conf /etc/coredns/Corefile" as args.
func CoreDNSImage(in CoreDNSInput) (NamedImage, error) {
	if !strings.HasPrefix(in.Version, "v") {
		return NamedImage{}, fmt.Errorf("coredns image: version %q: write it as CoreDNS tags it, like v1.15.0", in.Version)
	}
	return binaryImage("coredns", in.Binary, in.Version, CoreDNSRef(in.Version), []string{"53/udp", "53/tcp", "9153/tcp"}, in.SourceDateEpoch)
}

// BinaryInput is a program a recipe bakes as an image of its own (images[].source, gomod).
type BinaryInput struct {
	// Name is the image's name, a DNS label: the image is kubebake.local/<Name>:<Version>
	// and the program /<Name>.
	Name            string
	Binary          string // statically linked (CGO_ENABLED=0), linux/amd64
	Version         string // the module version: "v0.3.1"
	SourceDateEpoch int64
}

// BinaryImage is the program as /<name>, run as the entrypoint, made exactly as the CoreDNS
// image is (with /etc/passwd and /etc/group, no ports).
func BinaryImage(in BinaryInput) (NamedImage, error) {
	if in.Name == "" || strings.ContainsAny(in.Name, "/:@") {
		return NamedImage{}, fmt.Errorf("image name %q: use a DNS label, like agent", in.Name)
	}
	return binaryImage(in.Name, in.Binary, in.Version, BinaryRef(in.Name, in.Version), nil, in.SourceDateEpoch)
}

// binaryImage is a static binary at /<name> as the entrypoint of an image named ref.
func binaryImage(name, binary, version, ref string, ports []string, epoch int64) (NamedImage, error) {
	if err := checkStaticBinary(binary); err != nil {
		return NamedImage{}, fmt.Errorf("%s image: %w; build it with CGO_ENABLED=0", name, err)
	}
	files := []File{
		{Path: "/" + name, Mode: 0o755, Open: hostFile(binary)},
		{Path: "/etc/passwd", Mode: 0o644, Open: FromBytes([]byte(etcPasswd))},
		{Path: "/etc/group", Mode: 0o644, Open: FromBytes([]byte(etcGroup))},
	}
	img, err := Build(Spec{
		Files: files,
		Config: Config{
			Entrypoint:   []string{"/" + name},
			ExposedPorts: ports,
			Labels: map[string]string{
				"org.opencontainers.image.title":   name,
				"org.opencontainers.image.version": version,
			},
		},
		SourceDateEpoch: epoch,
	})
	if err != nil {
		return NamedImage{}, fmt.Errorf("%s image: %w", name, err)
	}
	return NamedImage{Ref: ref, Image: img}, nil
}

// ClusterImages are the three built-in images, in the order an archive lists them.
func ClusterImages(busybox BusyboxInput, coredns CoreDNSInput) ([]NamedImage, error) {
	var out []NamedImage
	for _, build := range []func() (NamedImage, error){
		func() (NamedImage, error) { return BusyboxImage(busybox) },
		func() (NamedImage, error) { return PauseImage(busybox) },
		func() (NamedImage, error) { return CoreDNSImage(coredns) },
	} {
		ni, err := build()
		if err != nil {
			return nil, err
		}
		out = append(out, ni)
	}
	return out, nil
}

// baseFiles are the folders and user database of the busybox image.
func baseFiles() []File {
	return []File{
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "/root", Mode: fs.ModeDir | 0o700},
		{Path: "/etc/passwd", Mode: 0o644, Open: FromBytes([]byte(etcPasswd))},
		{Path: "/etc/group", Mode: 0o644, Open: FromBytes([]byte(etcGroup))},
	}
}

func hostFile(p string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return os.Open(p) }
}

// checkStaticBinary refuses what cannot run in an image with no libc: a binary that is not
// x86-64 ELF or that names a dynamic loader (it would fail with a bare "no such file").
func checkStaticBinary(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s is not a readable ELF binary: %w", p, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s is built for %v, the images are linux/amd64", p, f.Machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (it needs a loader the image does not have)", p)
		}
	}
	return nil
}
