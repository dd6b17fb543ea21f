package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/internal/run"
)

// KVMProbeTimeout bounds how long the KVM probe waits for the firmware to print anything.
// Real KVM prints within a second; TCG takes ~9 s on this project's machines.
var KVMProbeTimeout = 12 * time.Second

var kvmProbe struct {
	mu      sync.Mutex
	done    bool
	ok      bool
	verdict string
}

// ResolveAccel turns auto into kvm or tcg. kvm and tcg are returned as they are. The verdict
// for auto comes from ProbeKVM and is cached for the life of the process.
func ResolveAccel(ctx context.Context, accel, qemu string, fw Firmware) (string, string, error) {
	switch accel {
	case AccelKVM, AccelTCG:
		return accel, "requested", nil
	case "", AccelAuto:
	default:
		return "", "", fmt.Errorf("--accel %q: use auto, kvm or tcg", accel)
	}
	kvmProbe.mu.Lock()
	defer kvmProbe.mu.Unlock()
	if !kvmProbe.done {
		ok, verdict, err := ProbeKVM(ctx, qemu, fw)
		if err != nil {
			return "", "", err
		}
		kvmProbe.done, kvmProbe.ok, kvmProbe.verdict = true, ok, verdict
		slog.Info("accelerator probe", "kvm", ok, "verdict", verdict)
	}
	if kvmProbe.ok {
		return AccelKVM, kvmProbe.verdict, nil
	}
	return AccelTCG, kvmProbe.verdict, nil
}

// ProbeKVM finds out whether KVM can really run a guest: /dev/kvm existing is not enough (some
// backends cannot run stock firmware or kernels). It boots the UEFI firmware with no disk under
// KVM and waits for it to print on the serial console. Errors are only for a probe that could not
// run at all (no firmware); a failing KVM is a false verdict with its reason.
func ProbeKVM(ctx context.Context, qemu string, fw Firmware) (bool, string, error) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false, "no /dev/kvm", nil
	}
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	if fw.Code == "" {
		var err error
		if fw, err = FindFirmware(); err != nil {
			return false, "", err
		}
	}
	dir, err := os.MkdirTemp("", "kubebake-kvm-probe-")
	if err != nil {
		return false, "", err
	}
	defer os.RemoveAll(dir)
	vars := filepath.Join(dir, "vars.fd")
	if err := copyFile(fw.Vars, vars); err != nil {
		return false, "", err
	}
	serial := filepath.Join(dir, "serial.log")
	pctx, cancel := context.WithTimeout(ctx, KVMProbeTimeout)
	defer cancel()
	stderr := &syncBuffer{}
	cmd := &run.Cmd{Name: qemu, Stderr: stderr, Args: []string{
		"-name", "kubebake-kvm-probe",
		"-machine", "q35", "-accel", "kvm", "-m", "256", "-nodefaults", "-display", "none",
		"-no-reboot", "-net", "none",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + fw.Code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
		"-serial", "file:" + serial,
	}}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- cmd.Run(pctx) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if ctx.Err() != nil {
				return false, "", ctx.Err()
			}
			if fileSize(serial) > 0 {
				return true, fmt.Sprintf("KVM firmware boot printed in %s", time.Since(start).Round(time.Millisecond)), nil
			}
			if errors.Is(err, context.DeadlineExceeded) || pctx.Err() != nil {
				return false, fmt.Sprintf("KVM firmware boot printed nothing in %s", KVMProbeTimeout), nil
			}
			return false, "KVM unusable: " + firstLine(stderr.String(), err), nil
		case <-tick.C:
			if fileSize(serial) > 0 {
				cancel()
				<-done
				return true, fmt.Sprintf("KVM firmware boot printed in %s", time.Since(start).Round(time.Millisecond)), nil
			}
			if s := stderr.String(); strings.Contains(s, "KVM internal error") || strings.Contains(s, "emulation failure") {
				cancel()
				<-done
				return false, "KVM unusable: internal error (emulation failure) in firmware", nil
			}
		}
	}
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

func firstLine(s string, err error) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	if err != nil {
		return err.Error()
	}
	return "unknown"
}
