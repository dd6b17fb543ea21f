package roles

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// customRoleRecipe adds a role "edge" that runs a kubelet and kube-proxy (and so, through
// their dependencies, the join and the runtime), and lets the master run kube-proxy too.
func customRoleRecipe() *recipes.Recipe {
	r := goRecipe("go-custom", "bookworm", recipes.RuntimeContainerd)
	r.Roles = append(r.Roles, recipes.Role{Name: "edge", Units: []string{"kubelet.service", "kube-proxy.service"}})
	return r
}

// conditions parses a role drop-in: the marker paths of its ConditionPathExists= lines and
// whether they are triggering ("|").
func conditions(t *testing.T, l *Layer, unit string) (markers []string, triggering bool, after bool) {
	t.Helper()
	f, ok := l.File(DropInPath(unit))
	if !ok {
		return nil, false, false
	}
	for _, line := range strings.Split(string(f.Content), "\n") {
		if v, ok := strings.CutPrefix(line, "ConditionPathExists="); ok {
			if v2, ok := strings.CutPrefix(v, "|"); ok {
				triggering = true
				v = v2
			}
			markers = append(markers, v)
		}
		if line == "After="+RolesTarget {
			after = true
		}
	}
	return markers, triggering, after
}

func TestConditions(t *testing.T) {
	for _, r := range []*recipes.Recipe{
		goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd),
		goRecipe("go-docker", "bookworm", recipes.RuntimeDocker),
		goRecipe("go-docker-cri", "bookworm", recipes.SetupDockerCRIDockerd),
	} {
		t.Run(r.Name, func(t *testing.T) {
			l := mustRender(t, r, fakeLock(r))
			master := append(append([]string(nil), recipes.MasterUnits...), MasterPKIUnit, recipes.CSRApproverUnit)
			// Both roles are nodes of the pod network: the node units carry both markers.
			setup := recipes.SetupOf(r.Runtime)
			node := append([]string{"kubelet.service", "kube-proxy.service", "kubebake-minion-join.service", recipes.JoinCleanupUnit, NodeEnvUnit}, recipes.RuntimeUnits(setup)...)
			if recipes.CRIOf(r.Runtime) == recipes.CRIServerContainerd {
				node = append(node, ImagesUnit)
			}
			if setup == recipes.SetupDocker {
				node = append(node, recipes.DockerImagesUnit)
			}
			for _, u := range master {
				m, trig, after := conditions(t, l, u)
				if !reflect.DeepEqual(m, []string{"/etc/sysconfig/kubernetes-master"}) || trig || !after {
					t.Errorf("%s: conditions %v (triggering %v, after target %v), want the master marker only, after %s", u, m, trig, after, RolesTarget)
				}
			}
			for _, u := range node {
				m, trig, after := conditions(t, l, u)
				if !reflect.DeepEqual(m, []string{"/etc/sysconfig/kubernetes-master", "/etc/sysconfig/kubernetes-minion"}) || !trig || !after {
					t.Errorf("%s: conditions %v (triggering %v, after target %v), want the master or minion marker", u, m, trig, after)
				}
			}
			for _, u := range []string{RolesTarget, IgnitionUnit} {
				if _, ok := l.File(DropInPath(u)); ok {
					t.Errorf("shared unit %s has a role drop-in", u)
				}
				f, _ := l.File(UnitDir + "/" + u)
				if strings.Contains(string(f.Content), "ConditionPathExists=/etc/sysconfig") {
					t.Errorf("shared unit %s has a role condition", u)
				}
			}
			// Every drop-in in the layer belongs to a master or minion unit.
			all := append(append([]string(nil), master...), node...)
			for _, f := range l.Files {
				if strings.HasSuffix(f.Path, "/"+RoleDropInName) {
					unit := strings.TrimSuffix(strings.TrimPrefix(f.Path, UnitDir+"/"), ".d/"+RoleDropInName)
					if !isKnown(unit, all) {
						t.Errorf("unexpected role drop-in %s", f.Path)
					}
				}
			}
			// Listed role units are enabled in kubebake-roles.target; the target and the
			// Ignition applier in multi-user.target.
			for _, role := range r.Roles {
				for _, u := range role.Units {
					link := EnableDir + "/" + RolesTarget + ".wants/" + u
					if f, ok := l.File(link); !ok || f.Type != TypeSymlink || f.Target != UnitDir+"/"+u {
						t.Errorf("%s: no enablement link %s", u, link)
					}
				}
			}
			for _, u := range []string{RolesTarget, IgnitionUnit} {
				if _, ok := l.File(EnableDir + "/multi-user.target.wants/" + u); !ok {
					t.Errorf("%s is not enabled in multi-user.target", u)
				}
			}
			// Our role units order themselves after the target and are wanted by it.
			for _, u := range append(master, node...) {
				f, ok := l.File(UnitDir + "/" + u)
				if !ok {
					continue // a Debian unit
				}
				if !regexp.MustCompile(`(?m)^After=.*\b` + regexp.QuoteMeta(RolesTarget)).Match(f.Content) {
					t.Errorf("%s is not After=%s", u, RolesTarget)
				}
			}
		})
	}
}

