package cloudinit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/run"
)

func TestSeedISOReadableByRealTools(t *testing.T) {
	b := testBundle(t)
	dir := t.TempDir()
	iso := filepath.Join(dir, "seed.iso")
	if err := Seed(iso, b, RoleMaster, SeedOptions{Options: Options{SSHAuthorizedKeys: []string{testSSHKey}}}); err != nil {
		t.Fatal(err)
	}
	ud, _ := RenderCloudConfig(b, RoleMaster, Options{SSHAuthorizedKeys: []string{testSSHKey}})
	md := MetaData(DefaultInstanceID(ud), "demo-master")

	st, err := os.Stat(iso)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("seed mode %04o, want 0600", st.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("leftovers beside the seed: %v", entries)
	}

	// go-diskfs reads it back.
	label, files, err := ReadSeedISO(iso)
	if err != nil {
		t.Fatal(err)
	}
	if label != SeedLabel {
		t.Errorf("label %q", label)
	}
	if !bytes.Equal(files[SeedUserData], ud) || !bytes.Equal(files[SeedMetaData], md) || len(files) != 2 {
		t.Errorf("files read back differ: %v", keys(files))
	}
	if !strings.Contains(string(md), "instance-id: iid-kubebake-") || !strings.Contains(string(md), "local-hostname: demo-master\n") {
		t.Errorf("meta-data %q", md)
	}

	ctx := context.Background()
	xorriso := needTool(t, "xorriso")
	// The names cloud-init looks for, with their dashes, in the Rock Ridge view (what Linux's
	// iso9660 driver shows by default) and in the Joliet view.
	for _, view := range [][]string{nil, {"-rockridge", "off"}} {
		args := append(append([]string{}, view...), "-indev", iso, "-ls", "/")
		out, err := run.Command(xorriso, args...).Output(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "'user-data'") || !strings.Contains(string(out), "'meta-data'") {
			t.Errorf("xorriso %v -ls / shows:\n%s", view, out)
		}
	}
	var stderr bytes.Buffer
	c := run.Command(xorriso, "-indev", iso, "-pvd_info")
	c.Stderr = &stderr
	out, err := c.Output(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out)+stderr.String(), "Volume Id    : cidata") {
		t.Errorf("xorriso -pvd_info:\n%s%s", out, stderr.String())
	}
	for name, want := range map[string][]byte{SeedUserData: ud, SeedMetaData: md} {
		got := filepath.Join(t.TempDir(), name)
		if err := run.Command(xorriso, "-osirrox", "on", "-indev", iso, "-extract", "/"+name, got).Run(ctx); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(got); !bytes.Equal(data, want) {
			t.Errorf("xorriso extracted %s differs", name)
		}
	}
	blkid := needTool(t, "blkid")
	out, err = run.Command(blkid, "-p", "-o", "export", iso).Output(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "LABEL=cidata\n") || !strings.Contains(string(out), "TYPE=iso9660\n") {
		t.Errorf("blkid:\n%s", out)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestSeedRefusals(t *testing.T) {
	b := testBundle(t)
	dir := t.TempDir()
	iso := filepath.Join(dir, "seed.iso")
	err := Seed(iso, b, RoleMaster, SeedOptions{Format: FormatIgnition})
	if err == nil || !strings.Contains(err.Error(), "-fw_cfg name=opt/com.coreos/config") {
		t.Errorf("ignition seed: %v", err)
	}
	if err := Seed(iso, b, "worker", SeedOptions{}); err == nil || !strings.Contains(err.Error(), "unknown role") {
		t.Errorf("unknown role: %v", err)
	}
	if err := Seed(iso, b, RoleMinion, SeedOptions{Options: Options{Hostname: "bad host"}}); err == nil {
		t.Error("bad hostname accepted")
	}
	if err := WriteSeedISOFiles(iso, map[string][]byte{SeedUserData: nil, SeedMetaData: nil, "extra": nil}); err == nil {
		t.Error("extra file accepted")
	}
	if err := WriteSeedISOFiles(iso, map[string][]byte{SeedUserData: nil}); err == nil {
		t.Error("seed without meta-data accepted")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a failed seed left files: %v", entries)
	}
	// shell user-data works too, and network-config rides along when given.
	if err := Seed(iso, b, RoleMinion, SeedOptions{Format: FormatShell, Options: Options{Hostname: "m1"}, InstanceID: "i-1"}); err != nil {
		t.Fatal(err)
	}
	_, files, err := ReadSeedISO(iso)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(files[SeedUserData], []byte("#!/bin/sh\n")) || string(files[SeedMetaData]) != "instance-id: i-1\nlocal-hostname: m1\n" {
		t.Errorf("shell seed: %q", files[SeedMetaData])
	}
	nc := []byte("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")
	if err := WriteSeedISOFiles(iso, map[string][]byte{SeedUserData: []byte("#cloud-config\n{}\n"), SeedMetaData: MetaData("i", "h"), SeedNetworkConfig: nc}); err != nil {
		t.Fatal(err)
	}
	if _, files, _ = ReadSeedISO(iso); !bytes.Equal(files[SeedNetworkConfig], nc) {
		t.Error("network-config lost")
	}
}
