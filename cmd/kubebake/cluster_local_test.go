package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/verify"
)

// fakeHolder starts a process whose command line names kubebake (a copy of sleep), as a
// cluster's holder would be, and writes cluster name's state file pointing at it.
func fakeHolder(t *testing.T, name string) (*exec.Cmd, string) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "kubebake-fake-holder")
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command(bin, "600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	return holder, writeState(t, name, holder.Process.Pid)
}

func writeState(t *testing.T, name string, pid int) string {
	t.Helper()
	dir, err := verify.ClusterStateDir(name)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "vms"), 0o700)
	st := verify.ClusterState{Name: name, PID: pid, Phase: verify.PhaseReady, Image: "/img/debian-12.raw",
		Nodes: []verify.NodeState{{Name: name + "-master", Role: "master", IP: "10.88.0.10"}}}
	data, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, verify.StateFileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestClusterLocalCommands(t *testing.T) {
	t.Setenv("KUBEBAKE_STATE", t.TempDir())
	t.Cleanup(func() { kb(t, "version", "-o", "text") }) // reset the persistent -o flag

	// Refusals before anything boots.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "up", "img", "--userdata", "yaml"}, "use cloud-init or ignition"},
		{[]string{"cluster", "up", "img", "--minions", "0"}, "needs at least one minion"},
		{[]string{"cluster", "up", "img", "--name", "Bad_Name"}, "--name"},
		{[]string{"cluster", "status", "nothere"}, "no cluster nothere"},
		{[]string{"cluster", "down", "nothere"}, "kubebake cluster up IMAGE --name nothere"},
		{[]string{"cluster", "kubectl", "nothere", "--", "get", "nodes"}, "no cluster nothere"},
	} {
		_, _, err := kb(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("kubebake %s: err = %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}

	// A live holder: up refuses a second cluster of that name; down stops the holder and
	// removes the folder.
	holder, dir := fakeHolder(t, "live")
	if _, _, err := kb(t, "cluster", "up", "img", "--name", "live", "--minions", "2", "--userdata", ""); err == nil || !strings.Contains(err.Error(), "already up") {
		t.Errorf("second up: err = %v, want already up", err)
	}
	exited := make(chan struct{})
	go func() { holder.Wait(); close(exited) }()
	out, _, err := kb(t, "cluster", "down", "live", "--wait", "10s")
	if err != nil || !strings.Contains(out, "cluster live is down") {
		t.Fatalf("down: %v\n%s", err, out)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("down did not stop the holder")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("down left %s: %v", dir, err)
	}

	// A dead holder: status says so (and fails), down cleans up.
	dead := exec.Command("true")
	dead.Run()
	dir = writeState(t, "gone", dead.Process.Pid)
	out, _, err = kb(t, "cluster", "status", "gone")
	if err == nil || !strings.Contains(err.Error(), "not healthy") || !strings.Contains(out, "is gone") || !strings.Contains(out, "gone-master") {
		t.Errorf("status of a dead cluster: err = %v\n%s", err, out)
	}
	out, _, err = kb(t, "cluster", "status", "gone", "-o", "json")
	var res struct {
		Running bool   `json:"running"`
		Problem string `json:"problem"`
		Name    string `json:"name"`
	}
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil || res.Running || res.Name != "gone" || res.Problem == "" {
		t.Errorf("status -o json: %v %+v\n%s", jerr, res, out)
	}
	kb(t, "version", "-o", "text")
	if _, _, err := kb(t, "cluster", "down", "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("down left %s: %v", dir, err)
	}
}

func TestRemoveClusterStateRefusesForeignFolders(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "precious")
	os.WriteFile(keep, []byte("x"), 0o644)
	if err := verify.RemoveClusterState(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("a folder without a state file was touched: %v", err)
	}
}