// TestMarkerRace: the role target waits for every marker writer, and the Ignition applier
// runs before cloud-init and the target.
func TestMarkerRace(t *testing.T) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	l := mustRender(t, r, fakeLock(r))
	target, _ := l.File(UnitDir + "/" + RolesTarget)
	for _, writer := range []string{"cloud-init.service", "cloud-config.service", IgnitionUnit} {
		if !regexp.MustCompile(`(?m)^After=.*\b` + regexp.QuoteMeta(writer)).Match(target.Content) {
			t.Errorf("%s is not After=%s", RolesTarget, writer)
		}
	}
	if !strings.Contains(string(target.Content), "WantedBy=multi-user.target") {
		t.Errorf("%s is not WantedBy=multi-user.target", RolesTarget)
	}
	ign, _ := l.File(UnitDir + "/" + IgnitionUnit)
	for _, s := range []string{"Type=oneshot", "ExecStart=" + IgnitionPath} {
		if !strings.Contains(string(ign.Content), s) {
			t.Errorf("%s lacks %s", IgnitionUnit, s)
		}
	}
	for _, later := range []string{"cloud-init.service", RolesTarget} {
		if !regexp.MustCompile(`(?m)^Before=.*\b` + regexp.QuoteMeta(later)).Match(ign.Content) {
			t.Errorf("%s is not Before=%s", IgnitionUnit, later)
		}
	}
}

func TestCustomRole(t *testing.T) {
	r := customRoleRecipe()
	l := mustRender(t, r, fakeLock(r))
	for unit, want := range map[string][]string{
		"kubelet.service":              {"/etc/sysconfig/kubernetes-master", "/etc/sysconfig/kubernetes-minion", "/etc/sysconfig/kubernetes-edge"},
		"kube-proxy.service":           {"/etc/sysconfig/kubernetes-master", "/etc/sysconfig/kubernetes-minion", "/etc/sysconfig/kubernetes-edge"},
		"kubebake-minion-join.service": {"/etc/sysconfig/kubernetes-master", "/etc/sysconfig/kubernetes-minion", "/etc/sysconfig/kubernetes-edge"}, // needed by kubelet
		"containerd.service":           {"/etc/sysconfig/kubernetes-master", "/etc/sysconfig/kubernetes-minion", "/etc/sysconfig/kubernetes-edge"},
		"etcd.service":                 {"/etc/sysconfig/kubernetes-master"},
	} {
		got, trig, _ := conditions(t, l, unit)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: markers %v, want %v", unit, got, want)
		}
		if trig != (len(want) > 1) {
			t.Errorf("%s: triggering conditions %v with %d roles", unit, trig, len(want))
		}
	}
	// A dependency is enabled only by the unit that needs it.
	if _, ok := l.File(EnableDir + "/" + RolesTarget + ".wants/" + MasterPKIUnit); ok {
		t.Errorf("%s is enabled; it is a dependency only", MasterPKIUnit)
	}
}

