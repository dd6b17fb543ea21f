package roles

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// debianUnits are stand-ins for the units Debian packages bring (the layer only adds
// drop-ins to them), shaped like Debian's own.
var debianUnits = map[string]string{
	"containerd.service": `[Unit]
Description=containerd container runtime
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always

[Install]
WantedBy=multi-user.target
`,
	"docker.service": `[Unit]
Description=Docker Application Container Engine
After=network-online.target containerd.service
Wants=network-online.target containerd.service

[Service]
Type=notify
ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock
Restart=always

[Install]
WantedBy=multi-user.target
`,
	// cloud-init's units as Debian 12 ships them (ordering lines only), for hosts without it.
	"cloud-init-local.service": "[Unit]\nDefaultDependencies=no\nWants=network-pre.target\nAfter=systemd-remount-fs.service\nBefore=network-pre.target\nBefore=shutdown.target\nConflicts=shutdown.target\n[Service]\nType=oneshot\nExecStart=/usr/bin/cloud-init init --local\nRemainAfterExit=yes\n",
	"cloud-init.service":       "[Unit]\nDefaultDependencies=no\nWants=cloud-init-local.service\nAfter=cloud-init-local.service\nAfter=systemd-networkd-wait-online.service\nAfter=networking.service\nBefore=network-online.target\nBefore=systemd-user-sessions.service\nConflicts=shutdown.target\n[Service]\nType=oneshot\nExecStart=/usr/bin/cloud-init init\nRemainAfterExit=yes\n",
	"cloud-config.service":     "[Unit]\nAfter=network-online.target cloud-config.target\nBefore=systemd-user-sessions.service\nWants=network-online.target cloud-config.target\n[Service]\nType=oneshot\nExecStart=/usr/bin/cloud-init modules --mode=config\nRemainAfterExit=yes\n",
	"cloud-final.service":      "[Unit]\nAfter=network-online.target cloud-config.service rc-local.service\nAfter=multi-user.target\nBefore=cloud-init.target\nWants=network-online.target cloud-config.service\n[Service]\nType=oneshot\nExecStart=/usr/bin/cloud-init modules --mode=final\nRemainAfterExit=yes\n",
	"cloud-init.target":        "[Unit]\nAfter=multi-user.target\n",
	"cloud-config.target":      "[Unit]\nWants=network-online.target\nAfter=network-online.target\n",
}

