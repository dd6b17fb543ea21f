package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/internal/run"
)

// Accelerators a Machine can use. AccelAuto probes KVM by really booting firmware with it.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// MachineConfig says how to boot one throwaway VM from an image. The image is never written:
// the VM runs on a qcow2 overlay that has the image as its backing file.
type MachineConfig struct {
	// Name identifies the VM in logs and in the names of its files ("master-cloud-init").
	Name string
	// Image is the disk image (raw or qcow2); ImageFormat is detected when empty.
	Image       string
	ImageFormat string
	// WorkDir receives the overlay, the firmware variables copy and the serial log.
	WorkDir string
	// Accel is kvm or tcg (resolve auto with ResolveAccel first).
	Accel     string
	CPUs      int // default 2
	MemoryMiB int // default 2048
	// SSHPort is the host port on 127.0.0.1 forwarded to the guest's port 22 (0: pick a free one).
	SSHPort int
	// SeedISO, when set, is attached read-only as a virtio disk (a NoCloud "cidata" seed).
	SeedISO string
	// IgnitionConfig, when set, is passed through QEMU fw_cfg as opt/com.coreos/config.
	IgnitionConfig string
	// ExtraNetdevs are additional NICs, each a -netdev value such as
	// "socket,id=cluster,listen=127.0.0.1:40000"; a virtio-net device is attached to each,
	// with a MAC derived from its position. NICs come after them.
	ExtraNetdevs []string
	// NICs are additional NICs with a fixed MAC (a cluster segment's DHCP knows nodes by MAC).
	NICs []NIC
	// Forwards are host ports on 127.0.0.1 forwarded to guest ports through the user-mode
	// NIC, besides SSH (HostPort 0: pick a free one).
	Forwards []Forward
	// Firmware is the UEFI firmware; zero means FindFirmware().
	Firmware Firmware
	// QEMU is the emulator binary (default qemu-system-x86_64).
	QEMU string
	// Nice, when positive, runs QEMU at that lower host priority (nice -n).
	Nice int
}

// NIC is one extra network card: a -netdev value and the MAC the guest sees.
type NIC struct {
	// Netdev is a -netdev value; without "id=" it gets one (net1, net2, ...). Only networks
	// that stay on the host are accepted (see CheckNetworkIsolated).
	Netdev string
	// MAC is the card's address; nil means one derived from the card's position.
	MAC net.HardwareAddr
}

// Forward is a TCP port on 127.0.0.1 that reaches a guest port through the user-mode NIC.
type Forward struct {
	HostPort  int `json:"hostPort"`
	GuestPort int `json:"guestPort"`
}

// Firmware is an OVMF pair: code (read-only pflash) and a template for the variables store.
type Firmware struct {
	Code string `json:"code"`
	Vars string `json:"vars"`
}

