package manifest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// sha256 of "kubelet v1.35.4", "kubelet v1.35.5" and so on: stand-ins for real digests.
const (
	kubeletV4SHA = "e3ec98ad479750aae27a93dd6f69db7aacdf5c8551f0bdd0bf6289d432de267a"
	kubeletV5SHA = "6ad259e0238e1c8417ba8782dab50f4746a2e32235c334791ea298e02202cda6"
	newLockHash  = "61f675fb1bc006c731644e7108b93e1ef40247a63586cb3bb577d1fe6d1b2486"
	newCloudCfg  = "b95325a2ccd230b335ae29d8a2ab73d774a7130b5e567eee8b498657fab58633"
	extraConfSHA = "150be1dadba8a62de7af7bbf59d9c3399e4a6548c27b5baf7bab20ce1bf93276"
)

// lastWeek is the real testdata build with a kubelet, its layer file and the kernel's
// packages added: the build that each test changes one thing of.
func lastWeek(t *testing.T) *Manifest {
	t.Helper()
	m, err := Read("testdata/debian-12.manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	m.Artifacts = append(m.Artifacts, recipes.LockedArtifact{Name: "kubelet", Kind: "binary", Source: "gomod", Version: "v1.35.4",
		Module: "k8s.io/kubernetes@v1.35.4", Package: "k8s.io/kubernetes/cmd/kubelet", SHA256: kubeletV4SHA, Size: 15})
	m.Files = append(m.Files, File{Path: "/usr/bin/kubelet", Type: "file", Mode: 0o755, Artifact: "kubelet", SHA256: kubeletV4SHA, Size: 15})
	m.Packages = append(m.Packages,
		DebPackage{Name: "curl", Version: "7.88.1-10+deb12u12", Architecture: "amd64"},
		DebPackage{Name: "ethtool", Version: "1:6.1-1", Architecture: "amd64"},
		DebPackage{Name: "linux-image-6.1.0-50-cloud-amd64", Version: "6.1.158-1", Architecture: "amd64", Source: "linux-signed-amd64"},
		DebPackage{Name: "linux-image-cloud-amd64", Version: "6.1.158-1", Architecture: "amd64", Source: "linux-signed-amd64"})
	return m
}

// rebuilt is a deep copy of m as the next build: what every build changes (outputs, timings,
// the disk's identity) is changed too, and must not show.
func rebuilt(t *testing.T, m *Manifest) *Manifest {
	t.Helper()
	data, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data, "copy")
	if err != nil {
		t.Fatal(err)
	}
	c.Build.Seconds += 60
	c.Build.RootfsCached = !c.Build.RootfsCached
	for i := range c.Outputs {
		c.Outputs[i].SHA256 = strings.Repeat("0", 64)
	}
	c.Image.DiskGUID, c.Image.RootPartUUID, c.Image.Cmdline = "other", "other", "root=PARTUUID=other"
	return c
}

func findArtifact(m *Manifest, name string) *recipes.LockedArtifact {
	for i := range m.Artifacts {
		if m.Artifacts[i].Name == name {
			return &m.Artifacts[i]
		}
	}
	return nil
}

func findFile(m *Manifest, path string) *File {
	for i := range m.Files {
		if m.Files[i].Path == path {
			return &m.Files[i]
		}
	}
	return nil
}

func findUnit(m *Manifest, name string) *Unit {
	for i := range m.Units {
		if m.Units[i].Name == name {
			return &m.Units[i]
		}
	}
	return nil
}

func checkRendering(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n%s\nwant:\n%s", what, got, want)
	}
}

