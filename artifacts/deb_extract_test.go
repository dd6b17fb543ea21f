package artifacts

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// buildDeb makes a real .deb with dpkg-deb holding files (path -> content).
func buildDeb(t *testing.T, pkg, version string, files map[string]string) []byte {
	t.Helper()
	testenv.NeedTool(t, "dpkg-deb")
	root := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755)
	control := "Package: " + pkg + "\nVersion: " + version + "\nArchitecture: amd64\nMaintainer: Test <t@kubebake.invalid>\nDescription: test package\n"
	os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(control), 0o644)
	for p, content := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "pkg.deb")
	if err := run.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, out).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func debCNIInput(plugin, version string) recipes.Input {
	return recipes.Input{
		Name: "cni/" + plugin, Kind: recipes.InputBinary, Version: version, Arch: "amd64",
		Source:  recipes.Source{Type: recipes.SourceDeb, Package: "containernetworking-plugins"},
		Package: "containernetworking-plugins", Suites: []string{"bookworm", "bookworm-updates"},
	}
}

func TestDebBinaryResolveAndExtract(t *testing.T) {
	old := buildDeb(t, "containernetworking-plugins", "1.1.1+ds1-3+b2", map[string]string{
		"usr/lib/cni/bridge":   "bridge 1.1.1",
		"usr/lib/cni/loopback": "loopback 1.1.1",
		// A second file of the same name outside a bin folder must not be picked.
		"usr/share/doc/containernetworking-plugins/examples/bridge": "an example",
	})
	newer := buildDeb(t, "containernetworking-plugins", "1.2.0-1", map[string]string{"usr/lib/cni/bridge": "bridge 1.2.0"})
	a := newSynthArchive(t)
	a.suites["bookworm"] = append(a.suites["bookworm"], synthPkg{"containernetworking-plugins", "1.1.1+ds1-3+b2", "amd64", old})
	a.suites["bookworm-updates"] = append(a.suites["bookworm-updates"], synthPkg{"containernetworking-plugins", "1.2.0-1", "amd64", newer})
	a.publish(t)
	s := a.source(t, newCache(t))
	ctx := context.Background()

	got, err := s.Resolve(ctx, []recipes.Input{debCNIInput("bridge", "1.1"), debCNIInput("loopback", "1.1")}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	b := got[0]
	if b.Version != "v1.1.1" || b.Package != "containernetworking-plugins=1.1.1+ds1-3+b2" || b.Kind != "binary" || b.Source != "deb" || b.Suite != "bookworm" || b.SHA256 != sum(old) {
		t.Errorf("bridge: %+v", b)
	}
	if n := resolveOne(t, s, debCNIInput("bridge", "1.2")); n.Version != "v1.2.0" || n.Suite != "bookworm-updates" {
		t.Errorf("track 1.2: %+v", n)
	}
	if _, err := s.Resolve(ctx, []recipes.Input{debCNIInput("bridge", "1.3")}, nil, false); err == nil || !strings.Contains(err.Error(), "matches 1.3") {
		t.Errorf("no match: %v", err)
	}

	paths, err := s.Fetch(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"cni/bridge": "bridge 1.1.1", "cni/loopback": "loopback 1.1.1"} {
		data, err := os.ReadFile(paths[name])
		if err != nil || string(data) != want {
			t.Errorf("%s: %q %v", name, data, err)
		}
	}
	// Warm: the binary is found through the extract index, without the .deb.
	os.Remove(s.Cache.BlobPath(b.SHA256))
	before := a.srv.totalGets()
	again, err := s.Fetch(ctx, got[:1])
	if err != nil {
		t.Fatal(err)
	}
	if again["cni/bridge"] != paths["cni/bridge"] || a.srv.totalGets() != before {
		t.Errorf("warm fetch of a deb binary: %v, %d requests", again, a.srv.totalGets()-before)
	}

	missing, err := s.Resolve(ctx, []recipes.Input{debCNIInput("vlan", "1.1")}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fetch(ctx, missing); err == nil || !strings.Contains(err.Error(), `no file named "vlan"`) {
		t.Errorf("missing member: %v", err)
	}
}

func TestDebUpstreamVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1.1.1+ds1-3+b2":       "v1.1.1",
		"1:1.4.7-1+b2":         "v1.4.7",
		"1.6.20~ds1-1+deb12u1": "v1.6.20",
		"3.4.23-4":             "v3.4.23",
	} {
		if got := debUpstreamVersion(in); got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
}