// firmwareCandidates are the OVMF builds of Debian's ovmf package, preferred first.
var firmwareCandidates = []Firmware{
	{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
	{"/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"},
	{"/usr/share/qemu/OVMF_CODE.fd", "/usr/share/qemu/OVMF_VARS.fd"},
}

// FindFirmware returns the first installed OVMF code/vars pair.
func FindFirmware() (Firmware, error) {
	for _, fw := range firmwareCandidates {
		if fileExists(fw.Code) && fileExists(fw.Vars) {
			return fw, nil
		}
	}
	return Firmware{}, errors.New("no OVMF firmware found (looked in /usr/share/OVMF): install the ovmf package (make deps)")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Machine is a running VM. Stop (or cancelling the context given to StartMachine) kills QEMU
// with its process group and removes the overlay and the firmware variables copy.
type Machine struct {
	cfg     MachineConfig
	Overlay string
	Vars    string
	// SerialLog is the current boot's console; SerialLogs are every boot's, in order (a
	// restart writes a new one).
	SerialLog  string
	SerialLogs []string
	SSHAddr    string // 127.0.0.1:port
	Args       []string

	cancel   context.CancelFunc
	done     chan struct{}
	waitErr  error
	stderr   *syncBuffer
	stopOnce sync.Once
	started  time.Time
}

// tcgKernelCmdlineExtra is the SMBIOS type 11 string that gives an emulated guest the HPET as
// its clocksource (QEMUArgs).
const tcgKernelCmdlineExtra = "io.systemd.boot.kernel-cmdline-extra=clocksource=hpet"

// QEMUArgs builds the emulator's command line for cfg with the given overlay, variables copy
// and serial log. It is a pure function so that its safety rules can be tested: user-mode
// networking with restrict=on and port forwards bound to 127.0.0.1 only.
func QEMUArgs(cfg MachineConfig, overlay, vars, serialLog string) []string {
	cpus, mem := cfg.CPUs, cfg.MemoryMiB
	if cpus == 0 {
		cpus = 2
	}
	if mem == 0 {
		mem = 2048
	}
	accel := cfg.Accel
	if accel == "" || accel == AccelAuto {
		accel = AccelTCG
	}
	args := []string{
		"-name", "kubebake-verify-" + cfg.Name,
		"-machine", "q35",
		"-accel", accel,
	}
	if accel == AccelKVM {
		args = append(args, "-cpu", "host")
	}
	if accel == AccelTCG {
		// Emulated, a guest that trusts the TSC as its clocksource (Debian 13's kernel does;
		// Debian 12's finds it unsynchronized and takes the HPET) runs so slowly that a master's
		// API server times out its own TLS handshakes and never settles. A systemd-boot that
		// reads SMBIOS type 11 strings (systemd 256 and later) adds this to the kernel command
		// line of the image's entry; the image itself is not changed, and an older systemd-boot
		// ignores it. docs/cluster.md, "Under emulation", has the measurements.
		args = append(args, "-smbios", "type=11,value="+tcgKernelCmdlineExtra)
	}
	args = append(args,
		"-smp", strconv.Itoa(cpus),
		"-m", strconv.Itoa(mem),
		"-nodefaults",
		"-display", "none",
		"-no-reboot",
		"-rtc", "base=utc",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+cfg.Firmware.Code,
		"-drive", "if=pflash,format=raw,unit=1,file="+vars,
		// The system disk boots first; NICs carry no PXE option ROM (no network boot detour).
		"-drive", "if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap,file="+overlay,
		"-device", "virtio-blk-pci,drive=disk0,bootindex=0",
		"-object", "rng-random,id=rng0,filename=/dev/urandom",
		"-device", "virtio-rng-pci,rng=rng0",
		// User-mode network, restricted: the guest reaches nothing outside; the only ways in
		// are the forwards (SSH first), all bound to 127.0.0.1.
		"-netdev", userNetdev(cfg),
		"-device", "virtio-net-pci,netdev=net0,romfile=",
		"-serial", "file:"+serialLog,
	)
	nics := make([]NIC, 0, len(cfg.ExtraNetdevs)+len(cfg.NICs))
	for _, nd := range cfg.ExtraNetdevs {
		nics = append(nics, NIC{Netdev: nd})
	}
	nics = append(nics, cfg.NICs...)
	for i, nic := range nics {
		nd, id := nic.Netdev, fmt.Sprintf("net%d", i+1)
		if netdevID(nd) == "" {
			typ, rest, _ := strings.Cut(nd, ",")
			nd = typ + ",id=" + id
			if rest != "" {
				nd += "," + rest
			}
		} else {
			id = netdevID(nd)
		}
		mac := fmt.Sprintf("52:54:00:12:35:%02x", 0x10+i)
		if len(nic.MAC) == 6 {
			mac = nic.MAC.String()
		}
		args = append(args, "-netdev", nd, "-device", fmt.Sprintf("virtio-net-pci,netdev=%s,romfile=,mac=%s", id, mac))
	}
	if cfg.SeedISO != "" {
		args = append(args, "-drive", "if=virtio,format=raw,readonly=on,file="+cfg.SeedISO)
	}
	if cfg.IgnitionConfig != "" {
		args = append(args, "-fw_cfg", "name=opt/com.coreos/config,file="+cfg.IgnitionConfig)
	}
	return args
}

// userNetdev is the user-mode NIC: restricted, with SSH and every other forward on 127.0.0.1.
func userNetdev(cfg MachineConfig) string {
	nd := fmt.Sprintf("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", cfg.SSHPort)
	for _, f := range cfg.Forwards {
		nd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", f.HostPort, f.GuestPort)
	}
	return nd
}

func netdevID(nd string) string {
	return netdevOptions(nd)["id"]
}

// netdevOptions splits a -netdev value into its type ("" key) and key=value options. QEMU
// escapes a comma inside a value by doubling it.
func netdevOptions(nd string) map[string]string {
	const comma = "\x00"
	parts := strings.Split(strings.ReplaceAll(nd, ",,", comma), ",")
	kv := map[string]string{"": parts[0]}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		kv[k] = strings.ReplaceAll(v, comma, ",")
	}
	return kv
}

// CheckNetworkIsolated refuses a QEMU command line whose network could reach beyond the host:
// user-mode NICs must be restricted with forwards bound to 127.0.0.1 (and no guestfwd);
// socket, stream and dgram NICs must use unix sockets or loopback addresses; any other
// backend (tap, bridge, vde, ...) is refused. StartMachine runs it on every command line.
func CheckNetworkIsolated(args []string) error {
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-netdev" && args[i] != "-nic" {
			continue
		}
		if err := checkNetdev(args[i+1]); err != nil {
			return fmt.Errorf("network %q: %w: kubebake VMs only get restricted user-mode networking and loopback or unix-socket links", args[i+1], err)
		}
	}
	return nil
}

