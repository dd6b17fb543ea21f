package verify

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

func dockerSpec() Spec {
	s := imagesSpec()
	s.Runtime, s.Role = recipes.RuntimeDocker, RoleMinion
	s.Roles[RoleMinion] = append(s.Roles[RoleMinion], "docker.service")
	s.Images = append(s.Images, Image{Name: "busybox", Ref: "kubebake.local/busybox:1.35.0", Digest: "sha256:" + strings.Repeat("3", 64)})
	s.Packages = []Package{{Name: DockerPackage, Version: "20.10.24+dfsg1-1+deb12u1+b6"}}
	return s
}

// The docker checks run their real scripts against a fake docker (a shell script printing
// what docker 20.10 prints) and getent: each defect fails its check by name.
func TestDockerProbes(t *testing.T) {
	ps := Probes(dockerSpec())
	bin, kb := t.TempDir(), t.TempDir()
	run := func(p Probe, docker, group string) Output {
		t.Helper()
		os.WriteFile(filepath.Join(bin, "docker"), []byte("#!/bin/sh\n"+docker), 0o755)
		os.WriteFile(filepath.Join(bin, "getent"), []byte("#!/bin/sh\necho '"+group+"'\n"), 0o755)
		env := append(os.Environ(), "KB="+kb, "PATH="+bin+":"+os.Getenv("PATH"))
		if p.Prelude != "" {
			pre := exec.Command("sh", "-c", p.Prelude)
			pre.Env = env
			if out, err := pre.CombinedOutput(); err != nil {
				t.Fatalf("%s prelude: %v\n%s", p.Name, err, out)
			}
		}
		cmd := exec.Command("sh", "-c", p.Script)
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		return Output{Text: string(out)}
	}
	// A docker that answers as configured; the fields come from --format.
	docker := func(driver, cgroup, version string) string {
		return `case "$1" in
info) echo "driver=` + driver + `"; echo "cgroup=` + cgroup + `";;
version) echo "server=` + version + `";;
run) shift; echo "$@" >"$KB/run-args"; [ -n "$FAIL_RUN" ] && { echo "Unable to find image locally" >&2; exit 125; }; echo kubebake-docker-run;;
esac
`
	}
	good := docker("overlay2", "systemd", "20.10.24+dfsg1")
	down := "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1\n"
	for _, c := range []struct {
		check, docker, group string
		pass                 bool
		got                  string
	}{
		{"docker/storage-driver", good, "docker:x:998:", true, "overlay2"},
		{"docker/storage-driver", docker("devicemapper", "systemd", "20.10.24+dfsg1"), "docker:x:998:", false, "devicemapper"},
		{"docker/storage-driver", down, "docker:x:998:", false, "docker did not answer (exit 1): Cannot connect"},
		{"docker/cgroup-driver", good, "docker:x:998:", true, "systemd"},
		{"docker/cgroup-driver", docker("overlay2", "cgroupfs", "20.10.24+dfsg1"), "docker:x:998:", false, "cgroupfs"},
		{"docker/version", good, "docker:x:998:", true, "20.10.24+dfsg1"},
		{"docker/version", docker("overlay2", "systemd", "20.10.24"), "docker:x:998:", true, "20.10.24"},
		{"docker/version", docker("overlay2", "systemd", "26.1.5+dfsg1"), "docker:x:998:", false, "26.1.5+dfsg1"},
		{"docker/group", good, "docker:x:998:", true, "no members"},
		{"docker/group", good, "docker:x:998:admin,ci", false, "members: admin,ci"},
		{"docker/run", good, "docker:x:998:", true, "ran, exit 0"},
		{"docker/run", "FAIL_RUN=1\n" + good, "docker:x:998:", false, "exit 125: Unable to find image locally"},
	} {
		got, pass := probeByName(t, ps, c.check).Eval(run(probeByName(t, ps, c.check), c.docker, c.group))
		if pass != c.pass || !strings.Contains(got, c.got) {
			t.Errorf("%s: got %q pass=%v, want %q pass=%v", c.check, got, pass, c.got, c.pass)
		}
	}
	// docker run never pulls and has no network: a baked image or nothing.
	args, _ := os.ReadFile(filepath.Join(kb, "run-args"))
	if !strings.Contains(string(args), "--network none --pull never kubebake.local/busybox:1.35.0") {
		t.Errorf("docker run args: %s", args)
	}
	if v := probeByName(t, ps, "docker/version"); !strings.Contains(v.Expected, "20.10.24+dfsg1 (docker.io 20.10.24+dfsg1-1+deb12u1+b6 as locked)") {
		t.Errorf("docker/version expects %q", v.Expected)
	}

	// Not on a role without docker, nor under containerd.
	for _, s := range []Spec{
		func() Spec { s := dockerSpec(); s.Role = RoleMaster; return s }(),
		func() Spec { s := dockerSpec(); s.Runtime = recipes.RuntimeContainerd; return s }(),
	} {
		for _, p := range Probes(s) {
			if strings.HasPrefix(p.Name, "docker/") {
				t.Errorf("role %s runtime %s: docker check %s", s.Role, s.Runtime, p.Name)
			}
		}
	}
}
