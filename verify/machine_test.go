package verify

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQEMUArgsNetworkIsolated: the guest network is user-mode with restrict=on, every host
// forward binds 127.0.0.1, and VM-to-VM sockets stay on loopback.
func TestQEMUArgsNetworkIsolated(t *testing.T) {
	cfg := MachineConfig{
		Name: "master-cloud-init", Accel: AccelTCG, SSHPort: 2222,
		Firmware:     Firmware{Code: "/fw/code.fd", Vars: "/fw/vars.fd"},
		SeedISO:      "/w/seed.iso",
		ExtraNetdevs: []string{"socket,listen=127.0.0.1:40000"},
	}
	args := QEMUArgs(cfg, "/w/overlay.qcow2", "/w/vars.fd", "/w/serial.log")
	line := strings.Join(args, " ")
	want := []string{
		"-machine q35", "-accel tcg", "-smp 2", "-m 2048", "-display none", "-no-reboot", "-nodefaults",
		"-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22",
		"-device virtio-net-pci,netdev=net0,romfile=",
		"-device virtio-blk-pci,drive=disk0,bootindex=0",
		"if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.fd",
		"if=pflash,format=raw,unit=1,file=/w/vars.fd",
		"if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap,file=/w/overlay.qcow2",
		"if=virtio,format=raw,readonly=on,file=/w/seed.iso",
		"-serial file:/w/serial.log",
		"-netdev socket,id=net1,listen=127.0.0.1:40000",
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("command line lacks %q:\n%s", w, line)
		}
	}
	// Every user-mode NIC is restricted; every forward and socket is on 127.0.0.1.
	for i, a := range args {
		if a == "-nic" || a == "-netdev" {
			v := args[i+1]
			if strings.HasPrefix(v, "user") && !strings.Contains(v, "restrict=on") {
				t.Errorf("unrestricted user network: %s", v)
			}
		}
	}
	for _, m := range regexp.MustCompile(`hostfwd=tcp:([^:]*):`).FindAllStringSubmatch(line, -1) {
		if m[1] != "127.0.0.1" {
			t.Errorf("forward bound to %q", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`(listen|connect)=([0-9.]+):`).FindAllStringSubmatch(line, -1) {
		if !net.ParseIP(m[2]).IsLoopback() {
			t.Errorf("socket netdev on %s", m[2])
		}
	}
	if strings.Contains(line, "fw_cfg") {
		t.Error("fw_cfg without an Ignition config")
	}
	cfg.SeedISO, cfg.IgnitionConfig, cfg.Accel = "", "/w/config.ign", AccelKVM
	line = strings.Join(QEMUArgs(cfg, "o", "v", "s"), " ")
	if !strings.Contains(line, "-fw_cfg name=opt/com.coreos/config,file=/w/config.ign") || !strings.Contains(line, "-accel kvm -cpu host") {
		t.Errorf("ignition/kvm command line: %s", line)
	}
	if strings.Contains(line, "seed.iso") {
		t.Error("seed attached without SeedISO")
	}
}

// TestStopOnCancel starts a fake "QEMU" that ignores SIGTERM and has a child of its own, then
// cancels the context: both processes must be gone and the overlay and vars copy removed.
func TestStopOnCancel(t *testing.T) {
	requireTool(t, "qemu-img")
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	if err := os.WriteFile(image, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	pids := filepath.Join(dir, "pids")
	fake := filepath.Join(dir, "fake-qemu")
	script := "#!/bin/sh\ntrap '' TERM INT\necho $$ > " + pids + ".tmp\nsleep 3600 &\necho $! >> " + pids + ".tmp\nmv " + pids + ".tmp " + pids + "\nwait\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m, err := StartMachine(ctx, MachineConfig{
		Name: "cancel", Image: image, WorkDir: filepath.Join(dir, "work"), Accel: AccelTCG,
		QEMU: fake, Firmware: Firmware{Code: "/dev/null", Vars: "/dev/null"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{m.Overlay, m.Vars} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s not created: %v", f, err)
		}
	}
	var procs []int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(procs) < 2; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(pids)
		procs = nil
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			procs = append(procs, n)
		}
	}
	if len(procs) != 2 || !alive(procs[0]) || !alive(procs[1]) {
		t.Fatalf("fake QEMU and its child not running: %v", procs)
	}
	cancel()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("QEMU did not exit after cancel")
	}
	m.Stop()
	time.Sleep(200 * time.Millisecond)
	for _, p := range procs {
		if alive(p) {
			t.Errorf("process %d left after cancel", p)
		}
	}
	for _, f := range []string{m.Overlay, m.Vars} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind", f)
		}
	}
	// The image itself is untouched.
	if st, err := os.Stat(image); err != nil || st.Size() != 1<<20 {
		t.Errorf("image changed: %v %v", st, err)
	}
}

// alive reports whether pid runs (a zombie waiting to be reaped counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndex(s, ")"); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// TestStartFailsFast: QEMU dying at once (bad arguments) is an error with its stderr, and
// nothing is left behind.
func TestStartFailsFast(t *testing.T) {
	requireTool(t, "qemu-img")
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	os.WriteFile(image, make([]byte, 1<<20), 0o644)
	fake := filepath.Join(dir, "fake-qemu")
	os.WriteFile(fake, []byte("#!/bin/sh\necho 'qemu: bad option' >&2\nexit 1\n"), 0o755)
	work := filepath.Join(dir, "work")
	_, err := StartMachine(context.Background(), MachineConfig{
		Name: "bad", Image: image, WorkDir: work, QEMU: fake, Firmware: Firmware{Code: "/dev/null", Vars: "/dev/null"},
	})
	if err == nil || !strings.Contains(err.Error(), "bad option") {
		t.Fatalf("err = %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(work, "*.qcow2"))
	if len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (make deps)", name)
	}
}

func TestStripANSI(t *testing.T) {
	in := "\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: loading\r\nDebian GNU/Linux 12 node ttyS0\r\n"
	if got := stripANSI(in); got != "BdsDxe: loading\nDebian GNU/Linux 12 node ttyS0\n" {
		t.Errorf("stripANSI = %q", got)
	}
}

func TestSerialFailures(t *testing.T) {
	log := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(log, []byte("\x1b[0;1;31m[FAILED]\x1b[0m Failed to start \x1b[0;1;39mssh.service\x1b[0m - OpenBSD Secure Shell server.\r\n"+
		"[  OK  ] Stopped ssh.service\r\n\x1b[0;1;31m[FAILED]\x1b[0m Failed to start \x1b[0;1;39mssh.service\x1b[0m - OpenBSD Secure Shell server.\r\nlocalhost login:\r\n"), 0o644)
	m := &Machine{SerialLog: log}
	got := m.SerialFailures(3)
	if len(got) != 1 || got[0] != "[FAILED] Failed to start ssh.service - OpenBSD Secure Shell server." {
		t.Errorf("SerialFailures = %q", got)
	}
	if !m.SerialHas(" login: ") && !m.SerialHas("localhost login:") {
		t.Error("SerialHas misses the login prompt")
	}
	if tail := m.SerialTail(1); tail != "localhost login:" {
		t.Errorf("SerialTail = %q", tail)
	}
}
