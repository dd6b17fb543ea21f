package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/testimage"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
	"github.com/kubebake/kubebake/verify/internal/diskedit"
)

// TestVerifyLoneNodes proves the second embedded recipe, debian-13, through the weekly cycle
// a CI job runs: `kubebake rebase --locked` of the custom-role test recipe
// (customRoleRecipe: debian-13 plus role "edge" with the minion's units and an image of its
// own) builds it and boots it once per role, each node alone: a master configured by
// Ignition, which must settle and pass every check; a minion and an edge node with no
// master, which must wait for one (not fail). So one set of boots proves every role of a
// recipe with a custom role, the edge node's own marker, units and image (customImage), and
// rebase itself: the proven build is promoted with its changelog and verify report, and a
// second rebase of the same lock builds nothing (exit 3). The cluster test
// (TestVerifyCluster) proves the default recipe, debian-12, on joined nodes.
func TestVerifyLoneNodes(t *testing.T) {
	requireQEMU(t)
	file := customRoleRecipe(t)
	name := strings.TrimSuffix(filepath.Base(file), ".yaml")
	out := t.TempDir()
	rebase := func() int {
		t.Helper()
		err := testimage.Kubebake(90*time.Minute, "rebase", file, "--locked", "--out", out, "--format", "raw",
			"--userdata", UserDataCloudInit+","+RoleMaster+"="+UserDataIgnition)
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &exit):
			return exit.ExitCode()
		}
		t.Fatal(err)
		return -1
	}
	code := rebase()
	release := filepath.Join(out, name)
	if code == 12 { // verify failed: the report is in the candidate, never promoted
		release += ".candidate"
	}
	data, err := os.ReadFile(filepath.Join(release, "verify", "report.json"))
	if err != nil {
		t.Fatalf("rebase exited %d and left no verify report: %v", code, err)
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("%s/verify/report.json: %v", release, err)
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	t.Log("\n" + b.String())
	recordTimes(t, &rep)
	want := []string{RoleMaster + "/" + UserDataIgnition, RoleMinion + "/" + UserDataCloudInit, customRole + "/" + UserDataCloudInit}
	var got []string
	for _, r := range rep.Results {
		got = append(got, r.Role+"/"+r.UserData)
		for _, c := range Failed(r.Checks) {
			t.Errorf("%s: %s: expected %s, got %s", r.Name(), c.Name, c.Expected, c.Got)
		}
		if !r.Pass {
			logJournalTails(t, r)
		}
		if r.Role == customRole {
			requireCustomRoleChecks(t, r)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("rebase booted %v, want %v (master by Ignition, the rest by cloud-init)", got, want)
	}
	if code != 0 || !rep.Pass {
		t.Fatalf("rebase exited %d (want 0: built and proven), report pass %v", code, rep.Pass)
	}
	// The promoted release: its image, changelog and manifest of the lock built.
	if log, err := os.ReadFile(filepath.Join(release, "CHANGELOG.md")); err != nil || !strings.Contains(string(log), "First release") {
		t.Errorf("CHANGELOG.md of a first release: %v\n%s", err, log)
	}
	if _, err := os.Stat(filepath.Join(release, name+".raw")); err != nil {
		t.Errorf("the release's image: %v", err)
	}
	// The same lock again: nothing to build, nothing booted.
	if code := rebase(); code != 3 {
		t.Errorf("rebase of an unchanged lock exited %d, want 3 (nothing changed)", code)
	}
}

// defect is one broken promise planted in a copy of the image, and the checks that must fail.
type defect struct {
	name   string
	plant  func(ctx context.Context, e *diskedit.Editor, m *Manifest) error
	checks []string // checks that must fail
}

// TestVerifyDocker boots the embedded recipe with docker beside the kubelet,
// debian-12-docker, once per role, each node alone (cloud-init): both must pass every check,
// the docker checks among them (storage and cgroup drivers docker reports, its version as
// locked, docker run of a baked image offline, an empty docker group). Its defects are
// planted in TestVerifyCatchesDefects, which boots a broken copy of this image.
func TestVerifyDocker(t *testing.T) {
	image := dockerTestImage(t)
	rep, err := Run(context.Background(), Options{Image: image, Roles: []string{RoleMaster, RoleMinion}, UserData: []string{UserDataCloudInit},
		ArtifactsDir: filepath.Join(t.TempDir(), "artifacts")})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	t.Log("\n" + b.String())
	recordTimes(t, rep)
	for _, r := range rep.Results {
		for _, c := range Failed(r.Checks) {
			t.Errorf("%s: %s: expected %s, got %s", r.Name(), c.Name, c.Expected, c.Got)
		}
		if !r.Pass {
			logJournalTails(t, r)
		}
		names := map[string]bool{}
		for _, c := range r.Checks {
			names[c.Name] = true
		}
		for _, want := range []string{"docker/storage-driver", "docker/cgroup-driver", "docker/version", "docker/run", "docker/group", "image/busybox", "unit/docker.service/active"} {
			if !names[want] {
				t.Errorf("%s: no check %s", r.Name(), want)
			}
		}
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want master and minion", len(rep.Results))
	}
}

// logJournalTails logs the end of a failed node's serial log and journals.
func logJournalTails(t *testing.T, r Result) {
	t.Helper()
	for _, a := range r.Artifacts {
		if strings.HasSuffix(a, ".journal.txt") || strings.HasSuffix(a, "serial.log") {
			if data, err := os.ReadFile(a); err == nil {
				t.Logf("--- %s (tail)\n%s", a, tail(string(data), 40))
			}
		}
	}
}

// TestVerifyCatchesDefects plants several independent defects in one copy of the docker
// image (debian-12-docker: the default recipe's node with docker beside it, so its docker
// checks get their defects in the same boot), boots it as a minion, and asserts that each
// defect's checks fail, by name, while checks the defects do not touch still pass.
func TestVerifyCatchesDefects(t *testing.T) {
	image := dockerTestImage(t)
	target, err := ResolveTarget(image, "")
	if err != nil {
		t.Fatal(err)
	}
	if target.Manifest == "" {
		t.Fatal("the docker image has no manifest.json beside it")
	}
	m, err := LoadManifest(target.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	broken := filepath.Join(dir, "image.raw")
	if err := diskedit.RawCopy(ctx, target.Image, broken); err != nil {
		t.Fatal(err)
	}
	e, err := diskedit.Open(ctx, broken)
	if err != nil {
		t.Fatal(err)
	}
	spec := m.Spec(RoleMinion)
	kubectl := binaryNamed(spec, "kubectl")
	masterUnit := firstUnit(spec.Roles[RoleMaster], spec.Roles[RoleMinion])
	defects := []defect{
		{
			name: "sysctl drop-in removed",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				return removeAll(ctx, e, filesUnder(m, "/usr/lib/sysctl.d/"))
			},
			checks: append(prefixed("sysctl/", sortedKeys(spec.Sysctls)), "sysctl/"+recipes.InterfaceSysctlGlob("send_redirects")),
		},
		{
			name: "modules-load file removed",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				return removeAll(ctx, e, filesUnder(m, "/usr/lib/modules-load.d/"))
			},
			checks: suffixed(prefixed("module/", spec.Modules), "/loaded"),
		},
		{
			name: "kubectl of another version",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				script := "#!/bin/sh\necho 'Client Version: v1.0.0'\n"
				return e.WriteFile(ctx, kubectl.Path, []byte(script), 0o755)
			},
			checks: []string{"binary/" + kubectl.Name + "/sha256", "binary/" + kubectl.Name + "/version"},
		},
		{
			name: "master unit without its role condition",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				return e.Remove(ctx, "/usr/lib/systemd/system/"+masterUnit+".d/10-role.conf")
			},
			checks: []string{"unit/" + masterUnit + "/skipped"},
		},
		{
			name: "machine-id baked in",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				return e.WriteFile(ctx, "/etc/machine-id", []byte("0123456789abcdef0123456789abcdef\n"), 0o444)
			},
			checks: []string{"hygiene/machine-id"},
		},
		{
			name: "sshd allowing passwords",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				// sshd takes the first value it reads: 00- comes before the image's 01-kubebake.
				return e.WriteFile(ctx, "/etc/ssh/sshd_config.d/00-defect.conf", []byte("PasswordAuthentication yes\n"), 0o644)
			},
			checks: []string{"hygiene/sshd-keys-only"},
		},
		{
			name: "LLMNR responder on every address",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				// resolved reads its drop-ins in name order: 99- overrides the image's 90-kubebake.
				return e.WriteFile(ctx, path.Dir(roles.ResolvedConfigPath)+"/99-defect.conf", []byte("[Resolve]\nLLMNR=yes\n"), 0o644)
			},
			checks: []string{"security/listen-ports"},
		},
		{
			name: "kubelet configuration readable by everyone",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				data, err := e.ReadFile(ctx, roles.KubeletConfigPath)
				if err != nil {
					return err
				}
				return e.WriteFile(ctx, roles.KubeletConfigPath, data, 0o644)
			},
			checks: []string{"security/secret-file-modes"},
		},
		{
			name: "API server sandbox loosened by a drop-in",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				// Drop-ins apply in name order: 99- comes after the image's 20-sandbox.conf.
				return e.WriteFile(ctx, path.Dir(roles.SandboxDropInPath("kube-apiserver.service"))+"/99-defect.conf", []byte("[Service]\nProtectSystem=no\nNoNewPrivileges=no\n"), 0o644)
			},
			checks: []string{"security/sandbox/kube-apiserver.service"},
		},
		{
			// The pitfalls docker's defaults bring: devicemapper on loopback, and a cgroup
			// driver of its own beside systemd's.
			name: "docker on devicemapper with the cgroupfs driver",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				return e.WriteFile(ctx, "/etc/docker/daemon.json", []byte(`{"storage-driver": "devicemapper", "exec-opts": ["native.cgroupdriver=cgroupfs"]}`+"\n"), 0o644)
			},
			checks: []string{"docker/storage-driver", "docker/cgroup-driver"},
		},
		{
			name: "a member in the docker group",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				group, err := e.ReadFile(ctx, "/etc/group")
				if err != nil {
					return err
				}
				re := regexp.MustCompile(`(?m)^(docker:[^:]*:[0-9]+:)$`)
				if !re.Match(group) {
					return fmt.Errorf("/etc/group has no empty docker group:\n%s", group)
				}
				return e.WriteFile(ctx, "/etc/group", re.ReplaceAll(group, []byte("${1}nobody")), 0o644)
			},
			checks: []string{"docker/group"},
		},
		{
			name: "baked images never loaded into docker",
			plant: func(ctx context.Context, e *diskedit.Editor, m *Manifest) error {
				return e.WriteFile(ctx, roles.ScriptDir+"/docker-images", []byte("#!/bin/sh\nexit 0\n"), 0o755)
			},
			checks: []string{"docker/run"},
		},
	}
	for _, d := range defects {
		if d.plant == nil {
			continue
		}
		if err := d.plant(ctx, e, m); err != nil {
			t.Fatalf("planting %q: %v", d.name, err)
		}
	}
	// The bundle's secrets must not be readable by others nor appear in anything saved.
	bundle, err := cloudinit.NewBundle("kubebake-verify", cloudinit.BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The image runs another docker than its manifest (its lock) says.
	defects = append(defects, defect{name: "docker of another version than the lock", checks: []string{"docker/version"}})
	brokenManifest := filepath.Join(dir, "manifest.json")
	if err := writeManifestWith(target.Manifest, brokenManifest, DockerPackage, "20.10.5+dfsg1-1+deb11u2"); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, Options{
		Image: broken, Manifest: brokenManifest, Roles: []string{RoleMinion}, Bundle: bundle,
		ArtifactsDir: filepath.Join(dir, "artifacts"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	t.Log("\n" + b.String())
	if rep.Pass {
		t.Fatal("verify passed an image with defects")
	}
	byName := map[string]Check{}
	for _, c := range rep.Results[0].Checks {
		byName[c.Name] = c
	}
	for _, d := range defects {
		for _, name := range d.checks {
			c, ok := byName[name]
			switch {
			case !ok:
				t.Errorf("%s: no check %q in the report", d.name, name)
			case c.Pass:
				t.Errorf("%s: check %q passed (got %s)", d.name, name, c.Got)
			}
		}
	}
	// Untouched promises still hold: the failures are the defects', not a broken boot.
	for _, name := range []string{"role/marker", "userdata/cloud-init", "tool/conntrack", "cni/bridge", "hygiene/ssh-host-keys"} {
		if c, ok := byName[name]; !ok || !c.Pass {
			t.Errorf("untouched check %s: %+v", name, c)
		}
	}
	if len(rep.Results[0].Artifacts) == 0 {
		t.Error("no serial log or journal saved for the failures")
	}
	assertPrivateArtifacts(t, filepath.Join(dir, "artifacts"), bundleSecrets(bundle))
}

// writeManifestWith copies a manifest with one package's version changed.
func writeManifestWith(from, to, pkg, version string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	found := false
	pkgs, _ := doc["packages"].([]any)
	for _, p := range pkgs {
		if p, ok := p.(map[string]any); ok && p["name"] == pkg {
			p["version"], found = version, true
		}
	}
	if !found {
		return fmt.Errorf("%s lists no package %s", from, pkg)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(to, out, 0o644)
}

// assertPrivateArtifacts wants every saved failure artifact 0600 in 0700 folders, holding
// none of the bundle's secrets.
func assertPrivateArtifacts(t *testing.T, dir string, secrets []string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && info.Mode().Perm() != 0o700:
			t.Errorf("%s: folder mode %o, want 700", p, info.Mode().Perm())
		case !d.IsDir() && info.Mode().Perm() != 0o600:
			t.Errorf("%s: file mode %o, want 600", p, info.Mode().Perm())
		case !d.IsDir():
			files++
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, s := range secrets {
				if strings.Contains(string(data), s) {
					t.Errorf("%s holds a secret of the bundle", p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failure artifacts: %d files, all 0600 in 0700 folders, none holding a bundle secret", files)
}

func binaryNamed(s Spec, name string) Binary {
	for _, b := range s.Binaries {
		if b.Name == name {
			return b
		}
	}
	return Binary{Name: name, Path: "/usr/bin/" + name}
}

// firstUnit is the first unit of units that is not also in others.
func firstUnit(units, others []string) string {
	for _, u := range units {
		found := false
		for _, o := range others {
			found = found || o == u
		}
		if !found {
			return u
		}
	}
	return ""
}

func filesUnder(m *Manifest, dir string) []string {
	var out []string
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, dir) && (f.Type == "" || f.Type == "file") {
			out = append(out, f.Path)
		}
	}
	sort.Strings(out)
	return out
}

func removeAll(ctx context.Context, e *diskedit.Editor, paths []string) error {
	if len(paths) == 0 {
		return fmt.Errorf("the manifest lists no such file")
	}
	for _, p := range paths {
		if err := e.Remove(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func prefixed(prefix string, xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = prefix + x
	}
	return out
}

func suffixed(xs []string, suffix string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x + suffix
	}
	return out
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// recordTimes appends each node's boot-to-verdict time to $KUBEBAKE_VERIFY_TIMES (one line
// per node), for scripts/bench-verify.sh's medians.
func recordTimes(t *testing.T, rep *Report) {
	for _, r := range rep.Results {
		t.Logf("%s: %.1fs boot to verdict (%s)", r.Name(), r.Seconds, r.Accel)
	}
	f := os.Getenv("KUBEBAKE_VERIFY_TIMES")
	if f == "" {
		return
	}
	fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Log(err)
		return
	}
	defer fh.Close()
	for _, r := range rep.Results {
		fmt.Fprintf(fh, "%s %s %s %.1f", time.Now().UTC().Format(time.RFC3339), r.Name(), r.Accel, r.Seconds)
		for _, s := range r.Stages {
			fmt.Fprintf(fh, " %s=%.1f", s.Name, s.Seconds)
		}
		fmt.Fprintln(fh)
	}
}

// requireCustomRoleChecks: the custom-role node was judged as its own role: its marker alone,
// its units (the minion's) run, the master's are skipped, and the minion's marker is absent;
// and the recipe's own image was checked in containerd beside kubebake's.
func requireCustomRoleChecks(t *testing.T, r Result) {
	t.Helper()
	want := map[string]bool{"role/marker": false, "unit/kubebake-minion-join.service/active": false,
		"unit/kubelet.service/active": false, "unit/kube-apiserver.service/skipped": false, "unit/etcd.service/skipped": false,
		"image/" + customImage: false, "image/busybox": false}
	for _, c := range r.Checks {
		if _, ok := want[c.Name]; ok {
			want[c.Name] = true
		}
		if c.Name == "role/marker" && !strings.Contains(c.Expected, "kubernetes-"+customRole) {
			t.Errorf("role/marker expects %q, not the custom role's marker", c.Expected)
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("no check %s on the %s node", name, customRole)
		}
	}
}