// TestDiffKubeletPatch: a Kubernetes patch release moves the kubelet artifact, the kubelet
// binary in the layer and the lock. The artifact's line says all of it: /usr/bin/kubelet is
// that artifact's new content and is not listed again.
func TestDiffKubeletPatch(t *testing.T) {
	old := lastWeek(t)
	new := rebuilt(t, old)
	k := findArtifact(new, "kubelet")
	k.Version, k.Module, k.SHA256 = "v1.35.5", "k8s.io/kubernetes@v1.35.5", kubeletV5SHA
	findFile(new, "/usr/bin/kubelet").SHA256 = kubeletV5SHA
	new.LockHash = newLockHash

	c := Diff(old, new)
	checkRendering(t, "text", c.Text(), `lock: b85e77642332 -> 61f675fb1bc0
artifacts: 1 changed
  ~ kubelet  v1.35.4 -> v1.35.5  sha256 e3ec98ad4797 -> 6ad259e0238e
`)
	checkRendering(t, "markdown", c.Markdown(), "### Recipe and lock\n\n"+
		"| name | old | new |\n|---|---|---|\n"+
		"| lock | `b85e77642332` | `61f675fb1bc0` |\n\n"+
		"### Artifacts\n\n"+
		"| name | old | new |\n|---|---|---|\n"+
		"| kubelet | v1.35.4, sha256 `e3ec98ad4797` | v1.35.5, sha256 `6ad259e0238e` |\n")
	if len(c.Artifacts) != 1 || !slices.Equal(c.Artifacts[0].Fields, []string{"version", "sha256"}) ||
		c.Artifacts[0].Old.Version != "v1.35.4" || c.Artifacts[0].New.SHA256 != kubeletV5SHA {
		t.Errorf("artifacts: %+v", c.Artifacts)
	}
}

// TestDiffPackagesAndFiles: a package updated, one added, one removed, a config file's new
// content.
func TestDiffPackagesAndFiles(t *testing.T) {
	old := lastWeek(t)
	new := rebuilt(t, old)
	new.Packages = slices.DeleteFunc(new.Packages, func(p DebPackage) bool { return p.Name == "ethtool" })
	for i := range new.Packages {
		if new.Packages[i].Name == "curl" {
			new.Packages[i].Version = "7.88.1-10+deb12u14"
		}
	}
	new.Packages = append(new.Packages, DebPackage{Name: "jq", Version: "1.6-2.1+deb12u1", Architecture: "amd64"})
	cfg := findFile(new, "/etc/cloud/cloud.cfg.d/90-kubebake.cfg")
	cfg.SHA256, cfg.Size = newCloudCfg, 71

	c := Diff(old, new)
	checkRendering(t, "text", c.Text(), `packages: 1 added, 1 removed, 1 changed
  ~ curl     7.88.1-10+deb12u12 -> 7.88.1-10+deb12u14
  - ethtool  1:6.1-1
  + jq       1.6-2.1+deb12u1
files: 1 changed
  ~ /etc/cloud/cloud.cfg.d/90-kubebake.cfg  sha256 d362ee552432 -> b95325a2ccd2
`)
	checkRendering(t, "markdown", c.Markdown(), "### Debian packages\n\n"+
		"| name | old | new |\n|---|---|---|\n"+
		"| curl | 7.88.1-10+deb12u12 | 7.88.1-10+deb12u14 |\n"+
		"| ethtool | 1:6.1-1 | (removed) |\n"+
		"| jq | (added) | 1.6-2.1+deb12u1 |\n\n"+
		"### Node layer files\n\n"+
		"| path | old | new |\n|---|---|---|\n"+
		"| /etc/cloud/cloud.cfg.d/90-kubebake.cfg | sha256 `d362ee552432` | sha256 `b95325a2ccd2` |\n")
}

// TestDiffKernel: a kernel ABI bump (6.1.0-50 -> 6.1.0-51) is called out on a line of its
// own, with the package versions; the packages stay in the package list.
func TestDiffKernel(t *testing.T) {
	old := lastWeek(t)
	new := rebuilt(t, old)
	new.Image.Kernel = "6.1.0-51-cloud-amd64"
	new.Packages = slices.DeleteFunc(new.Packages, func(p DebPackage) bool { return p.Name == "linux-image-6.1.0-50-cloud-amd64" })
	for i := range new.Packages {
		if new.Packages[i].Name == "linux-image-cloud-amd64" {
			new.Packages[i].Version = "6.1.162-1"
		}
	}
	new.Packages = append(new.Packages, DebPackage{Name: "linux-image-6.1.0-51-cloud-amd64", Version: "6.1.162-1", Architecture: "amd64"})

	c := Diff(old, new)
	checkRendering(t, "text", c.Text(), `kernel: 6.1.0-50-cloud-amd64 (6.1.158-1) -> 6.1.0-51-cloud-amd64 (6.1.162-1)
packages: 1 added, 1 removed, 1 changed
  - linux-image-6.1.0-50-cloud-amd64  6.1.158-1
  + linux-image-6.1.0-51-cloud-amd64  6.1.162-1
  ~ linux-image-cloud-amd64           6.1.158-1 -> 6.1.162-1
`)
	if !strings.HasPrefix(c.Markdown(), "### Kernel\n\n| name | old | new |\n|---|---|---|\n"+
		"| kernel | 6.1.0-50-cloud-amd64 (6.1.158-1) | 6.1.0-51-cloud-amd64 (6.1.162-1) |\n\n### Debian packages\n") {
		t.Errorf("markdown:\n%s", c.Markdown())
	}
	want := Kernel{Release: "6.1.0-51-cloud-amd64", Package: "linux-image-6.1.0-51-cloud-amd64", Version: "6.1.162-1"}
	if c.Kernel == nil || c.Kernel.New != want {
		t.Errorf("kernel: %+v", c.Kernel)
	}

	// A security update that keeps the ABI: the release stays, the package version moves.
	same := rebuilt(t, old)
	for i := range same.Packages {
		if strings.HasPrefix(same.Packages[i].Name, "linux-image-") {
			same.Packages[i].Version = "6.1.159-1"
		}
	}
	if got := Diff(old, same).Text(); !strings.HasPrefix(got, "kernel: 6.1.0-50-cloud-amd64 (6.1.158-1) -> 6.1.0-50-cloud-amd64 (6.1.159-1)\n") {
		t.Errorf("same ABI:\n%s", got)
	}
}

