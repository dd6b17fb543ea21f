package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/cloudinit"
)

// -o/--output is the result format on every command; no command redefines it, and the one
// flag that names where to write is --out.
func TestOutputFlagHasOneMeaning(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if local := c.LocalNonPersistentFlags(); local.Lookup("output") != nil || local.ShorthandLookup("o") != nil {
			t.Errorf("%s: a local -o/--output shadows the global result format", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(rootCmd)
	for _, path := range [][]string{{"cluster", "init"}, {"userdata"}, {"seed"}, {"build"}} {
		c, _, err := rootCmd.Find(path)
		if err != nil || c.Flags().Lookup("out") == nil {
			t.Errorf("kubebake %s has no --out: %v", strings.Join(path, " "), err)
		}
	}
}

func TestClusterInitOutputJSON(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)

	// --output json is the result format: a JSON report on stdout, the bundle where it
	// belongs by default, and no file named json.
	out, logs, err := kb(t, "cluster", "init", "demo", "--output", "json", "--out", "", "--key-type", "ecdsa-p256", "--force=false")
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	var res clusterInitResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	b, err := cloudinit.LoadBundle("demo.bundle.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := clusterInitResult{Bundle: "demo.bundle.yaml", Cluster: "demo", MasterEndpoint: b.MasterEndpoint, CACertHash: b.CACertHash, Mode: "0600"}
	if res != want {
		t.Errorf("result %+v, want %+v", res, want)
	}
	if strings.Contains(out, b.BootstrapToken) || strings.Contains(out, "PRIVATE KEY") {
		t.Error("the JSON result holds a secret")
	}
	if _, err := os.Stat("json"); !os.IsNotExist(err) {
		t.Errorf("a file named json: %v", err)
	}

	// --out FILE writes the bundle there; -o json reports that path.
	file := filepath.Join(dir, "sub", "prod.bundle.json")
	os.Mkdir(filepath.Dir(file), 0o755)
	out, logs, err = kb(t, "cluster", "init", "prod", "-o", "json", "--out", file, "--key-type", "ecdsa-p256", "--force=false")
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	res = clusterInitResult{}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Bundle != file || res.Cluster != "prod" {
		t.Errorf("result %+v %v", res, err)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("bundle at --out: %v", err)
	}
	if b, err := cloudinit.LoadBundle(file); err != nil || b.ClusterName != "prod" || b.CACertHash != res.CACertHash {
		t.Errorf("bundle at --out: %v", err)
	}
	out, _, err = kb(t, "cluster", "init", "text", "-o", "text", "--out", filepath.Join(dir, "t.yaml"), "--key-type", "ecdsa-p256", "--force=false")
	if err != nil || !strings.HasPrefix(out, "wrote cluster bundle text to "+filepath.Join(dir, "t.yaml")) {
		t.Errorf("text result %q %v", out, err)
	}

	// The old spelling, -o FILE, is refused with the flag that writes files, and writes nothing.
	_, _, err = kb(t, "cluster", "init", "old", "--out", "", "-o", "old.bundle.yaml", "--key-type", "ecdsa-p256", "--force=false")
	if err == nil || !strings.Contains(err.Error(), "use text or json") || !strings.Contains(err.Error(), "--out old.bundle.yaml") {
		t.Errorf("-o FILE: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "demo.bundle.yaml sub t.yaml" {
		t.Errorf("files written: %v", names)
	}
}

func TestUserdataSeedOutputJSON(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	bundle := filepath.Join(dir, "b.yaml")
	if _, _, err := kb(t, "cluster", "init", "demo", "--key-type", "ecdsa-p256", "--force=false", "--out", bundle, "-o", "text"); err != nil {
		t.Fatal(err)
	}
	b, err := cloudinit.LoadBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"--bundle", bundle, "--ssh-key", "", "--roles-from", "", "--hostname", "", "--advertise-address", ""}

	// userdata to stdout with -o json: the user-data inside a JSON object.
	out, _, err := kb(t, append([]string{"userdata", "--role", "minion", "--format", "shell", "--out", "", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	var ud userDataResult
	if err := json.Unmarshal([]byte(out), &ud); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	want, _ := cloudinit.Render(b, "minion", cloudinit.FormatShell, cloudinit.Options{SSHUser: "root"})
	if ud.Role != "minion" || ud.Format != "shell" || ud.Path != "" || ud.UserData != string(want) {
		t.Errorf("userdata -o json: %+v", ud)
	}

	// userdata --out FILE -o json: the file holds the user-data, stdout says where.
	file := filepath.Join(dir, "minion.sh")
	out, _, err = kb(t, append([]string{"userdata", "--role", "minion", "--format", "shell", "--out", file, "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	ud = userDataResult{}
	if err := json.Unmarshal([]byte(out), &ud); err != nil || ud.Path != file || ud.Mode != "0600" || ud.UserData != "" {
		t.Errorf("userdata --out -o json: %+v %v", ud, err)
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != string(want) {
		t.Errorf("userdata --out wrote %v", err)
	}

	// seed --out FILE -o json.
	iso := filepath.Join(dir, "seed.iso")
	out, _, err = kb(t, append([]string{"seed", "--role", "minion", "--format", "cloud-config", "--out", iso, "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	var sr seedResult
	if err := json.Unmarshal([]byte(out), &sr); err != nil || sr != (seedResult{Path: iso, Role: "minion", Format: "cloud-config", Label: "cidata", Mode: "0600"}) {
		t.Errorf("seed -o json: %+v %v\n%s", sr, err, out)
	}
	if label, _, err := cloudinit.ReadSeedISO(iso); err != nil || label != "cidata" {
		t.Errorf("seed --out: %q %v", label, err)
	}
	// seed without --out says which flag it needs.
	_, _, err = kb(t, append([]string{"seed", "--role", "minion", "--format", "cloud-config", "--out", "", "-o", "text"}, common...)...)
	if err == nil || !strings.Contains(err.Error(), "--out FILE is required") {
		t.Errorf("seed without --out: %v", err)
	}

	if _, err := os.Stat(filepath.Join(dir, "json")); !os.IsNotExist(err) {
		t.Errorf("a file named json: %v", err)
	}
}
