package verify

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/testenv"
)

// TestQEMUArgsNetworkIsolated: the guest network is user-mode with restrict=on, every host
// forward binds 127.0.0.1, and VM-to-VM sockets stay on loopback.
func TestQEMUArgsNetworkIsolated(t *testing.T) {
	cfg := MachineConfig{
		Name: "master-cloud-init", Accel: AccelTCG, SSHPort: 2222,
		Firmware:     Firmware{Code: "/fw/code.fd", Vars: "/fw/vars.fd"},
		SeedISO:      "/w/seed.iso",
		ExtraNetdevs: []string{"socket,listen=127.0.0.1:40000"},
		NICs: []NIC{{
			Netdev: "stream,id=cluster,server=off,addr.type=unix,addr.path=/w/vnet.sock",
			MAC:    net.HardwareAddr{0x52, 0x54, 0xab, 0xcd, 0xef, 0x01},
		}},
		Forwards: []Forward{{HostPort: 40123, GuestPort: 6443}},
	}
	args := QEMUArgs(cfg, "/w/overlay.qcow2", "/w/vars.fd", "/w/serial.log")
	line := strings.Join(args, " ")
	want := []string{
		"-machine q35", "-accel tcg", "-smp 2", "-m 2048", "-display none", "-no-reboot", "-nodefaults",
		"-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:40123-:6443",
		"-device virtio-net-pci,netdev=net0,romfile=",
		"-device virtio-blk-pci,drive=disk0,bootindex=0",
		"if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.fd",
		"if=pflash,format=raw,unit=1,file=/w/vars.fd",
		"if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap,file=/w/overlay.qcow2",
		"if=virtio,format=raw,readonly=on,file=/w/seed.iso",
		"-serial file:/w/serial.log",
		"-netdev socket,id=net1,listen=127.0.0.1:40000",
		"-device virtio-net-pci,netdev=net1,romfile=,mac=52:54:00:12:35:10",
		// The cluster NIC keeps its id and gets the MAC its DHCP lease is for.
		"-netdev stream,id=cluster,server=off,addr.type=unix,addr.path=/w/vnet.sock",
		"-device virtio-net-pci,netdev=cluster,romfile=,mac=52:54:ab:cd:ef:01",
		// Emulated, the guest's systemd-boot gives the kernel the HPET as its clocksource.
		"-smbios type=11,value=io.systemd.boot.kernel-cmdline-extra=clocksource=hpet",
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
	if err := CheckNetworkIsolated(args); err != nil {
		t.Errorf("CheckNetworkIsolated refuses the machine's own command line: %v", err)
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
	if strings.Contains(line, "-smbios") {
		t.Errorf("a KVM guest keeps its own clocksource: %s", line)
	}
}

// TestCheckNetworkIsolated: only restricted user-mode networking with loopback forwards and
// unix-socket or loopback links pass; everything that could reach beyond the host is refused
// by name.
func TestCheckNetworkIsolated(t *testing.T) {
	for _, ok := range []string{
		"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:6443-:6443",
		"socket,id=net1,connect=127.0.0.1:40000",
		"stream,id=c,server=off,addr.type=unix,addr.path=/tmp/a,,b/vnet.sock",
		"stream,id=c,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5000",
		"dgram,id=d,local.type=unix,local.path=/tmp/l,remote.type=unix,remote.path=/tmp/r",
	} {
		if err := CheckNetworkIsolated([]string{"-netdev", ok}); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, c := range []struct{ netdev, want string }{
		{"user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22", "without restrict=on"},
		{"user,id=net0,restrict=off", "without restrict=on"},
		{"user,id=net0,restrict=on,hostfwd=tcp:0.0.0.0:2222-:22", "not bound to 127.0.0.1"},
		{"user,id=net0,restrict=on,hostfwd=tcp::2222-:22", "not bound to 127.0.0.1"},
		{"user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:nc example.org 80", "guestfwd"},
		{"socket,id=n,listen=:40000", "not on loopback"},
		{"socket,id=n,connect=192.0.2.1:40000", "not on loopback"},
		{"socket,id=n,mcast=230.0.0.1:1234", "mcast"},
		{"stream,id=c,addr.type=inet,addr.host=0.0.0.0,addr.port=5000", "not on loopback"},
		{"stream,id=c,addr.type=fd,addr.str=3", "not allowed"},
		{"stream,id=c,server=off", "no address type"},
		{"tap,id=t,ifname=tap0", `type "tap" is not allowed`},
		{"bridge,id=b,br=br0", `type "bridge" is not allowed`},
	} {
		err := CheckNetworkIsolated([]string{"-m", "2048", "-netdev", c.netdev})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.netdev, err, c.want)
		}
	}
	if err := CheckNetworkIsolated([]string{"-nic", "user,model=virtio"}); err == nil {
		t.Error("-nic user without restrict=on accepted")
	}
}

// TestRestartKeepsDisk: a VM whose guest powered off (QEMU exits) starts again on the same
// overlay and firmware variables with the same command line (ports, MACs, seed), and a
// serial log of its own; a running VM refuses to restart.
func TestRestartKeepsDisk(t *testing.T) {
	requireTool(t, "qemu-img")
	dir := t.TempDir()
	image := filepath.Join(dir, "image.raw")
	os.WriteFile(image, make([]byte, 1<<20), 0o644)
	calls := filepath.Join(dir, "calls")
	// The fake QEMU records its arguments, runs a moment (past launch's start check) and
	// exits as QEMU does when the guest powers off.
	fake := filepath.Join(dir, "fake-qemu")
	os.WriteFile(fake, []byte("#!/bin/sh\necho \"$*\" >> "+calls+"\nsleep 2\n"), 0o755)
	ctx := context.Background()
	m, err := StartMachine(ctx, MachineConfig{
		Name: "node", Image: image, WorkDir: filepath.Join(dir, "work"), Accel: AccelTCG, QEMU: fake,
		Firmware: Firmware{Code: "/dev/null", Vars: "/dev/null"},
		NICs:     []NIC{{Netdev: "stream,id=cluster,server=off,addr.type=unix,addr.path=/w/vnet.sock", MAC: net.HardwareAddr{0x52, 0x54, 1, 2, 3, 4}}},
		Forwards: []Forward{{GuestPort: 6443}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	api := m.HostAddr(6443)
	if api == "" || api == m.SSHAddr || !strings.HasPrefix(api, "127.0.0.1:") || m.Config().SSHPort == 0 {
		t.Fatalf("forwards not resolved: api %q ssh %q", api, m.SSHAddr)
	}
	if err := m.Restart(ctx); err == nil || !strings.Contains(err.Error(), "still runs") {
		t.Errorf("restart of a running VM: %v", err)
	}
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("fake QEMU did not exit")
	}
	overlayBefore, err := os.Stat(m.Overlay)
	if err != nil {
		t.Fatalf("the overlay is gone once QEMU exited: %v", err)
	}
	firstArgs := strings.Join(m.Args, " ")
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if exited, _ := m.Exited(); exited {
		t.Error("restarted VM reported as exited")
	}
	if m.HostAddr(6443) != api {
		t.Errorf("API forward moved from %s to %s", api, m.HostAddr(6443))
	}
	if len(m.SerialLogs) != 2 || m.SerialLog != m.SerialLogs[1] || !strings.HasSuffix(m.SerialLog, "node-serial-boot2.log") {
		t.Errorf("serial logs: %v (current %s)", m.SerialLogs, m.SerialLog)
	}
	// Same command line but for the serial log.
	if got := strings.ReplaceAll(strings.Join(m.Args, " "), m.SerialLogs[1], m.SerialLogs[0]); got != firstArgs {
		t.Errorf("restart changed the command line:\nfirst: %s\nagain: %s", firstArgs, got)
	}
	<-m.Done()
	b, _ := os.ReadFile(calls)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "mac=52:54:01:02:03:04") || !strings.Contains(lines[1], "file="+m.Overlay) || !strings.Contains(lines[1], "file="+m.Vars) {
		t.Errorf("QEMU runs:\n%s", b)
	}
	if st, err := os.Stat(m.Overlay); err != nil || !os.SameFile(st, overlayBefore) {
		t.Errorf("the overlay was replaced: %v", err)
	}
	m.Stop()
	if _, err := os.Stat(m.Overlay); !os.IsNotExist(err) {
		t.Error("Stop left the overlay")
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
	testenv.NeedTool(t, name)
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
