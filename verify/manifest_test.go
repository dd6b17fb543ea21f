package verify

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A manifest.json in the builder's shape (trimmed), read through package manifest.
const sampleManifest = `{
  "apiVersion": "kubebake.dev/v1alpha1",
  "kind": "ImageManifest",
  "recipe": {
    "name": "debian-12",
    "runtime": {"name": "containerd", "packages": ["containerd", "runc"]},
    "storage": {"driver": "overlayfs"},
    "cni": {"version": "v1.9.1", "plugins": ["loopback", "bridge", "host-local", "portmap"]},
    "sysctls": {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"},
    "modules": ["overlay", "br_netfilter"],
    "roles": [{"name": "master", "units": ["etcd.service"]}, {"name": "minion", "units": ["kubelet.service"]}]
  },
  "lockHash": "sha256:abc",
  "artifacts": [
    {"name": "kubelet", "kind": "binary", "source": "gomod", "version": "v1.35.4", "sha256": "k1"},
    {"name": "etcd", "kind": "binary", "source": "gomod", "version": "v3.6.5", "sha256": "e1"},
    {"name": "cni/bridge", "kind": "binary", "source": "gomod", "version": "v1.9.1", "sha256": "b1"},
    {"name": "deb/containerd", "kind": "deb", "source": "deb", "version": "1.6.20~ds1-1+deb12u1", "sha256": "d1"}
  ],
  "files": [
    {"path": "/opt/cni/bin/bridge", "type": "file", "mode": 493, "artifact": "cni/bridge", "sha256": "b1"},
    {"path": "/usr/bin/etcd", "type": "file", "mode": 493, "artifact": "etcd", "sha256": "e1"},
    {"path": "/usr/bin/kubelet", "type": "file", "mode": 493, "artifact": "kubelet", "sha256": "k1"},
    {"path": "/usr/lib/sysctl.d/90-kubebake.conf", "type": "file", "mode": 420, "sha256": "s1"},
    {"path": "/usr/local/bin/kubelet", "type": "symlink", "target": "/usr/bin/kubelet", "artifact": "kubelet"}
  ],
  "units": [
    {"name": "etcd.service", "roles": ["master"], "enabled": true, "listed": true},
    {"name": "kubebake-master-pki.service", "roles": ["master"], "enabled": true},
    {"name": "kubelet.service", "roles": ["minion"], "enabled": true, "listed": true},
    {"name": "kubebake-minion-join.service", "roles": ["minion"], "enabled": true},
    {"name": "kubebake-ignition.service", "enabled": true}
  ],
  "packages": [{"name": "containerd", "version": "1.6.20~ds1-1+deb12u1", "architecture": "amd64"}]
}`

func TestManifestSpec(t *testing.T) {
	m, err := ParseManifest([]byte(sampleManifest), "sample")
	if err != nil {
		t.Fatal(err)
	}
	s := m.Spec(RoleMaster)
	if got := s.Roles[RoleMaster]; !slices.Equal(got, []string{"etcd.service", "kubebake-master-pki.service"}) {
		t.Errorf("master units %v", got)
	}
	if got := s.Roles[RoleMinion]; !slices.Equal(got, []string{"kubebake-minion-join.service", "kubelet.service"}) {
		t.Errorf("minion units %v (the shared ignition unit belongs to no role)", got)
	}
	var names []string
	for _, b := range s.Binaries {
		names = append(names, b.Name+"@"+b.Path+"="+b.Version)
	}
	want := []string{"cni/bridge@/opt/cni/bin/bridge=", "etcd@/usr/bin/etcd=v3.6.5", "kubelet@/usr/bin/kubelet=v1.35.4"}
	if !slices.Equal(names, want) {
		t.Errorf("binaries %v, want %v", names, want)
	}
	if s.Sysctls["net.ipv4.ip_forward"] != "1" || !slices.Equal(s.Modules, []string{"overlay", "br_netfilter"}) ||
		s.Runtime != "containerd" || s.StorageDriver != "overlayfs" || len(s.CNIPlugins) != 4 || len(s.Packages) != 1 {
		t.Errorf("spec %+v", s)
	}
	// Every expectation turns into a check.
	var checks []string
	for _, p := range Probes(s) {
		checks = append(checks, p.Name)
	}
	joined := strings.Join(checks, " ")
	for _, c := range []string{
		"binary/kubelet/sha256", "binary/kubelet/version", "binary/etcd/version", "binary/cni/bridge/sha256",
		"packages/versions", "sysctl/net.bridge.bridge-nf-call-iptables", "module/br_netfilter/before-sysctl",
		"runtime/storage", "cni/portmap", "tool/ip6tables", "unit/etcd.service/active",
		"unit/kubelet.service/skipped", "systemd/failed-units", "master/apiserver-readyz",
		"hygiene/machine-id", "hygiene/ssh-host-keys", "hygiene/no-secrets", "info/first-boot-time",
	} {
		if !strings.Contains(" "+joined+" ", " "+c+" ") {
			t.Errorf("no check %s in %s", c, joined)
		}
	}
	if strings.Contains(joined, "binary/cni/bridge/version") {
		t.Error("a version check for a binary that prints none")
	}
}

func TestParseManifestRefusesOther(t *testing.T) {
	for _, doc := range []string{`{}`, `[1]`, `{"files": 3}`,
		`{"apiVersion": "kubebake.dev/v1alpha1", "kind": "ImageManifest"}`,
		`{"apiVersion": "kubebake.dev/v1alpha1", "kind": "Lock", "files": [{"path": "/x"}]}`,
	} {
		if _, err := ParseManifest([]byte(doc), "doc.json"); err == nil {
			t.Errorf("accepted %s", doc)
		} else if !strings.HasPrefix(err.Error(), "doc.json: ") {
			t.Errorf("the error does not name the file: %v", err)
		}
	}
}

// A manifest of an apiVersion verify does not know is refused by name, before any check is
// derived from it, by LoadManifest as by ParseManifest.
func TestLoadManifestRefusesOtherVersion(t *testing.T) {
	doc := strings.Replace(sampleManifest, `"apiVersion": "kubebake.dev/v1alpha1",
  "kind"`, `"apiVersion": "kubebake.dev/v9",
  "kind"`, 1)
	file := writeTemp(t, doc)
	_, err := LoadManifest(file)
	if err == nil {
		t.Fatal("a kubebake.dev/v9 manifest was accepted")
	}
	for _, want := range []string{file, "apiVersion", "kubebake.dev/v9", "rebuild the image"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q: %v", want, err)
		}
	}
	if m, err := LoadManifest(writeTemp(t, sampleManifest)); err != nil || m.Recipe.Name != "debian-12" || m.LockHash != "sha256:abc" {
		t.Errorf("the sample: %v", err)
	}
}

func writeTemp(t *testing.T, data string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "manifest.json")
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}