// TestDiffLayerAndUnits: every way a layer file or unit changes, and a file that is an
// artifact's copy but changed more than its content (listed, with both changes).
func TestDiffLayerAndUnits(t *testing.T) {
	old := lastWeek(t)
	new := rebuilt(t, old)
	findFile(new, "/etc").Mode = 0o750
	findFile(new, "/etc/systemd/system/kubebake-roles.target.wants/containerd.service").Target = "/etc/systemd/system/containerd.service"
	new.Files = slices.DeleteFunc(new.Files, func(f File) bool { return f.Path == "/opt/cni/bin/bridge" })
	new.Files = append(new.Files, File{Path: "/etc/kubebake/extra.conf", Type: "file", Mode: 0o640, GID: 996, SHA256: extraConfSHA, Size: 10})
	k := findArtifact(new, "kubelet")
	k.Version, k.SHA256 = "v1.35.5", kubeletV5SHA
	kf := findFile(new, "/usr/bin/kubelet")
	kf.SHA256, kf.Mode = kubeletV5SHA, 0o700
	findUnit(new, "etcd.service").Roles = []string{"minion", "master"}
	findUnit(new, "kubebake-images.service").Enabled = true
	findUnit(new, "containerd.service").Roles = []string{"minion", "master"} // same set, other order: no change
	new.Units = slices.DeleteFunc(new.Units, func(u Unit) bool { return u.Name == "kubebake-growroot.service" })
	new.Units = append(new.Units, Unit{Name: "kubelet.service", Roles: []string{"master", "minion"}, Enabled: true, Listed: true})

	c := Diff(old, new)
	checkRendering(t, "text", c.Text(), `artifacts: 1 changed
  ~ kubelet  v1.35.4 -> v1.35.5  sha256 e3ec98ad4797 -> 6ad259e0238e
files: 1 added, 1 removed, 3 changed
  ~ /etc                                                                mode 0755 -> 0750
  + /etc/kubebake/extra.conf                                            file  mode 0640  sha256 150be1dadba8  owner 0:996
  ~ /etc/systemd/system/kubebake-roles.target.wants/containerd.service  target /usr/lib/systemd/system/containerd.service -> /etc/systemd/system/containerd.service
  - /opt/cni/bin/bridge                                                 file  mode 0755  sha256 57ed3d005d21
  ~ /usr/bin/kubelet                                                    sha256 e3ec98ad4797 -> 6ad259e0238e  mode 0755 -> 0700
units: 1 added, 1 removed, 2 changed
  ~ etcd.service               roles master -> master,minion
  - kubebake-growroot.service  roles shared  enabled
  ~ kubebake-images.service    disabled -> enabled
  + kubelet.service            roles master,minion  enabled
`)
}

