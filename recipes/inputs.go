package recipes

import (
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/kubebake/kubebake"
	"github.com/kubebake/kubebake/artifacts/gomain"
)

// Input is one thing the lock must pin, derived from a recipe by Recipe.Inputs. The artifacts
// package resolves inputs to LockedArtifacts; the lock's InputsDigest is a hash of them.
type Input struct {
	Name    string `json:"name"`    // lock name: "kubelet", "etcd", "cni/bridge", "deb/containerd"
	Kind    string `json:"kind"`    // "binary" or "deb"
	Source  Source `json:"source"`  // how it is obtained (type gomod, url or deb)
	Version string `json:"version"` // exact version or minor track, as the recipe says
	// Package is the Go main package for gomod (k8s.io/kubernetes/cmd/kubelet), the file name
	// for url (kubelet), or the Debian package name for deb (containerd).
	Package string `json:"package"`
	// Main (gomod only) names a main package kubebake provides (artifacts/gomain/<Main>),
	// built against Source.Module at Version instead of one of the module's own; Package is
	// then empty. MainSHA256 is that main's sha256, so that changing it changes the lock.
	Main       string `json:"main,omitempty"`
	MainSHA256 string `json:"mainSha256,omitempty"`
	// Suites and Mirror say where deb inputs (and binaries from a deb source) are looked up
	// (Mirror empty: the machine's apt). Arch is the Debian architecture, set on every input
	// (GOARCH for gomod).
	Suites []string `json:"suites,omitempty"`
	Mirror string   `json:"mirror,omitempty"`
	Arch   string   `json:"arch,omitempty"`
}

// Input kinds.
const (
	InputBinary = "binary"
	InputDeb    = "deb"
	// KindImage is a container image archive built at lock time from other locked inputs.
	KindImage = "image"
	// BusyboxArtifact is /bin/busybox out of BusyboxPackage, what the baked pause and busybox
	// images are made of.
	BusyboxArtifact = "busybox"
	BusyboxPackage  = "busybox-static"
	// ApplierArtifact is the first-boot Ignition applier every image carries, built from
	// kubebake's own source (source type self).
	ApplierArtifact = "kubebake-ignition"
)

// Source types.
const (
	SourceGoMod = "gomod"
	SourceURL   = "url"
	SourceDeb   = "deb"
	// SourceSelf is kubebake's own source (the module root package embeds it): programs
	// kubebake bakes into every image. Recipes do not name it; Inputs adds it.
	SourceSelf = "self"
)

