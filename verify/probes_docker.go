package verify

import (
	"slices"
	"strings"

	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/recipes"
)

// Checks of docker as a recipe runs it (runtime.name docker), on every role that starts
// docker.service: the storage and cgroup drivers docker reports (not just what daemon.json
// says: docker ignores a setting it cannot use), the version the lock pinned, a container of
// a baked image run offline, and an empty docker group (membership is root on the node).

// DockerPackage is the Debian package whose version docker must report.
const DockerPackage = "docker.io"

// dockerPrelude asks the daemon once for what the docker checks judge.
const dockerPrelude = `{ timeout 180 docker info --format 'driver={{.Driver}}
cgroup={{.CgroupDriver}}' 2>&1; timeout 60 docker version --format 'server={{.Server.Version}}' 2>&1; } >"$KB/docker" || echo "docker-failed=$?" >>"$KB/docker"`

// runsDocker reports whether the node's role starts docker.
func (s Spec) runsDocker() bool {
	return s.Runtime == recipes.RuntimeDocker && slices.Contains(s.Roles[s.Role], "docker.service")
}

// dockerProbes are the docker checks of a node that runs docker.
func (s Spec) dockerProbes() []Probe {
	var version string
	for _, p := range s.Packages {
		if p.Name == DockerPackage {
			version = p.Version
		}
	}
	ps := []Probe{
		dockerInfoProbe("docker/storage-driver", "driver", recipes.StorageDriverFor(recipes.RuntimeDocker)),
		dockerInfoProbe("docker/cgroup-driver", "cgroup", recipes.DefaultCgroupDriver),
		dockerVersionProbe(version),
		dockerGroupProbe(),
	}
	for _, img := range s.Images {
		if img.Name == recipes.BusyboxArtifact {
			ps = append(ps, dockerRunProbe(img.Ref))
		}
	}
	return ps
}

// dockerFacts reads the prelude's answer: key=value lines, or why there is none.
func dockerFacts(o Output) (map[string]string, string) {
	kv := o.KV()
	if f := kv["docker-failed"]; f != "" {
		// The error, not the empty fields docker printed before it.
		why := ""
		for _, l := range o.Lines() {
			if k, _, ok := strings.Cut(l, "="); !ok || strings.ContainsAny(k, " :") {
				why = l
				break
			}
		}
		return kv, "docker did not answer (exit " + f + "): " + orNone(why)
	}
	return kv, ""
}

func dockerInfoProbe(name, key, want string) Probe {
	return Probe{
		Name:     name,
		Expected: "docker info reports " + key + " " + want,
		Script:   `cat "$KB/docker"`,
		Prelude:  dockerPrelude,
		Units:    []string{"docker.service"},
		Eval: func(o Output) (string, bool) {
			kv, failed := dockerFacts(o)
			got := kv[key]
			if got == "" {
				if failed == "" {
					failed = "no " + key + " in docker info: " + firstLineOf(o.Text)
				}
				return failed, false
			}
			return got, got == want
		},
	}
}

// dockerVersionProbe: the daemon's version is the locked package's upstream version (Debian's
// 20.10.24+dfsg1-1+deb12u1 reports 20.10.24+dfsg1, or 20.10.24 without the repack suffix).
func dockerVersionProbe(locked string) Probe {
	upstream := locked
	if i := strings.LastIndex(upstream, "-"); i > 0 {
		upstream = upstream[:i]
	}
	if i := strings.Index(upstream, ":"); i >= 0 {
		upstream = upstream[i+1:]
	}
	return Probe{
		Name:     "docker/version",
		Expected: "docker " + orNone(upstream) + " (" + DockerPackage + " " + orNone(locked) + " as locked)",
		Script:   `cat "$KB/docker"`,
		Prelude:  dockerPrelude,
		Units:    []string{"docker.service"},
		Eval: func(o Output) (string, bool) {
			kv, failed := dockerFacts(o)
			got := kv["server"]
			if got == "" {
				if failed == "" {
					failed = "no server version: " + firstLineOf(o.Text)
				}
				return failed, false
			}
			return got, upstream != "" && (got == upstream || strings.HasPrefix(upstream, got+"+") || strings.HasPrefix(upstream, got+"~"))
		},
	}
}

// dockerRunProbe runs a container of a baked image with no network: it must not need a pull.
func dockerRunProbe(ref string) Probe {
	return Probe{
		Name:     "docker/run",
		Expected: "docker run --rm --network none " + ref + " works offline",
		// A lone node's checks may start while the images still load: wait for that job first.
		Script: "i=0; while [ $i -lt 150 ] && systemctl list-jobs --no-legend " + recipes.DockerImagesUnit + " 2>/dev/null | grep -q .; do sleep 2; i=$((i+1)); done\n" +
			"timeout 180 docker run --rm --network none --pull never " + shell.Quote(ref) + " echo kubebake-docker-run 2>&1; echo \"exit=$?\"",
		Units: []string{"docker.service", recipes.DockerImagesUnit},
		Eval: func(o Output) (string, bool) {
			exit := o.KV()["exit"]
			if exit == "0" && strings.Contains(o.Text, "kubebake-docker-run") {
				return "ran, exit 0", true
			}
			return "exit " + orNone(exit) + ": " + firstLineOf(o.Text), false
		},
	}
}

// dockerGroupProbe: the docker group has no members (its members are root on the node).
func dockerGroupProbe() Probe {
	return Probe{
		Static:   true,
		Name:     "docker/group",
		Expected: "the docker group has no members",
		Script:   `getent group docker | cut -d: -f4`,
		Eval: func(o Output) (string, bool) {
			members := strings.TrimSpace(o.Text)
			if members == "" {
				return "no members", true
			}
			return "members: " + members, false
		},
	}
}