// TestDiffLocks: two locks differ in one artifact.
func TestDiffLocks(t *testing.T) {
	old := &recipes.Lock{APIVersion: recipes.APIVersion, Kind: recipes.KindLock, Recipe: "debian-12", InputsDigest: "sha256:00",
		SourceDateEpoch: 1795996800, Artifacts: []recipes.LockedArtifact{
			{Name: "deb/runc", Kind: "deb", Source: "deb", Version: "1.1.5+ds1-1+deb12u1", SHA256: strings.Repeat("a1", 32)},
			{Name: "etcd", Kind: "binary", Source: "gomod", Version: "v3.6.5", SHA256: strings.Repeat("b2", 32)},
			{Name: "kubelet", Kind: "binary", Source: "gomod", Version: "v1.35.4", SHA256: kubeletV4SHA},
		}}
	new := *old
	new.Artifacts = slices.Clone(old.Artifacts)
	new.Artifacts[1].Version, new.Artifacts[1].SHA256 = "v3.6.6", strings.Repeat("c3", 32)

	c := DiffLocks(old, &new)
	checkRendering(t, "text", c.Text(), "lock: "+recipes.LockHash(old)[:12]+" -> "+recipes.LockHash(&new)[:12]+`
artifacts: 1 changed
  ~ etcd  v3.6.5 -> v3.6.6  sha256 b2b2b2b2b2b2 -> c3c3c3c3c3c3
`)
	if c.Packages == nil || c.Files == nil || c.Units == nil {
		t.Errorf("lists a lock does not have must be empty, not null: %+v", c)
	}
	if !DiffLocks(old, old).Empty() {
		t.Error("a lock differs from itself")
	}

	// The pinned package sets: one security fix.
	old.Packages = []recipes.LockedPackage{{Name: "libssl3", Version: "3.0.20-1~deb12u2", Arch: "amd64"}, {Name: "zlib1g", Version: "1:1.2.13.dfsg-1", Arch: "amd64"}}
	fixed := *old
	fixed.Packages = slices.Clone(old.Packages)
	fixed.Packages[0].Version = "3.0.22-1~deb12u2"
	c = DiffLocks(old, &fixed)
	if len(c.Packages) != 1 || c.Packages[0].Name != "libssl3" || c.Packages[0].Old.Version != "3.0.20-1~deb12u2" || c.Packages[0].New.Version != "3.0.22-1~deb12u2" {
		t.Errorf("package set change: %+v", c.Packages)
	}
	if !strings.Contains(c.Markdown(), "libssl3") || !strings.Contains(c.Text(), "3.0.20-1~deb12u2 -> 3.0.22-1~deb12u2") {
		t.Errorf("the renderings do not show the package:\n%s\n%s", c.Text(), c.Markdown())
	}
}

// TestDiffNoChanges: a rebuild of the same lock is no change, in every rendering, and JSON
// readers still find every list.
func TestDiffNoChanges(t *testing.T) {
	old := lastWeek(t)
	c := Diff(old, rebuilt(t, old))
	if !c.Empty() || c.Text() != "no changes\n" || c.Markdown() != "No changes.\n" {
		t.Errorf("%+v\n%s%s", c, c.Text(), c.Markdown())
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != `{"artifacts":[],"packages":[],"files":[],"units":[]}` {
		t.Errorf("json: %s", data)
	}
}

// TestDiffOrderAndMultiarch: the order of the manifests' lists does not matter; a package
// installed for two architectures is two entries, and one that changed architecture is one
// change.
func TestDiffOrderAndMultiarch(t *testing.T) {
	old := lastWeek(t)
	old.Packages = append(old.Packages, DebPackage{Name: "libc6", Version: "2.36-9", Architecture: "amd64"},
		DebPackage{Name: "tzdata", Version: "2025b-0+deb12u1", Architecture: "amd64"})
	new := rebuilt(t, old)
	new.Packages = append(new.Packages, DebPackage{Name: "libc6", Version: "2.36-9", Architecture: "i386"})
	for i := range new.Packages {
		if new.Packages[i].Name == "tzdata" {
			new.Packages[i].Architecture = "all"
		}
	}
	new.LockHash = newLockHash
	k := findArtifact(new, "kubelet")
	k.Version, k.SHA256 = "v1.35.5", kubeletV5SHA
	want := Diff(old, new).Text()
	checkRendering(t, "text", want, `lock: b85e77642332 -> 61f675fb1bc0
artifacts: 1 changed
  ~ kubelet  v1.35.4 -> v1.35.5  sha256 e3ec98ad4797 -> 6ad259e0238e
packages: 1 added, 1 changed
  + libc6:i386  2.36-9
  ~ tzdata      2025b-0+deb12u1  arch amd64 -> all
`)
	slices.Reverse(new.Packages)
	slices.Reverse(new.Artifacts)
	slices.Reverse(new.Files)
	slices.Reverse(old.Units)
	checkRendering(t, "text, lists reversed", Diff(old, new).Text(), want)
}
