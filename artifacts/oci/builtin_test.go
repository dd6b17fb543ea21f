package oci

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/run"
)

// combined runs a command and returns stdout and stderr together. The timeout only guards
// against a hang (a broken test script), it is not a speed limit.
func combined(t *testing.T, c *run.Cmd) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return combinedCtx(ctx, c)
}

func combinedCtx(ctx context.Context, c *run.Cmd) (string, error) {
	var out lockedBuffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run(ctx)
	return out.String(), err
}

// lockedBuffer takes stdout and stderr, which exec copies in two goroutines. (A shared
// bytes.Buffer loses output: its ReadFrom truncates what the other goroutine wrote.)
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// The busybox image from the real busybox-static binary: its layer has the binary, an
// applet symlink per BusyboxApplets, /tmp 1777 and the user database; unpacked into a
// folder, every symlink resolves to that folder's busybox and runs its applet.
func TestBusyboxImageApplets(t *testing.T) {
	bin := busyboxBinary(t)
	version := busyboxVersion(t, bin)
	ni, err := BusyboxImage(BusyboxInput{Binary: bin, Version: "v" + version, SourceDateEpoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	if ni.Ref != "kubebake.local/busybox:"+version {
		t.Errorf("ref %s", ni.Ref)
	}
	entries, _ := readLayer(t, ni.Image)
	st, _ := os.Stat(bin)
	if e := entries["bin/busybox"]; e.Type != '0' || e.Mode != 0o755 || e.Size != st.Size() {
		t.Errorf("bin/busybox %+v", e)
	}
	for _, want := range []string{"tmp/", "root/", "etc/", "etc/passwd", "etc/group"} {
		if _, ok := entries[want]; !ok {
			t.Errorf("layer has no %s", want)
		}
	}
	if entries["tmp/"].Mode != 0o1777 {
		t.Errorf("/tmp mode %o", entries["tmp/"].Mode)
	}

	dir := t.TempDir()
	unpackLayer(t, ni.Image, dir)
	list, err := run.Command(filepath.Join(dir, "bin", "busybox"), "--list").Output(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	compiledIn := strings.Fields(string(list))
	for _, a := range BusyboxApplets {
		if e := entries["bin/"+a]; e.Type != '2' || e.Linkname != "busybox" {
			t.Errorf("bin/%s: %+v, want a symlink to busybox", a, e)
		}
		if !slices.Contains(compiledIn, a) {
			t.Errorf("this busybox has no %s applet", a)
		}
		link := filepath.Join(dir, "bin", a)
		if resolved, err := filepath.EvalSymlinks(link); err != nil || resolved != filepath.Join(dir, "bin", "busybox") {
			t.Errorf("%s resolves to %s (%v)", link, resolved, err)
		}
	}
	// Run applets through their symlinks: busybox picks the applet from argv[0].
	for _, a := range []string{"nc", "httpd", "wget", "nslookup", "ip", "ps", "timeout", "ping", "grep", "hostname"} {
		out, err := combined(t, run.Command(filepath.Join(dir, "bin", a), "--help"))
		if err != nil || !strings.Contains(out, "Usage: "+a) {
			t.Errorf("%s --help: %v\n%s", a, err, out)
		}
	}
	out, err := combined(t, &run.Cmd{
		Name: filepath.Join(dir, "bin", "sh"),
		Args: []string{"-c", `printf '%s\n' a b c | grep -c . ; echo "$((6*7))"; [ -d /tmp ] && test -n x && true && ! false && echo tests-ok`},
		Env:  []string{"PATH=" + filepath.Join(dir, "bin")},
	})
	if err != nil || out != "3\n42\ntests-ok\n" {
		t.Errorf("sh script: %v, output %q", err, out)
	}
}

// Inside the unpacked busybox image (chroot, so /bin and /etc are the image's): users
// resolve from its /etc/passwd, /tmp is sticky, and httpd, wget and nc talk over 127.0.0.1.
func TestBusyboxImageChroot(t *testing.T) {
	needRoot(t)
	bin := busyboxBinary(t)
	ni, err := BusyboxImage(BusyboxInput{Binary: bin, Version: busyboxVersion(t, bin), SourceDateEpoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unpackLayer(t, ni.Image, dir)
	// A runtime gives containers /dev; the shell needs /dev/null for background jobs.
	if err := os.Mkdir(filepath.Join(dir, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(dir, "dev", "null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatal(err)
	}
	script := `set -e
id -un; id -u nobody; ls -ld /tmp | head -c 10; echo
mkdir -p /tmp/www && echo served > /tmp/www/index.html
httpd -f -p 127.0.0.1:$port -h /tmp/www & h=$!
i=0; until wget -q -O - http://127.0.0.1:$port/index.html 2>/dev/null; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc 127.0.0.1 $port | grep -c served
kill $h`
	out, err := combined(t, &run.Cmd{Name: "chroot", Args: []string{dir, "/bin/sh", "-c", script}, Env: []string{"port=" + freePort(t)}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Fields(out)
	if len(lines) < 5 || lines[0] != "root" || lines[1] != "65534" || lines[2] != "drwxrwxrwt" || lines[3] != "served" || lines[4] != "1" {
		t.Errorf("chroot output %q", out)
	}
}

// freePort is a TCP port on 127.0.0.1 that nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// The pause image: busybox, sh and sleep only; as configured, its entrypoint runs until
// SIGTERM and then exits 0 (the same loop without the trap dies of the signal: 143).
func TestPauseImage(t *testing.T) {
	bin := busyboxBinary(t)
	version := busyboxVersion(t, bin)
	ni, err := PauseImage(BusyboxInput{Binary: bin, Version: version, SourceDateEpoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	if ni.Ref != "kubebake.local/pause:"+version {
		t.Errorf("ref %s", ni.Ref)
	}
	_, order := readLayer(t, ni.Image)
	if got := strings.Join(order, " "); got != "bin/ bin/busybox bin/sh bin/sleep" {
		t.Errorf("pause layer %s", got)
	}
	cfg, err := ni.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	entry := cfg.Config.Entrypoint
	if len(entry) != 3 || entry[0] != "/bin/sh" || cfg.Config.User != "65535:65535" {
		t.Fatalf("entrypoint %q user %q", entry, cfg.Config.User)
	}

	dir := t.TempDir()
	unpackLayer(t, ni.Image, dir)
	bb := filepath.Join(dir, "bin", "busybox")
	// Start the entrypoint, wait until its sleep runs (the trap is set by then), SIGTERM it.
	stopped := func(script string) string {
		outer := `"$BB" sh -c "$1" & p=$!
i=0; until s=$("$BB" ps -o pid,ppid,comm | "$BB" awk -v p=$p '$2 == p && $3 == "sleep" { print $1 }') && [ -n "$s" ]; do
	i=$((i+1)); [ $i -lt 3000 ] || { kill -KILL $p; echo "no sleep under $p"; exit 1; }; "$BB" usleep 20000
done
kill -TERM $p; wait $p; status=$?
kill -KILL $s 2>/dev/null # an orphaned sleep would hold the output open
echo "status=$status"`
		out, err := combined(t, &run.Cmd{
			Name: bb, Args: []string{"sh", "-c", outer, "outer", script},
			Env: []string{"BB=" + bb, "PATH=" + filepath.Join(dir, "bin")},
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// The shell may report "Terminated" around the status line; take the status line.
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.HasPrefix(l, "status=") {
				return l
			}
		}
		return "no status line in: " + out
	}
	if got := stopped(entry[2]); got != "status=0" {
		t.Errorf("pause entrypoint after SIGTERM: %s, want status=0", got)
	}
	if got := stopped("while :; do sleep 2147483647 & wait $!; done"); got != "status=143" {
		t.Errorf("control without the trap: %s, want status=143", got)
	}
}

// The CoreDNS image's shape, with busybox standing in for the binary (TestContainerd runs
// the real one): /coredns, its entrypoint and ports, /etc/passwd; and the refusals.
func TestCoreDNSImage(t *testing.T) {
	bin := busyboxBinary(t)
	ni, err := CoreDNSImage(CoreDNSInput{Binary: bin, Version: "v1.15.0", SourceDateEpoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	if ni.Ref != "kubebake.local/coredns:v1.15.0" {
		t.Errorf("ref %s", ni.Ref)
	}
	entries, order := readLayer(t, ni.Image)
	if got := strings.Join(order, " "); got != "coredns etc/ etc/group etc/passwd" {
		t.Errorf("coredns layer %s", got)
	}
	if entries["coredns"].Mode != 0o755 {
		t.Errorf("/coredns mode %o", entries["coredns"].Mode)
	}
	cfg, _ := ni.Image.ConfigFile()
	if strings.Join(cfg.Config.Entrypoint, " ") != "/coredns" || len(cfg.Config.ExposedPorts) != 3 {
		t.Errorf("config %+v", cfg.Config)
	}
	for _, p := range []string{"53/udp", "53/tcp", "9153/tcp"} {
		if _, ok := cfg.Config.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed", p)
		}
	}

	if _, err := CoreDNSImage(CoreDNSInput{Binary: bin, Version: "1.15.0"}); err == nil {
		t.Error("accepted a version without v")
	}
	// /usr/bin/env is dynamically linked on Debian: it would not start in the image.
	if _, err := CoreDNSImage(CoreDNSInput{Binary: "/usr/bin/env", Version: "v1.15.0"}); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("dynamic binary: %v", err)
	}
	if _, err := BusyboxImage(BusyboxInput{Binary: filepath.Join(t.TempDir(), "missing"), Version: "1.35.0"}); err == nil {
		t.Error("accepted a missing binary")
	}
}

// The three images as one archive: deterministic, and it validates.
func TestClusterImagesArchive(t *testing.T) {
	bin := busyboxBinary(t)
	version := busyboxVersion(t, bin)
	dir := t.TempDir()
	write := func(name string) Archive {
		imgs, err := ClusterImages(
			BusyboxInput{Binary: bin, Version: version, SourceDateEpoch: testEpoch},
			CoreDNSInput{Binary: bin, Version: "v1.15.0", SourceDateEpoch: testEpoch})
		if err != nil {
			t.Fatal(err)
		}
		a, err := WriteArchive(filepath.Join(dir, name), imgs)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a, b := write("a.tar"), write("b.tar")
	if a.SHA256 != b.SHA256 || a.Size != b.Size {
		t.Errorf("two builds differ: %s and %s", a.SHA256, b.SHA256)
	}
	checked, err := Validate(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, c := range checked {
		refs = append(refs, c.Ref)
	}
	want := []string{BusyboxRef(version), PauseRef(version), CoreDNSRef("v1.15.0")}
	if !slices.Equal(refs, want) {
		t.Errorf("refs %v, want %v", refs, want)
	}
	t.Logf("archive %d bytes, sha256 %s", a.Size, a.SHA256)
}