func checkNetdev(nd string) error {
	kv := netdevOptions(nd)
	loopback := func(host string) bool {
		ip := net.ParseIP(host)
		return ip != nil && ip.IsLoopback()
	}
	switch kv[""] {
	case "user":
		if r := kv["restrict"]; r != "on" && r != "yes" && r != "true" {
			return errors.New("user-mode network without restrict=on")
		}
		for _, p := range strings.Split(strings.ReplaceAll(nd, ",,", ""), ",") {
			if strings.HasPrefix(p, "guestfwd=") {
				return errors.New("guestfwd lets the guest reach the host")
			}
			if fwd, ok := strings.CutPrefix(p, "hostfwd="); ok {
				// [tcp|udp]:hostaddr:hostport-guestaddr:guestport
				f := strings.SplitN(fwd, ":", 3)
				if len(f) < 3 || !loopback(f[1]) {
					return fmt.Errorf("forward %q not bound to 127.0.0.1", fwd)
				}
			}
		}
		return nil
	case "socket":
		for _, k := range []string{"udp", "mcast", "localaddr", "fd"} {
			if _, ok := kv[k]; ok {
				return fmt.Errorf("socket %s= is not allowed", k)
			}
		}
		addr := kv["listen"] + kv["connect"]
		host, _, err := net.SplitHostPort(addr)
		if err != nil || !loopback(host) {
			return fmt.Errorf("socket address %q is not on loopback", addr)
		}
		return nil
	case "stream", "dgram":
		typed := false
		for k, v := range kv {
			prefix, ok := strings.CutSuffix(k, ".type")
			if !ok {
				continue
			}
			typed = true
			switch v {
			case "unix":
			case "inet":
				if !loopback(kv[prefix+".host"]) {
					return fmt.Errorf("%s.host %q is not on loopback", prefix, kv[prefix+".host"])
				}
			default:
				return fmt.Errorf("%s address type %q is not allowed", k, v)
			}
		}
		if !typed {
			return errors.New("no address type (addr.type=unix)")
		}
		return nil
	}
	return fmt.Errorf("netdev type %q is not allowed", kv[""])
}

// ImageFormat returns the format qemu-img detects for an image (raw, qcow2, vpc, vmdk).
func ImageFormat(ctx context.Context, image string) (string, error) {
	out, err := run.Command("qemu-img", "info", "--output", "json", image).Output(ctx)
	if err != nil {
		return "", fmt.Errorf("reading image %s: %w", image, err)
	}
	var info struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Format == "" {
		return "", fmt.Errorf("qemu-img info %s: unexpected output: %s", image, out)
	}
	return info.Format, nil
}

