package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/testenv"
)

func TestVerifyCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "x.raw")
	os.WriteFile(image, make([]byte, 1<<20), 0o644)
	empty := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", dir, "--userdata", "yaml", "--role", "all"}, "use cloud-init, ignition, both or ROLE=KIND"},
		{[]string{"verify", filepath.Join(dir, "nothere.qcow2"), "--userdata", "cloud-init", "--role", "all"}, "no such file"},
		{[]string{"verify", empty, "--userdata", "cloud-init", "--role", "all"}, "holds no image"},
		{[]string{"verify", image, "--userdata", "cloud-init", "--role", "all", "--accel", "hvf"}, "use auto, kvm or tcg"},
	} {
		_, _, err := kb(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("kubebake %s: err = %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}

// TestVerifyCommandReports boots a blank disk (nothing to boot: the boot stage must time out)
// and checks what the command leaves: a non-zero exit, JSON on stdout, a JUnit file naming the
// stage, the serial log saved.
func TestVerifyCommandReports(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	testenv.NeedTools(t, "qemu-system-x86_64", "qemu-img")
	dir := t.TempDir()
	image := filepath.Join(dir, "blank.raw")
	os.WriteFile(image, make([]byte, 8<<20), 0o644)
	manifest := filepath.Join(dir, "manifest.json")
	os.WriteFile(manifest, []byte(`{"apiVersion": "kubebake.dev/v1alpha1", "kind": "ImageManifest", "files": [{"path": "/usr/bin/kubelet", "type": "file", "artifact": "kubelet", "sha256": "00"}]}`), 0o644)
	junit := filepath.Join(dir, "verify.xml")
	artifacts := filepath.Join(dir, "artifacts")
	out, logs, err := kb(t, "verify", image, "--manifest", manifest, "--role", "minion", "--userdata", "cloud-init",
		"--accel", "tcg", "--timeout-boot", "15s", "--junit", junit, "--artifacts", artifacts, "-o", "json")
	t.Cleanup(func() { kb(t, "version", "-o", "text") }) // reset the persistent -o flag
	if err == nil || !strings.Contains(err.Error(), "verify failed: 1 checks failed") || !strings.Contains(err.Error(), artifacts) {
		t.Fatalf("err = %v\n%s", err, logs)
	}
	var rep struct {
		Pass    bool `json:"pass"`
		Results []struct {
			Checks []struct {
				Name string `json:"name"`
				Got  string `json:"got"`
			} `json:"checks"`
			Artifacts []string `json:"artifacts"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, out)
	}
	if rep.Pass || len(rep.Results) != 1 || rep.Results[0].Checks[0].Name != "stage/boot" || len(rep.Results[0].Artifacts) == 0 {
		t.Errorf("report: %+v", rep)
	}
	data, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(junit); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("junit report mode: %v %v (it quotes journal lines: 0600 like every verify artifact)", st, err)
	}
	var suites struct {
		Failures int `xml:"failures,attr"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil || suites.Failures != 1 || !strings.Contains(string(data), `name="stage/boot"`) {
		t.Errorf("junit (%v):\n%s", err, data)
	}
	if !strings.Contains(logs, "verify: minion/cloud-init: boot") {
		t.Errorf("no stage progress on stderr:\n%s", logs)
	}
}

// resetVerifyFlags puts the verify command's flags back to their defaults after a test: the
// command tree (and its flag values) lives as long as the test binary.
func resetVerifyFlags(t *testing.T) {
	t.Cleanup(func() {
		c, _, err := rootCmd.Find([]string{"verify"})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"role", "userdata", "junit", "accel", "manifest", "bundle", "artifacts", "keep",
			"parallel", "timeout-boot", "timeout-ssh", "timeout-checks", "cluster", "minions", "cluster-name", "subnet",
			"kubectl", "step-timeout"} {
			f := c.Flags().Lookup(name)
			f.Value.Set(f.DefValue)
			f.Changed = false
		}
	})
}

// TestVerifyClusterFlags: --cluster refuses what does not apply to it and bad cluster
// settings before anything boots; cluster flags without --cluster are refused.
func TestVerifyClusterFlags(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "x.raw")
	os.WriteFile(image, make([]byte, 1<<20), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", "--cluster", image, "--role", "master"}, "--role does not apply to --cluster"},
		{[]string{"verify", "--cluster", image, "--parallel", "2"}, "--parallel does not apply to --cluster"},
		{[]string{"verify", "--cluster", image, "--minions", "0"}, "at least one minion"},
		{[]string{"verify", "--cluster", image, "--subnet", "10.88.0.0"}, `--subnet "10.88.0.0"`},
		{[]string{"verify", "--cluster", image, "--step-timeout", "nodes=soon"}, "--step-timeout nodes=soon"},
		{[]string{"verify", "--cluster", image, "--step-timeout", "nodes=20m,node=1m"}, `step timeout for "node": no such step`},
		{[]string{"verify", "--cluster", image, "--cluster-name", "Bad_Name"}, `cluster name "Bad_Name"`},
		{[]string{"verify", "--cluster", image, "--userdata", "yaml"}, "use cloud-init, ignition, both or ROLE=KIND"},
		{[]string{"verify", "--cluster", image, "--userdata", "master=ignition"}, "--cluster takes one kind for every node"},
		{[]string{"verify", image, "--minions", "3"}, "--minions is for --cluster"},
		{[]string{"verify", image, "--kubectl", "/usr/bin/kubectl"}, "--kubectl is for --cluster"},
	} {
		t.Run(strings.ReplaceAll(strings.Join(c.args[1:], " "), image, "IMAGE"), func(t *testing.T) {
			resetVerifyFlags(t)
			_, _, err := kb(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("kubebake %s: err = %v, want %q", strings.Join(c.args, " "), err, c.want)
			}
		})
	}
}

func TestParseUserDataFlag(t *testing.T) {
	for _, c := range []struct {
		in, kinds, byRole, err string
	}{
		{in: "cloud-init", kinds: "cloud-init"},
		{in: "both", kinds: "cloud-init ignition"},
		{in: "ignition,cloud-init,ignition", kinds: "ignition cloud-init"},
		{in: "master=ignition", kinds: "cloud-init", byRole: "master=ignition"},
		{in: "ignition, edge=cloud-init,master=ignition", kinds: "ignition", byRole: "edge=cloud-init master=ignition"},
		{in: "master=ignition,master=cloud-init", err: "role master given twice"},
		{in: "master=yaml", err: `"master=yaml" is not ROLE=KIND`},
		{in: "=ignition", err: `"=ignition" is not ROLE=KIND`},
		{in: "yaml", err: `"yaml" is not a kind`},
	} {
		kinds, byRole, err := parseUserDataFlag(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		var pairs []string
		for r, k := range byRole {
			pairs = append(pairs, r+"="+k)
		}
		slices.Sort(pairs)
		if err != nil || strings.Join(kinds, " ") != c.kinds || strings.Join(pairs, " ") != c.byRole {
			t.Errorf("%q: kinds %v, by role %v, err %v; want %q, %q", c.in, kinds, pairs, err, c.kinds, c.byRole)
		}
	}
}