func TestRenderErrors(t *testing.T) {
	cases := []struct {
		name   string
		change func(r *recipes.Recipe, l *recipes.Lock)
		want   string
	}{
		{"unknown unit", func(r *recipes.Recipe, _ *recipes.Lock) { r.Roles[1].Units[2] = "kubelett.service" },
			`roles[1].units[2]: unknown unit "kubelett.service"`},
		{"unit without suffix", func(r *recipes.Recipe, _ *recipes.Lock) { r.Roles[0].Units[0] = "etcd" },
			`roles[0].units[0]: unknown unit "etcd"; did you mean "etcd.service"?`},
		{"other runtime's unit", func(r *recipes.Recipe, _ *recipes.Lock) { r.Roles[1].Units[0] = "docker.service" },
			`roles[1].units[0]: unit docker.service belongs to runtime docker or docker+cri-dockerd, but this recipe's runtime is containerd`},
		{"dependency is not listable", func(r *recipes.Recipe, _ *recipes.Lock) { r.Roles[0].Units[0] = MasterPKIUnit },
			`roles[0].units[0]: unknown unit "kubebake-master-pki.service"`},
		{"bad role name", func(r *recipes.Recipe, _ *recipes.Lock) { r.Roles[1].Name = "Big Minion" },
			`roles[1].name: "Big Minion" is not a role name`},
		{"duplicate role", func(r *recipes.Recipe, _ *recipes.Lock) { r.Roles[1].Name = "master" },
			`roles[1].name: role "master" is defined twice`},
		{"duplicate unit", func(r *recipes.Recipe, _ *recipes.Lock) { r.Roles[0].Units[1] = r.Roles[0].Units[0] },
			`roles[0].units[1]: unit etcd.service is listed twice in role "master"`},
		{"no roles", func(r *recipes.Recipe, _ *recipes.Lock) { r.Roles = nil }, `roles: no roles`},
		{"devicemapper", func(r *recipes.Recipe, _ *recipes.Lock) { r.Storage.Driver = "devicemapper" },
			`storage.driver: "devicemapper" with runtime containerd: only overlayfs is accepted`},
		{"artifact not locked", func(_ *recipes.Recipe, l *recipes.Lock) {
			l.Artifacts = slices.DeleteFunc(l.Artifacts, func(a recipes.LockedArtifact) bool { return a.Name == "cni/bridge" })
		},
			`the lock has no artifact "cni/bridge"`},
		{"missing component", func(r *recipes.Recipe, _ *recipes.Lock) { r.Kubernetes.Components = r.Kubernetes.Components[1:] },
			`kubernetes.components: unit kubelet.service (roles master, minion) runs kubelet, which the recipe does not install`},
		{"missing CNI plugin", func(r *recipes.Recipe, _ *recipes.Lock) { r.CNI.Plugins = []string{"bridge", "host-local", "portmap"} },
			`cni.plugins: lacks loopback`},
		{"bad pod CIDR", func(r *recipes.Recipe, _ *recipes.Lock) { r.Network.PodCIDR = "10.244.0.1/16" },
			`network.podCIDR: 10.244.0.1/16 has host bits set`},
		{"lock of another recipe", func(_ *recipes.Recipe, l *recipes.Lock) { l.Recipe = "other" },
			`the lock is for recipe "other"`},
		{"bad sysctl value", func(r *recipes.Recipe, _ *recipes.Lock) { r.Sysctls["net.ipv4.ip_forward"] = "1\nkernel.x = 2" },
			`sysctls["net.ipv4.ip_forward"]: value`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
			l := fakeLock(r)
			c.change(r, l)
			_, err := Render(r, l)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Render: %v, want an error containing %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "recipe go-containerd: ") && !strings.HasPrefix(err.Error(), "the lock") {
				t.Errorf("error does not name the recipe: %v", err)
			}
		})
	}
}

func TestLookupRole(t *testing.T) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	if role, err := LookupRole(r, "minion"); err != nil || role.Name != "minion" {
		t.Fatalf("LookupRole(minion) = %v, %v", role, err)
	}
	_, err := LookupRole(r, "worker")
	if err == nil || !strings.Contains(err.Error(), `recipe go-containerd has no role "worker"; its roles (field roles) are: master, minion`) {
		t.Fatalf("LookupRole(worker): %v", err)
	}
}