// StartMachine creates the overlay and the variables copy and starts QEMU in the background.
// The VM lives until Stop is called or ctx is cancelled.
func StartMachine(ctx context.Context, cfg MachineConfig) (*Machine, error) {
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.Firmware.Code == "" {
		fw, err := FindFirmware()
		if err != nil {
			return nil, err
		}
		cfg.Firmware = fw
	}
	img, err := filepath.Abs(cfg.Image)
	if err != nil {
		return nil, err
	}
	cfg.Image = img
	if _, err := os.Stat(img); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if cfg.ImageFormat == "" {
		if cfg.ImageFormat, err = ImageFormat(ctx, img); err != nil {
			return nil, err
		}
	}
	// Serial logs (which may show the user-data's secrets) are written here.
	if err := os.MkdirAll(cfg.WorkDir, artifactDirMode); err != nil {
		return nil, err
	}
	m := &Machine{
		cfg:       cfg,
		Overlay:   filepath.Join(cfg.WorkDir, cfg.Name+"-overlay.qcow2"),
		Vars:      filepath.Join(cfg.WorkDir, cfg.Name+"-vars.fd"),
		SerialLog: filepath.Join(cfg.WorkDir, cfg.Name+"-serial.log"),
		done:      make(chan struct{}),
	}
	ok := false
	defer func() {
		if !ok {
			m.removeFiles()
		}
	}()
	if err := run.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", cfg.ImageFormat, "-b", img, m.Overlay).Run(ctx); err != nil {
		return nil, fmt.Errorf("creating overlay for %s: %w", img, err)
	}
	if err := copyFile(cfg.Firmware.Vars, m.Vars); err != nil {
		return nil, fmt.Errorf("copying firmware variables: %w", err)
	}
	os.Remove(m.SerialLog)

	m.SerialLogs = []string{m.SerialLog}

	// A forward whose port was taken between picking and binding fails at once: retry.
	for attempt := 0; ; attempt++ {
		c, picked, err := pickPorts(cfg)
		if err != nil {
			return nil, err
		}
		err = m.launch(ctx, c)
		if err == nil {
			ok = true
			return m, nil
		}
		if !picked || attempt >= 3 || !strings.Contains(err.Error(), "forward") {
			return nil, err
		}
	}
}

// pickPorts gives the SSH forward and every other forward without a host port a free one;
// picked says whether any was chosen here (and may be chosen again after a clash).
func pickPorts(cfg MachineConfig) (MachineConfig, bool, error) {
	picked := false
	var err error
	if cfg.SSHPort == 0 {
		if cfg.SSHPort, err = FreePort(); err != nil {
			return cfg, false, err
		}
		picked = true
	}
	fwds := slices.Clone(cfg.Forwards)
	for i := range fwds {
		if fwds[i].HostPort == 0 {
			if fwds[i].HostPort, err = FreePort(); err != nil {
				return cfg, false, err
			}
			picked = true
		}
	}
	cfg.Forwards = fwds
	return cfg, picked, nil
}

// HostAddr is the 127.0.0.1:port that reaches guestPort through a forward, or "".
func (m *Machine) HostAddr(guestPort int) string {
	if guestPort == 22 {
		return m.SSHAddr
	}
	for _, f := range m.cfg.Forwards {
		if f.GuestPort == guestPort {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(f.HostPort))
		}
	}
	return ""
}

// Restart starts QEMU again after the guest powered itself off, on the same overlay and
// firmware variables, with the same seed or Ignition config, ports and MACs: the same machine
// booting again. (QEMU runs with -no-reboot, so a guest reboot ends it as a poweroff does.)
// Each boot gets its own serial log.
func (m *Machine) Restart(ctx context.Context) error {
	if exited, _ := m.Exited(); !exited {
		return fmt.Errorf("VM %s still runs: power the guest off and wait for QEMU to exit first", m.cfg.Name)
	}
	m.SerialLog = filepath.Join(m.cfg.WorkDir, fmt.Sprintf("%s-serial-boot%d.log", m.cfg.Name, len(m.SerialLogs)+1))
	os.Remove(m.SerialLog)
	m.SerialLogs = append(m.SerialLogs, m.SerialLog)
	return m.launch(ctx, m.cfg)
}