// Inputs lists everything the lock must pin for this recipe, sorted by Name: one binary per
// Kubernetes component, etcd and etcdctl, one per CNI plugin ("cni/<plugin>"), flanneld and
// coredns when the recipe has podNetwork and dns (from kubebake's own mains), cri-dockerd when
// the kubelet reaches docker through it (CRIOf; runtime.criDockerd's source), and one Debian
// package per name in BootPackages, base.kernel, runtime.packages and base.packages
// ("deb/<pkg>"). Versions are normalised constraints (v1.35.4 or 1.35); a deb input carries
// the exact Debian version when the recipe pins one ("containerd=1.6.20~ds1-1+deb12u3"), else
// none (the lock picks the newest in Suites). Arch is set on every input: GOARCH for gomod.
// It is a pure function of the recipe, so InputsDigest of it detects any drift.
func (r *Recipe) Inputs() []Input {
	arch := r.Base.Arch
	norm := func(v string) string {
		if n, err := NormalizeVersion(v); err == nil {
			return n
		}
		return v // lint refuses it; keep it visible rather than guess
	}
	var ins []Input
	// binary adds one binary input; goPkg is the module's main package to build (gomod), or
	// "" when kubebake provides the main (gomain.<name>).
	binary := func(name string, src Source, version, goPkg string) {
		in := Input{Name: name, Kind: InputBinary, Source: src, Version: norm(version), Arch: arch}
		switch src.Type {
		case SourceGoMod:
			in.Package = goPkg
			if goPkg == "" {
				in.Main, in.MainSHA256 = name, gomain.SHA256(name)
			}
		case SourceURL:
			in.Package = path.Base(name) // the file name: kubelet, etcd, bridge
		case SourceDeb:
			in.Package = src.Package
			in.Suites, in.Mirror = slices.Clone(r.Base.Suites), r.Base.Mirror
		}
		ins = append(ins, in)
	}

	k := r.Kubernetes
	for _, c := range k.Components {
		binary(c.Name, k.Source, k.Version, k.Source.Module+"/cmd/"+c.Name)
	}
	e := r.Etcd
	binary("etcd", e.Source, e.Version, e.Source.Module)
	// etcdctl ships with etcd; from the module proxy it is its own module of the same release.
	if e.Source.Type != SourceGoMod || e.Source.Module == EtcdModule {
		ctl := e.Source
		if ctl.Type == SourceGoMod {
			ctl.Module = EtcdctlModule
		}
		binary("etcdctl", ctl, e.Version, EtcdctlModule)
	}
	c := r.CNI
	for _, p := range c.Plugins {
		binary("cni/"+p, c.Source, c.Version, c.Source.Module+"/"+CNIPlugins[p])
	}
	// flannel's and CoreDNS's own mains are unfit for a node (see artifacts/gomain): kubebake
	// builds its own against their modules.
	if pn := r.PodNetwork; pn != nil {
		binary(FlanneldBinary, pn.Source, pn.Version, "")
	}
	if d := r.DNS; d != nil {
		binary(CoreDNSBinary, d.Source, d.Version, "")
	}
	// cri-dockerd's release files name the version without its v (the tag is v0.3.16, the
	// tarball cri-dockerd-0.3.16.amd64.tgz): {version} is the bare number, so a template
	// writes v{version} for the tag, whether the recipe says 0.3.16 or v0.3.16.
	if CRIOf(r.Runtime) == CRIServerDockerd {
		cd := r.Runtime.CRIDockerd
		binary(CRIServerDockerd, cd.Source, cd.Version, "")
		ins[len(ins)-1].Version = strings.TrimPrefix(ins[len(ins)-1].Version, "v")
	}
	// Nodes on containerd's CRI bake their container images (the pod sandbox, busybox): nodes pull
	// nothing. Both are made from Debian's statically linked busybox (artifacts/images.go).
	if r.bakesImages() {
		binary(BusyboxArtifact, Source{Type: SourceDeb, Package: BusyboxPackage}, "", "")
		// The recipe's own images: an archive beside the recipe is an input as it is; a gomod
		// image's program is a binary input, the image is made from it (BakedImages).
		for _, img := range r.Images {
			switch {
			case img.Archive != "":
				ins = append(ins, Input{Name: ImageArtifact(img.Name), Kind: KindImage, Source: Source{Type: SourceArchive}, Package: img.Archive, Arch: arch})
			case img.Source != nil && img.Source.Type == SourceGoMod:
				src := Source{Type: SourceGoMod, Module: img.Source.Module}
				binary(ImageBinaryArtifact(img.Name), src, img.Version, GoMainPackage(src.Module, img.Source.Package))
			}
		}
	}

	// Every image carries the Ignition applier, compiled from the source of this kubebake:
	// MainSHA256 pins that source, so an applier change is a lock change.
	ins = append(ins, Input{
		Name: ApplierArtifact, Kind: InputBinary, Source: Source{Type: SourceSelf},
		Package: kubebake.ApplierMain, MainSHA256: kubebake.ApplierSourceSHA256(), Arch: arch,
	})

	// Debian packages: "name" or "name=version" (an exact Debian pin, carried in Version).
	// A pinned entry wins over an unpinned one of the same name wherever it is listed.
	debs := map[string]string{}
	for _, p := range append(append(append(BootPackages(), r.Base.Kernel), r.Runtime.Packages...), r.Base.Packages...) {
		name, pin, _ := strings.Cut(p, "=")
		if name == "" {
			continue
		}
		if prev, ok := debs[name]; !ok || prev == "" {
			debs[name] = pin
		}
	}
	for name, pin := range debs {
		ins = append(ins, Input{
			Name: "deb/" + name, Kind: InputDeb, Source: Source{Type: SourceDeb}, Package: name, Version: pin,
			Suites: slices.Clone(r.Base.Suites), Mirror: r.Base.Mirror, Arch: arch,
		})
	}
	sort.SliceStable(ins, func(i, j int) bool { return ins[i].Name < ins[j].Name })
	return ins
}

// BakedImage is a container image the node image carries (nodes pull nothing), built at
// lock time from other locked artifacts; the lock pins it as "image/<name>".
type BakedImage struct {
	Name   string   // lock name: "image/pause"
	Inputs []string // the artifacts it is built from, by lock name
}

// BakedImages are the images the lock builds for a recipe: on containerd nodes the pod
// sandbox (pause) and busybox, both from Debian's busybox-static, CoreDNS when the recipe has
// cluster DNS, and each gomod image of images: from its program. (An archive image is an
// input of its own, not built: see Inputs.)
func (r *Recipe) BakedImages() []BakedImage {
	if !r.bakesImages() {
		return nil
	}
	out := []BakedImage{
		{Name: ImageArtifact("busybox"), Inputs: []string{BusyboxArtifact}},
		{Name: ImageArtifact("pause"), Inputs: []string{BusyboxArtifact}},
	}
	if r.DNS != nil {
		out = append(out, BakedImage{Name: ImageArtifact("coredns"), Inputs: []string{CoreDNSBinary}})
	}
	for _, img := range r.Images {
		if img.Archive == "" && img.Source != nil && img.Source.Type == SourceGoMod {
			out = append(out, BakedImage{Name: ImageArtifact(img.Name), Inputs: []string{ImageBinaryArtifact(img.Name)}})
		}
	}
	return out
}

// bakesImages says the kubelet runs pods through containerd's CRI, into which the baked
// images are imported at boot (docker beside it loads them from there).
func (r *Recipe) bakesImages() bool {
	return CRIOf(r.Runtime) == CRIServerContainerd
}

// ExpandURL fills a url source template: {version} (as locked, e.g. v1.35.4), {name} (the
// input's file name) and {arch}.
func ExpandURL(template, version, name, arch string) string {
	return strings.NewReplacer("{version}", version, "{name}", name, "{arch}", arch).Replace(template)
}