func TestDeterminism(t *testing.T) {
	for _, r := range []*recipes.Recipe{
		goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd),
		goRecipe("go-docker", "trixie", recipes.RuntimeDocker),
		goRecipe("go-docker-cri", "trixie", recipes.SetupDockerCRIDockerd),
		customRoleRecipe(),
	} {
		a, b := mustRender(t, r, fakeLock(r)), mustRender(t, r, fakeLock(r))
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: two renders differ", r.Name)
		}
		mtime := time.Unix(fakeLock(r).SourceDateEpoch, 0)
		var ta, tb bytes.Buffer
		if err := a.WriteTar(&ta, fakeOpen, mtime); err != nil {
			t.Fatal(err)
		}
		if err := b.WriteTar(&tb, fakeOpen, mtime.Add(300*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ta.Bytes(), tb.Bytes()) {
			t.Fatalf("%s: two tars differ", r.Name)
		}
		checkTar(t, a, ta.Bytes(), mtime)
	}
}

// checkTar reads a layer tar back: same entries in layer order, fixed mtime, numeric owners
// only, USTAR headers, artifact contents.
func checkTar(t *testing.T, l *Layer, data []byte, mtime time.Time) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	for i := 0; ; i++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if i != len(l.Files) {
				t.Fatalf("tar has %d entries, layer %d", i, len(l.Files))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		f := l.Files[i]
		name := strings.TrimPrefix(f.Path, "/")
		if f.Type == TypeDir {
			name += "/"
		}
		if h.Name != name {
			t.Fatalf("entry %d is %s, want %s", i, h.Name, name)
		}
		if !h.ModTime.Equal(mtime) || h.Uname != "" || h.Gname != "" || h.Uid != f.UID || h.Gid != f.GID || h.Format != tar.FormatUSTAR || len(h.PAXRecords) > 0 {
			t.Errorf("%s: header %+v", h.Name, h)
		}
		if f.Type == TypeFile {
			body, _ := io.ReadAll(tr)
			want := f.Content
			if f.Artifact != "" {
				want = fakeBlob(f.Artifact)
			}
			if !bytes.Equal(body, want) {
				t.Errorf("%s: content differs", h.Name)
			}
			if h.Mode != int64(f.Mode) {
				t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, f.Mode)
			}
		}
	}
}

func TestWriteTarChecksArtifacts(t *testing.T) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	l := mustRender(t, r, fakeLock(r))
	corrupt := func(name string) (io.ReadCloser, error) {
		b := fakeBlob(name)
		if name == "kubelet" {
			b[len(b)-2] = 'X'
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	err := l.WriteTar(io.Discard, corrupt, time.Unix(0, 0))
	if err == nil || !strings.Contains(err.Error(), "artifact kubelet: blob sha256") {
		t.Fatalf("WriteTar with a corrupt blob: %v", err)
	}
	short := func(name string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(fakeBlob(name)[:3])), nil
	}
	if err := l.WriteTar(io.Discard, short, time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), "the lock says") {
		t.Fatalf("WriteTar with a short blob: %v", err)
	}
	unlocked := mustRender(t, r, nil)
	if err := unlocked.WriteTar(io.Discard, fakeOpen, time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), "rendered without a lock") {
		t.Fatalf("WriteTar of an unlocked layer: %v", err)
	}
}