// launch starts QEMU and waits briefly to catch immediate failures (bad arguments, busy port).
func (m *Machine) launch(ctx context.Context, cfg MachineConfig) error {
	args := QEMUArgs(cfg, m.Overlay, m.Vars, m.SerialLog)
	if err := CheckNetworkIsolated(args); err != nil {
		return err
	}
	m.Args = args
	m.cfg = cfg
	m.SSHAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.SSHPort))
	qctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	m.done = make(chan struct{})
	m.stderr = &syncBuffer{}
	m.started = time.Now()
	cmd := &run.Cmd{Name: cfg.QEMU, Args: m.Args, Stderr: m.stderr}
	if cfg.Nice > 0 {
		// nice execs QEMU in its own process: signals and the exit status are QEMU's.
		cmd.Name, cmd.Args = "nice", append([]string{"-n", strconv.Itoa(cfg.Nice), cfg.QEMU}, m.Args...)
	}
	slog.Info("starting VM", "name", cfg.Name, "accel", cfg.Accel, "ssh", m.SSHAddr, "serial", m.SerialLog)
	go func() {
		m.waitErr = cmd.Run(qctx)
		close(m.done)
	}()
	select {
	case <-m.done:
		cancel()
		return fmt.Errorf("QEMU exited at start: %w", m.waitErr)
	case <-time.After(500 * time.Millisecond):
		return nil
	}
}

// Done is closed when QEMU has exited.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Exited reports whether QEMU has exited, and how.
func (m *Machine) Exited() (bool, error) {
	select {
	case <-m.done:
		return true, m.waitErr
	default:
		return false, nil
	}
}

// Stderr is what QEMU printed on standard error so far.
func (m *Machine) Stderr() string { return m.stderr.String() }

// Uptime is the time since QEMU started.
func (m *Machine) Uptime() time.Duration { return time.Since(m.started) }

// Config is the configuration the machine runs with (ports and firmware resolved).
func (m *Machine) Config() MachineConfig { return m.cfg }

// Stop kills QEMU with its process group, waits for it and removes the overlay and the
// variables copy. The serial log is kept. It is safe to call more than once.
func (m *Machine) Stop() {
	m.stopOnce.Do(func() {
		if m.cancel != nil {
			m.cancel()
			<-m.done
		}
		m.removeFiles()
		slog.Debug("VM stopped", "name", m.cfg.Name)
	})
}

func (m *Machine) removeFiles() {
	os.Remove(m.Overlay)
	os.Remove(m.Vars)
}

// SerialTail returns the last n lines of the serial console, without terminal escapes.
func (m *Machine) SerialTail(n int) string { return tailLines(m.SerialLog, n) }

// SerialFailures returns up to n distinct "[FAILED] ..." lines of the serial console: the
// units systemd reported failing, the usual reason a boot never gets to SSH.
func (m *Machine) SerialFailures(n int) []string {
	b, err := os.ReadFile(m.SerialLog)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, l := range strings.Split(stripANSI(string(b)), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[FAILED]") && !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// SerialHas reports whether the serial console printed s.
func (m *Machine) SerialHas(s string) bool {
	b, err := os.ReadFile(m.SerialLog)
	return err == nil && strings.Contains(stripANSI(string(b)), s)
}

func tailLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(stripANSI(string(b)), "\n"), "\n")
	var keep []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			keep = append(keep, l)
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, "\n")
}

// stripANSI removes terminal escape sequences and carriage returns from console output.
func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0x1b {
			// ESC [ ... final byte in 0x40-0x7e; other ESC sequences: skip one byte.
			if i+1 < len(s) && s[i+1] == '[' {
				j := i + 2
				for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
					j++
				}
				i = j
				continue
			}
			i++
			continue
		}
		if c == '\r' {
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// syncBuffer is a bytes buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	if len(s.b) > 64<<10 {
		s.b = append([]byte(nil), s.b[len(s.b)-32<<10:]...)
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}