// verifyRoot is a root directory holding the host's systemd units, Debian stand-ins for the
// units packages bring (enabled the Debian way), and the layer extracted from its tar.
func verifyRoot(t *testing.T, layer *Layer) string {
	t.Helper()
	root := t.TempDir()
	unitDir := filepath.Join(root, "usr/lib/systemd/system")
	if err := os.MkdirAll(unitDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", "/usr/lib/systemd/system/.", unitDir).CombinedOutput(); err != nil {
		t.Fatalf("copying the host's units: %v\n%s", err, out)
	}
	for name, content := range debianUnits {
		p := filepath.Join(unitDir, name)
		if _, err := os.Stat(p); err == nil && strings.HasPrefix(name, "cloud-") {
			continue // the host's real cloud-init units
		}
		writeFile(t, p, content, 0o644)
	}
	// Debian's postinsts enable containerd, docker and cloud-init.
	for link, unit := range map[string]string{
		"multi-user.target.wants/containerd.service":       "containerd.service",
		"multi-user.target.wants/docker.service":           "docker.service",
		"multi-user.target.wants/cloud-init.target":        "cloud-init.target",
		"cloud-init.target.wants/cloud-init-local.service": "cloud-init-local.service",
		"cloud-init.target.wants/cloud-init.service":       "cloud-init.service",
		"cloud-init.target.wants/cloud-config.service":     "cloud-config.service",
		"cloud-init.target.wants/cloud-final.service":      "cloud-final.service",
	} {
		p := filepath.Join(root, "etc/systemd/system", link)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/lib/systemd/system/"+unit, p); err != nil {
			t.Fatal(err)
		}
	}
	// /lib -> usr/lib as on a merged-/usr Debian.
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	extract(t, layer, root)
	// Stub executables for ExecStart= lines that packages or the host provide.
	for _, p := range []string{"bin/sh", "sbin/modprobe", "usr/sbin/dockerd", "usr/bin/containerd", "usr/bin/cloud-init", "usr/bin/ssh-keygen"} {
		full := filepath.Join(root, p)
		if _, err := os.Lstat(full); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, full, "#!/bin/sh\nexit 0\n", 0o755)
	}
	return root
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func systemdAnalyze(t *testing.T, root string, units ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"verify", "--root=" + root, "--man=no"}, units...)
	cmd := exec.CommandContext(ctx, "systemd-analyze", args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestSystemdVerify runs the real systemd-analyze verify over every unit the layer renders
// (with its drop-ins) and over the boot transaction, which also finds ordering cycles.
func TestSystemdVerify(t *testing.T) {
	testenv.NeedTool(t, "systemd-analyze")
	cases := []*recipes.Recipe{
		goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd),
		goRecipe("go-docker", "bookworm", recipes.RuntimeDocker),
		goRecipe("go-docker-cri", "bookworm", recipes.SetupDockerCRIDockerd),
		customRoleRecipe(),
	}
	cases = append(cases, embeddedRecipes(t)...)
	for _, r := range cases {
		t.Run(r.Name, func(t *testing.T) {
			layer := mustRender(t, r, fakeLock(r))
			root := verifyRoot(t, layer)
			units, err := Units(r)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, u := range units {
				names = append(names, u.Name)
			}
			out := systemdAnalyze(t, root, names...)
			// The whole boot: multi-user.target pulls kubebake-roles.target and every role
			// unit; an ordering cycle would be reported (and broken) here.
			out += systemdAnalyze(t, root, "multi-user.target", RolesTarget)
			// Every message is an error, except warnings about the host's own unit files.
			hostFile := regexp.MustCompile(`^` + regexp.QuoteMeta(root) + `(/[^:]+):\d+: `)
			for _, line := range strings.Split(out, "\n") {
				if line == "" {
					continue
				}
				if m := hostFile.FindStringSubmatch(line); m != nil {
					p := strings.Replace(m[1], "/lib/systemd/", "/usr/lib/systemd/", 1)
					if _, ours := layer.File(p); !ours && !strings.Contains(line, ".d/") {
						t.Logf("systemd-analyze (host unit, ignored): %s", line)
						continue
					}
				}
				t.Errorf("systemd-analyze: %s", line)
			}
		})
	}
}

// TestScriptsSyntax checks every shell script with sh -n (and shellcheck when installed) and
// the Python helper with py_compile.
func TestScriptsSyntax(t *testing.T) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	layer := mustRender(t, r, fakeLock(r))
	root := t.TempDir()
	shellcheck, _ := exec.LookPath("shellcheck")
	testenv.WantTool(t, "shellcheck") // else only sh -n
	n := 0
	// All scripts first: shellcheck follows the sourced lib.sh, which sorts after some of them.
	var scripts []File
	for _, f := range layer.Files {
		if f.Type != TypeFile || f.Artifact != "" || !strings.HasPrefix(f.Path, ScriptDir+"/") || strings.Count(f.Path, "/") != strings.Count(ScriptDir, "/")+1 {
			continue
		}
		writeFile(t, filepath.Join(root, filepath.Base(f.Path)), string(f.Content), 0o755)
		scripts = append(scripts, f)
	}
	for _, f := range scripts {
		p := filepath.Join(root, filepath.Base(f.Path))
		switch {
		case strings.HasPrefix(string(f.Content), "#!/usr/bin/python3"):
			if !testenv.WantTool(t, "python3") {
				continue
			}
			if out, err := exec.Command("python3", "-c", "import ast,sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])", p).CombinedOutput(); err != nil {
				t.Errorf("%s: %v\n%s", f.Path, err, out)
			}
			n++
		case strings.HasPrefix(string(f.Content), "#!/bin/sh") || strings.HasSuffix(f.Path, ".sh"):
			if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v\n%s", f.Path, err, out)
			}
			if shellcheck != "" {
				// Sourced files are checked in the scripts that source them, as on the node.
				args := []string{"--shell=sh", "--external-sources", "--source-path=" + root, p}
				if out, err := exec.Command(shellcheck, args...).CombinedOutput(); err != nil {
					t.Errorf("shellcheck %s: %v\n%s", f.Path, err, out)
				}
			}
			n++
		}
	}
	if n < 5 {
		t.Errorf("checked %d scripts, want at least 5 (lib.sh, master-pki, master-bootstrap, minion-join, csr-approver)", n)
	}
}
