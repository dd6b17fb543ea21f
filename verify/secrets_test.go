package verify

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/cloudinit"
)

func assertPerm(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s: mode %04o, want %04o", path, st.Mode().Perm(), want)
	}
}

func TestPrivateDir(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "a", "b")
	if err := privateDir(fresh); err != nil {
		t.Fatal(err)
	}
	assertPerm(t, fresh, 0o700)
	old := filepath.Join(dir, "old")
	os.Mkdir(old, 0o755)
	os.Chmod(old, 0o755)
	if err := privateDir(old); err != nil {
		t.Fatal(err)
	}
	assertPerm(t, old, 0o700)
	// A shared sticky folder (like /tmp) is left as it is.
	shared := filepath.Join(dir, "shared")
	os.Mkdir(shared, 0o755)
	os.Chmod(shared, 0o777|os.ModeSticky)
	if err := privateDir(shared); err != nil {
		t.Fatal(err)
	}
	assertPerm(t, shared, 0o777)
}

// bundleLeaks lists the pieces of b's secrets that s shows.
func bundleLeaks(b *cloudinit.Bundle, s string) []string {
	var out []string
	_, secret, _ := strings.Cut(b.BootstrapToken, ".")
	for _, sec := range []string{b.BootstrapToken, secret} {
		if strings.Contains(s, sec) {
			out = append(out, "token")
		}
	}
	for _, l := range strings.Split(b.CAKey, "\n") {
		if l = strings.TrimSpace(l); len(l) >= 16 && !strings.HasPrefix(l, "-----") && strings.Contains(s, l) {
			out = append(out, "CA key line "+l[:8]+"...")
		}
	}
	return out
}

// A failed node's saved serial logs have the bundle's token and CA key (and any private key)
// hidden; they are 0600 in a 0700 folder made private if it was not; --keep's SSH key too.
func TestSavedArtifactsHideBundleSecrets(t *testing.T) {
	b, err := cloudinit.NewBundle("kb", cloudinit.BundleOptions{KeyType: cloudinit.KeyECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	arts := filepath.Join(dir, "artifacts")
	os.MkdirAll(arts, 0o755)
	os.Chmod(arts, 0o755)
	_, secret, _ := strings.Cut(b.BootstrapToken, ".")
	keyLines := strings.Split(strings.TrimSpace(b.CAKey), "\n")
	serial := "[  OK  ] Started cloud-init.\n" +
		"cloud-init[900]: + kubeadm join 10.0.2.15:6443 --token " + b.BootstrapToken + " --discovery-token-ca-cert-hash " + b.CACertHash + "\n" +
		"cloud-init[900]: token secret alone: " + secret + "\n" +
		"cloud-init[900]: write_files: caKey: " + strings.ReplaceAll(b.CAKey, "\n", `\n`) + "\n" +
		b.CAKey + "\n" +
		"a line of it: " + keyLines[1] + "\n" +
		"another key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n" +
		"login: "
	if len(bundleLeaks(b, serial)) == 0 {
		t.Fatal("the stand-in serial log holds no secret")
	}
	logs := []string{filepath.Join(dir, "serial-1.log"), filepath.Join(dir, "serial-2.log")}
	for _, p := range logs {
		os.WriteFile(p, []byte(serial), 0o644)
	}
	key, err := NewKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{opts: Options{ArtifactsDir: arts, Bundle: b}, role: RoleMaster, userData: UserDataCloudInit, key: key,
		machine: &Machine{SerialLogs: logs, SerialLog: logs[1]}}
	n.saveArtifacts(context.Background(), nil)
	assertPerm(t, arts, 0o700)
	if len(n.res.Artifacts) != 2 {
		t.Fatalf("artifacts %v", n.res.Artifacts)
	}
	for _, p := range n.res.Artifacts {
		assertPerm(t, p, 0o600)
		data, _ := os.ReadFile(p)
		s := string(data)
		if l := bundleLeaks(b, s); len(l) > 0 {
			t.Errorf("%s shows %v:\n%s", p, l, s)
		}
		if strings.Contains(s, "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE") {
			t.Errorf("%s shows a private key", p)
		}
		for _, keep := range []string{"[  OK  ] Started cloud-init.", "--discovery-token-ca-cert-hash " + b.CACertHash, "login: "} {
			if !strings.Contains(s, keep) {
				t.Errorf("%s lost %q", p, keep)
			}
		}
	}

	os.Chmod(arts, 0o755)
	keyFile := n.writeKey()
	assertPerm(t, arts, 0o700)
	assertPerm(t, keyFile, 0o600)
	if data, _ := os.ReadFile(keyFile); !strings.Contains(string(data), "PRIVATE KEY") {
		t.Error("--keep's key file is not the private key (it must not be redacted)")
	}
}

// The report's checks have the bundle's secrets hidden.
func TestReportHidesBundleSecrets(t *testing.T) {
	b, err := cloudinit.NewBundle("kb", cloudinit.BundleOptions{KeyType: cloudinit.KeyECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{Results: []Result{{Checks: []Check{
		{Name: "cluster/join", Expected: "joins", Got: "kubeadm join --token " + b.BootstrapToken + " failed"},
		{Name: "x", Expected: "y", Got: "fine"},
	}}}}
	rep.redactSecrets(b.Redactor())
	if got := rep.Results[0].Checks[0].Got; len(bundleLeaks(b, got)) > 0 || got != "kubeadm join --token *** failed" {
		t.Errorf("got %q", got)
	}
	if rep.Results[0].Checks[1].Got != "fine" {
		t.Error("a check without secrets changed")
	}
	var nilBundle *cloudinit.Bundle
	rep.redactSecrets(nilBundle.Redactor()) // no bundle: no panic
}

// The cluster's saved state (kubectl's view) has the bundle's secrets hidden too.
func TestClusterStateHidesBundleSecrets(t *testing.T) {
	b, err := cloudinit.NewBundle("kb", cloudinit.BundleOptions{KeyType: cloudinit.KeyECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	arts := filepath.Join(dir, "artifacts")
	kubectl := filepath.Join(dir, "kubectl")
	os.WriteFile(kubectl, []byte("#!/bin/sh\necho \"bootstrap-token "+b.BootstrapToken+"\"\n"), 0o755)
	c := &cluster{opts: ClusterOptions{Name: "kb"}, kubectl: &kubectlClient{bin: kubectl, kubeconfig: filepath.Join(dir, "kc")}}
	n := &node{opts: Options{ArtifactsDir: arts, Bundle: b}, hostname: "kb-master", role: RoleMaster}
	c.nodes = []*node{n}
	rep := &Report{Results: []Result{{Node: "kb-master"}, {Role: RoleCluster, Node: RoleCluster}}}
	c.saveArtifacts(context.Background(), rep)
	arts2 := rep.Results[1].Artifacts
	if len(arts2) != 1 {
		t.Fatalf("cluster artifacts %v", arts2)
	}
	data, _ := os.ReadFile(arts2[0])
	if len(bundleLeaks(b, string(data))) > 0 || !strings.Contains(string(data), "bootstrap-token ***") {
		t.Errorf("%s:\n%s", arts2[0], data)
	}
	assertPerm(t, arts2[0], 0o600)
	assertPerm(t, arts, 0o700)
}
