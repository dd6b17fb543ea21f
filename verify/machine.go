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
	// "socket,id=cluster,listen=127.0.0.1:40000"; a virtio-net device is attached to each.
	ExtraNetdevs []string
	// Firmware is the UEFI firmware; zero means FindFirmware().
	Firmware Firmware
	// QEMU is the emulator binary (default qemu-system-x86_64).
	QEMU string
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
	cfg       MachineConfig
	Overlay   string
	Vars      string
	SerialLog string
	SSHAddr   string // 127.0.0.1:port
	Args      []string

	cancel   context.CancelFunc
	done     chan struct{}
	waitErr  error
	stderr   *syncBuffer
	stopOnce sync.Once
	started  time.Time
}

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
		// User-mode network, restricted: the guest reaches nothing outside; the only way in is
		// the SSH forward bound to 127.0.0.1.
		"-netdev", fmt.Sprintf("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", cfg.SSHPort),
		"-device", "virtio-net-pci,netdev=net0,romfile=",
		"-serial", "file:"+serialLog,
	)
	for i, nd := range cfg.ExtraNetdevs {
		id := fmt.Sprintf("net%d", i+1)
		if !strings.Contains(nd, "id=") {
			typ, rest, _ := strings.Cut(nd, ",")
			nd = typ + ",id=" + id
			if rest != "" {
				nd += "," + rest
			}
		} else {
			id = netdevID(nd)
		}
		args = append(args, "-netdev", nd, "-device", fmt.Sprintf("virtio-net-pci,netdev=%s,romfile=,mac=52:54:00:12:35:%02x", id, 0x10+i))
	}
	if cfg.SeedISO != "" {
		args = append(args, "-drive", "if=virtio,format=raw,readonly=on,file="+cfg.SeedISO)
	}
	if cfg.IgnitionConfig != "" {
		args = append(args, "-fw_cfg", "name=opt/com.coreos/config,file="+cfg.IgnitionConfig)
	}
	return args
}

func netdevID(nd string) string {
	for _, kv := range strings.Split(nd, ",") {
		if v, ok := strings.CutPrefix(kv, "id="); ok {
			return v
		}
	}
	return ""
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
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
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

	// A forward whose port was taken between picking and binding fails at once: retry.
	for attempt := 0; ; attempt++ {
		port := cfg.SSHPort
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		c := cfg
		c.SSHPort = port
		err := m.launch(ctx, c)
		if err == nil {
			ok = true
			return m, nil
		}
		if cfg.SSHPort != 0 || attempt >= 3 || !strings.Contains(err.Error(), "forward") {
			return nil, err
		}
	}
}

// launch starts QEMU and waits briefly to catch immediate failures (bad arguments, busy port).
func (m *Machine) launch(ctx context.Context, cfg MachineConfig) error {
	m.Args = QEMUArgs(cfg, m.Overlay, m.Vars, m.SerialLog)
	m.SSHAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.SSHPort))
	qctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	m.done = make(chan struct{})
	m.stderr = &syncBuffer{}
	m.started = time.Now()
	cmd := &run.Cmd{Name: cfg.QEMU, Args: m.Args, Stderr: m.stderr}
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
