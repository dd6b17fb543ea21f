package roles

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// goRecipe builds a recipe in Go shaped like the embedded Debian recipes (defaults applied),
// for a runtime setup (recipes.Setups).
func goRecipe(name, release, runtime string) *recipes.Recipe {
	comps := []recipes.Component{}
	for _, c := range []string{"kubelet", "kube-proxy", "kubeadm", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		comps = append(comps, recipes.Component{Name: c})
	}
	rt := recipes.Runtime{Name: recipes.RuntimeContainerd, Packages: []string{"containerd", "runc"}, SandboxImage: "registry.k8s.io/pause:3.10", CgroupDriver: "systemd"}
	storage := "overlayfs"
	if runtime == recipes.RuntimeDocker || runtime == recipes.SetupDockerCRIDockerd {
		rt = recipes.Runtime{Name: recipes.RuntimeDocker, Packages: []string{"docker.io", "runc"}, SandboxImage: "registry.k8s.io/pause:3.10", CgroupDriver: "systemd"}
		storage = "overlay2"
	}
	if runtime == recipes.SetupDockerCRIDockerd {
		rt.CRIDockerd = &recipes.CRIDockerd{Version: "0.3.16", Source: recipes.Source{Type: recipes.SourceURL, URL: "https://example.org/cri-dockerd-{version}.{arch}.tgz", Member: "cri-dockerd/{name}"}}
	}
	return &recipes.Recipe{
		APIVersion: recipes.APIVersion, Kind: recipes.KindRecipe, Name: name,
		Base:       recipes.Base{Distro: "debian", Release: release, Packages: []string{"conntrack", "socat", "ebtables", "iptables", "ethtool"}},
		Kubernetes: recipes.Kubernetes{Version: "1.35", Source: recipes.Source{Type: "gomod", Module: "k8s.io/kubernetes"}, Components: comps},
		Runtime:    rt,
		Etcd:       recipes.Etcd{Version: "3.6", Source: recipes.Source{Type: "gomod", Module: recipes.EtcdModule}},
		CNI:        recipes.CNI{Version: "1.9", Source: recipes.Source{Type: "gomod", Module: recipes.CNIModule}, Plugins: []string{"bridge", "host-local", "loopback", "portmap"}},
		Storage:    recipes.Storage{Driver: storage},
		Network:    recipes.Network{PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/12"},
		Sysctls:    recipes.DefaultSysctls(false),
		Modules:    recipes.DefaultModules(),
		Roles:      recipes.BuiltinRoles(recipes.SetupOf(rt), false),
		Image:      recipes.Image{Size: "4GiB", Formats: []string{"raw", "qcow2"}},
	}
}

// fakeBlob is the fake content of an artifact in tests.
func fakeBlob(name string) []byte { return []byte("#!/bin/sh\n# fake " + name + "\nexit 0\n") }

// fakeLock pins the binary inputs of a recipe (and cri-dockerd, which the docker runtime
// needs) to fake blobs, and its runtime packages, with versions shaped like real ones. Other
// Debian packages are left out so that the golden layers change only with what the layer
// holds, not with the recipe's package list.
func fakeLock(r *recipes.Recipe) *recipes.Lock {
	l := &recipes.Lock{APIVersion: recipes.APIVersion, Kind: recipes.KindLock, Recipe: r.Name, SourceDateEpoch: 1767225600,
		InputsDigest: "sha256:" + strings.Repeat("0", 64)}
	names := []string{"cri-dockerd"}
	for _, in := range r.Inputs() {
		if in.Kind == recipes.InputDeb && !isKnown(strings.TrimPrefix(in.Name, "deb/"), r.Runtime.Packages) {
			continue
		}
		names = append(names, in.Name)
	}
	// The recipe's own images (images:): each an archive, whatever the recipe makes it from.
	// kubebake's are left out, like the other packages, to keep the golden layers small.
	for _, img := range r.Images {
		n := recipes.ImageArtifact(img.Name)
		names = slices.DeleteFunc(names, func(s string) bool { return s == n })
		b := fakeBlob(n)
		s := sha256.Sum256(b)
		l.Artifacts = append(l.Artifacts, recipes.LockedArtifact{Name: n, Kind: recipes.KindImage, Source: "oci", Version: "1.0",
			Ref: "kubebake.local/" + img.Name + ":1.0", Digest: "sha256:" + strings.Repeat("ef", 32), SHA256: hex.EncodeToString(s[:]), Size: int64(len(b))})
	}
	for _, n := range names {
		a := recipes.LockedArtifact{Name: n, Kind: recipes.InputBinary, Source: recipes.SourceGoMod}
		switch {
		case strings.HasPrefix(n, "deb/"):
			a.Kind, a.Source, a.Version = recipes.InputDeb, recipes.SourceDeb, "1.0-1+deb12u1"
			a.SHA256, a.Size = strings.Repeat("cd", 32), 1000
			l.Artifacts = append(l.Artifacts, a)
			continue
		case n == "etcd" || n == "etcdctl":
			a.Version = "v3.6.5"
		case strings.HasPrefix(n, "cni/"):
			a.Version = "v1.9.1"
		case n == "cri-dockerd":
			a.Version = "v0.3.21"
		default:
			a.Version = "v1.35.4"
		}
		b := fakeBlob(n)
		s := sha256.Sum256(b)
		a.SHA256, a.Size = hex.EncodeToString(s[:]), int64(len(b))
		l.Artifacts = append(l.Artifacts, a)
	}
	sort.Slice(l.Artifacts, func(i, j int) bool { return l.Artifacts[i].Name < l.Artifacts[j].Name })
	return l
}

func fakeOpen(name string) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(fakeBlob(name))), nil
}

func mustRender(t *testing.T, r *recipes.Recipe, l *recipes.Lock) *Layer {
	t.Helper()
	layer, err := Render(r, l)
	if err != nil {
		t.Fatalf("Render(%s): %v", r.Name, err)
	}
	return layer
}

// extract writes the layer's tar into root, the way the builder merges it into a rootfs.
func extract(t *testing.T, layer *Layer, root string) {
	t.Helper()
	var buf bytes.Buffer
	if err := layer.WriteTar(&buf, fakeOpen, time.Unix(1767225600, 0)); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode)); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			os.Remove(p)
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, os.FileMode(h.Mode)); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected tar entry type %c for %s", h.Typeflag, h.Name)
		}
	}
}

// describe is the golden text of a layer: one header line per entry, and the content of
// rendered text files.
func describe(l *Layer) string {
	var b strings.Builder
	for _, f := range l.Files {
		switch f.Type {
		case TypeDir:
			fmt.Fprintf(&b, "%s dir %04o %d:%d\n", f.Path, f.Mode, f.UID, f.GID)
		case TypeSymlink:
			fmt.Fprintf(&b, "%s symlink -> %s\n", f.Path, f.Target)
		case TypeFile:
			if f.Artifact != "" {
				fmt.Fprintf(&b, "%s file %04o %d:%d artifact=%s size=%d sha256=%s\n", f.Path, f.Mode, f.UID, f.GID, f.Artifact, f.Size, f.SHA256)
				continue
			}
			fmt.Fprintf(&b, "%s file %04o %d:%d size=%d\n", f.Path, f.Mode, f.UID, f.GID, f.Size)
			for _, line := range strings.SplitAfter(string(f.Content), "\n") {
				if line != "" {
					b.WriteString("\t| " + line)
				}
			}
			if len(f.Content) > 0 && f.Content[len(f.Content)-1] != '\n' {
				b.WriteString("\n\t(no newline at end of file)\n")
			}
		}
	}
	return b.String()
}