// TestNoSecrets: nothing that looks like a private key, a bootstrap token or a certificate
// is in the layer; those come from user-data only.
func TestNoSecrets(t *testing.T) {
	token := regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`)
	for _, r := range []*recipes.Recipe{
		goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd),
		goRecipe("go-docker", "bookworm", recipes.RuntimeDocker),
		goRecipe("go-docker-cri", "bookworm", recipes.SetupDockerCRIDockerd),
	} {
		l := mustRender(t, r, fakeLock(r))
		var buf bytes.Buffer
		if err := l.WriteTar(&buf, fakeOpen, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
		for _, f := range l.Files {
			c := string(f.Content)
			if strings.Contains(c, "PRIVATE KEY") || token.MatchString(c) || regexp.MustCompile(`MII[A-Za-z0-9+/]{40}`).MatchString(c) {
				t.Errorf("%s: %s looks like it holds secret material", r.Name, f.Path)
			}
			if strings.HasPrefix(f.Path, "/etc/kubernetes/pki") || f.Path == "/etc/kubebake/cluster.env" || strings.HasSuffix(f.Path, ".key") {
				t.Errorf("%s: the layer holds %s, which only user-data may write", r.Name, f.Path)
			}
		}
		if bytes.Contains(buf.Bytes(), []byte("PRIVATE KEY")) {
			t.Errorf("%s: the layer tar holds a private key", r.Name)
		}
	}
}

func TestUnlockedRender(t *testing.T) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	l := mustRender(t, r, nil)
	f, ok := l.File("/usr/bin/kubelet")
	if !ok || f.Artifact != "kubelet" || f.SHA256 != "" {
		t.Fatalf("unlocked kubelet entry: %+v", f)
	}
	rel, _ := l.File(ReleasePath)
	if !strings.Contains(string(rel.Content), "KUBEBAKE_LOCK_SHA256=unlocked\n") || !strings.Contains(string(rel.Content), "KUBERNETES_VERSION=v1.35\n") {
		t.Fatalf("unlocked release file:\n%s", rel.Content)
	}
}

func TestReleaseFile(t *testing.T) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	lock := fakeLock(r)
	l := mustRender(t, r, lock)
	rel, _ := l.File(ReleasePath)
	for _, want := range []string{
		"KUBEBAKE_RECIPE=go-containerd\n", "KUBEBAKE_LOCK_SHA256=" + recipes.LockHash(lock) + "\n",
		"KUBERNETES_VERSION=v1.35.4\n", "ETCD_VERSION=v3.6.5\n", "CNI_VERSION=v1.9.1\n",
		"CONTAINERD_VERSION=1.0-1+deb12u1\n", "RUNC_VERSION=1.0-1+deb12u1\n", "KUBEBAKE_SOURCE_DATE_EPOCH=1767225600\n",
	} {
		if !strings.Contains(string(rel.Content), want) {
			t.Errorf("release file lacks %q:\n%s", want, rel.Content)
		}
	}
}

func TestLayerShape(t *testing.T) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	r.Network.IPv6 = true
	r.Network.PodCIDR = "10.244.0.0/16,fd00:10:244::/56"
	l := mustRender(t, r, fakeLock(r))
	seen := map[string]bool{}
	for i, f := range l.Files {
		if i > 0 && l.Files[i-1].Path >= f.Path {
			t.Fatalf("layer not sorted at %s", f.Path)
		}
		if p := parentDir(f.Path); p != "/" && !seen[p] {
			t.Fatalf("%s comes before its parent directory %s", f.Path, p)
		}
		seen[f.Path] = true
		if f.UID != 0 || f.GID != 0 {
			t.Errorf("%s is not owned by root", f.Path)
		}
	}
	for _, p := range []string{"/usr/bin/kubelet", "/usr/bin/etcd", "/usr/bin/etcdctl", "/opt/cni/bin/loopback", "/etc/sysconfig"} {
		if _, ok := l.File(p); !ok {
			t.Errorf("layer lacks %s", p)
		}
	}
	for _, p := range []string{"/lib", "/bin", "/sbin", "/usr/lib/systemd/system/containerd.service"} {
		if _, ok := l.File(p); ok {
			t.Errorf("layer has %s (it must not replace the rootfs's %s)", p, p)
		}
	}
	cni, _ := l.File(CNIConfigPath)
	for _, want := range []string{`"subnet": "10.244.0.0/16"`, `"subnet": "fd00:10:244::/56"`, `"dst": "::/0"`, `"type": "portmap"`} {
		if !strings.Contains(string(cni.Content), want) {
			t.Errorf("CNI config lacks %s:\n%s", want, cni.Content)
		}
	}
	ctr, _ := l.File("/etc/containerd/config.toml")
	for _, want := range []string{`snapshotter = "overlayfs"`, "SystemdCgroup = true", `sandbox_image = "registry.k8s.io/pause:3.10"`, "version = 2"} {
		if !strings.Contains(string(ctr.Content), want) {
			t.Errorf("containerd config lacks %s", want)
		}
	}
	sysctl, _ := l.File(SysctlPath)
	if !strings.Contains(string(sysctl.Content), "net.bridge.bridge-nf-call-ip6tables = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.conf.all.rp_filter = 2\nnet.ipv4.conf.all.send_redirects = 0\nnet.ipv4.conf.default.send_redirects = 0\nnet.ipv4.ip_forward = 1\n") ||
		!strings.HasSuffix(string(sysctl.Content), "\nnet.ipv4.conf.*.send_redirects = 0\n") {
		t.Errorf("sysctl file not sorted or incomplete:\n%s", sysctl.Content)
	}
	mods, _ := l.File(ModulesPath)
	if !strings.HasSuffix(string(mods.Content), "\noverlay\nbr_netfilter\n") {
		t.Errorf("modules file:\n%s", mods.Content)
	}
	kubelet, _ := l.File("/etc/kubernetes/kubelet.yaml")
	if !strings.Contains(string(kubelet.Content), "clusterDNS:\n- 10.96.0.10\n") {
		t.Errorf("kubelet config DNS:\n%s", kubelet.Content)
	}

	// docker beside the kubelet on containerd's CRI: containerd's config and socket, docker on
	// the same containerd, the baked images loaded into docker too.
	dc := goRecipe("go-docker", "bookworm", recipes.RuntimeDocker)
	dcl := mustRender(t, dc, fakeLock(dc))
	daemon, ok := dcl.File("/etc/docker/daemon.json")
	for _, want := range []string{`"storage-driver": "overlay2"`, `"native.cgroupdriver=systemd"`, `"live-restore": true`, `"max-file": "3"`} {
		if !ok || !strings.Contains(string(daemon.Content), want) {
			t.Errorf("docker daemon.json lacks %s:\n%s", want, daemon.Content)
		}
	}
	if c, ok := dcl.File("/etc/containerd/config.toml"); !ok || !strings.Contains(string(c.Content), `snapshotter = "overlayfs"`) {
		t.Errorf("docker beside containerd: containerd config:\n%s", c.Content)
	}
	if k, _ := dcl.File("/etc/kubernetes/kubelet.yaml"); !strings.Contains(string(k.Content), "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock") {
		t.Errorf("docker beside containerd: kubelet config:\n%s", k.Content)
	}
	for _, p := range []string{ScriptDir + "/docker-images", ScriptDir + "/import-images", UnitDir + "/" + recipes.DockerImagesUnit, EnableDir + "/" + RolesTarget + ".wants/" + recipes.DockerImagesUnit} {
		if _, ok := dcl.File(p); !ok {
			t.Errorf("docker beside containerd: no %s", p)
		}
	}
	if _, ok := dcl.File("/usr/bin/cri-dockerd"); ok {
		t.Errorf("docker beside containerd has cri-dockerd")
	}

	// docker behind cri-dockerd.
	d := goRecipe("go-docker-cri", "bookworm", recipes.SetupDockerCRIDockerd)
	dl := mustRender(t, d, fakeLock(d))
	daemon, ok = dl.File("/etc/docker/daemon.json")
	if !ok || !strings.Contains(string(daemon.Content), `"storage-driver": "overlay2"`) || !strings.Contains(string(daemon.Content), `"native.cgroupdriver=systemd"`) {
		t.Errorf("docker daemon.json:\n%s", daemon.Content)
	}
	if _, ok := dl.File("/etc/containerd/config.toml"); ok {
		t.Errorf("docker layer has a containerd CRI config")
	}
	if k, _ := dl.File("/etc/kubernetes/kubelet.yaml"); !strings.Contains(string(k.Content), "containerRuntimeEndpoint: unix:///run/cri-dockerd.sock") {
		t.Errorf("docker kubelet config:\n%s", k.Content)
	}
}

// TestJoinTokenNamesAgree: the CSR approver (Python, no template values) uses recipes' join
// token group and node label, as lib.sh (templated) and "kubebake cluster token" do.
func TestJoinTokenNamesAgree(t *testing.T) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	l := mustRender(t, r, fakeLock(r))
	approver, ok := l.File(ScriptDir + "/csr-approver")
	if !ok {
		t.Fatal("no csr-approver in the layer")
	}
	lib, _ := l.File(ScriptDir + "/lib.sh")
	for file, wants := range map[string][]string{
		string(approver.Content): {`JOIN_GROUP = "` + recipes.JoinTokenGroup + `"`, `NODE_LABEL = "` + recipes.JoinTokenNodeLabel + `"`},
		string(lib.Content):      {"KUBEBAKE_JOIN_GROUP=" + recipes.JoinTokenGroup + "\n", "KUBEBAKE_NODE_LABEL=" + recipes.JoinTokenNodeLabel + "\n"},
	} {
		for _, want := range wants {
			if !strings.Contains(file, want) {
				t.Errorf("%q missing from:\n%.300s", want, file)
			}
		}
	}
}
