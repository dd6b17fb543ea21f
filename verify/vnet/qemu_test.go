package vnet

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
)

// qemuGuard bounds waits on a QEMU guest under TCG on a busy machine (a hang guard only).
const qemuGuard = 5 * time.Minute

// qemu runs qemu-system-x86_64 with args until the returned stop function is called (or the
// test ends) and returns its stderr so far on demand.
func qemu(t *testing.T, args ...string) (stop func() error, stderr func() string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU: skipped with -short")
	}
	testenv.NeedTool(t, "qemu-system-x86_64")
	ctx, cancel := context.WithCancel(context.Background())
	var buf syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- (&run.Cmd{Name: "qemu-system-x86_64", Args: args, Stderr: &buf}).Run(ctx)
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop, buf.String
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func waitQEMU(t *testing.T, what string, stderr func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(qemuGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s; QEMU stderr:\n%s", what, stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A paused VM (-S) whose NIC uses s.Netdev: QEMU's stream netdev connects to the switch when
// the VM is created, and the port goes away with QEMU.
func TestQEMUConnects(t *testing.T) {
	s, _ := startSwitch(t)
	mac := MAC("qemu-connect", 0)
	stop, stderr := qemu(t, "-machine", "q35", "-nodefaults", "-display", "none", "-accel", "tcg", "-S",
		"-netdev", s.Netdev("c0"), "-device", "virtio-net-pci,netdev=c0,mac="+mac.String())
	waitQEMU(t, "QEMU's connection", stderr, func() bool { return s.Stats().Ports == 1 })
	start := time.Now()
	stop()
	waitQEMU(t, "the port to go away", stderr, func() bool { return s.Stats().Ports == 0 })
	t.Logf("port removed %v after QEMU was killed", time.Since(start).Round(time.Millisecond))
}

// Real guests on the switch: SeaBIOS network-boots the virtio NIC's iPXE option ROM (QEMU's
// own, from the ipxe-qemu package), and iPXE configures the NIC by DHCP over the stream
// netdev: DISCOVER, OFFER, REQUEST, ACK, with the switch as the only server. Two VMs share
// the segment, as a master and a minion would, and each gets the address of its MAC.
func TestQEMUGuestsGetTheirLeases(t *testing.T) {
	vms := []Lease{
		{MAC: MAC("qemu-ipxe", 0), IP: netip.MustParseAddr("10.88.0.21"), Hostname: "master"},
		{MAC: MAC("qemu-ipxe", 1), IP: netip.MustParseAddr("10.88.0.22"), Hostname: "minion-1"},
	}
	s, logs := startSwitch(t, vms...)
	start := time.Now()
	var stderrs []func() string
	for _, vm := range vms {
		_, stderr := qemu(t, "-machine", "q35", "-nodefaults", "-display", "none", "-accel", "tcg", "-m", "128",
			"-boot", "order=n",
			"-netdev", s.Netdev("c0"), "-device", "virtio-net-pci,netdev=c0,mac="+vm.MAC.String())
		stderrs = append(stderrs, stderr)
	}
	allStderr := func() string { return stderrs[0]() + stderrs[1]() }
	for _, vm := range vms {
		waitQEMU(t, "a DHCP ACK for "+vm.Hostname, allStderr, func() bool {
			return logs.count("dhcp: ack", "mac="+vm.MAC.String(), "ip="+vm.IP.String(), "hostname="+vm.Hostname) >= 1
		})
	}
	st := s.Stats()
	t.Logf("both guests acked %v after QEMU start; stats %+v", time.Since(start).Round(time.Millisecond), st)
	if st.Offers < 2 || st.Acks < 2 || st.Naks != 0 || st.Ports != 2 {
		t.Errorf("stats %+v: want offers and acks for both, no NAK, two ports", st)
	}
}
