package ignition

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// FuzzParsePlan: no input makes Parse, CheckSupported or NewPlan panic, and planning writes
// nothing. A plan never writes outside the root: every path it would write, replace or remove
// (Plan.writes) is absolute, clean and not "/", and it and its parents land inside the root
// once the root's symlinks are followed (fuzzRoot has some that point out of it, absolutely,
// relatively and through ..); so do hard link targets. No path is planned twice, and only a
// planned folder has other planned paths in it. Everything a unit writes (its file or mask,
// drop-ins, enablement links) is strictly inside /etc/systemd/system, and no enablement link
// replaces the unit file it points at. testdata/fuzz/FuzzParsePlan holds
// cloudinit.RenderIgnition's minion config and the inputs these invariants caught.
//
//	go test -run='^$' -fuzz='^FuzzParsePlan$' -fuzztime=30s ./cloudinit/ignition/
func FuzzParsePlan(f *testing.F) {
	root := fuzzRoot(f)
	fsys := watch(filepath.Dir(root))

	for _, c := range fuzzSeedConfigs() {
		f.Add([]byte(c))
	}
	for _, c := range []string{
		"", "  ", "{}", "null", "[]", `{"ignition":{}}`, `{"ignition":{"version":"2.2.0"}}`,
		`{"ignition":{"version":"3.7.0"}}`, `{"ignition":{"version":"3.4.0"}, "storage": {`,
		"#cloud-config\nwrite_files: []\n",
		`{"ignition":{"version":"3.0.0"},"storage":{"files":[{"path":"etc/x","contents":{"source":"data:,x"}}]}}`,
		`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:;base64,!!!"}}]}}`,
		`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,x","compression":"gzip"}}]}}`,
		`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"https://example.com/x"}}]}}`,
		// Unit files that are symlinks out of the root: not found inside it, so refused.
		`{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"escape.service","enabled":true},{"name":"out.service","enabled":true}]}}`,
	} {
		f.Add([]byte(c))
	}

	f.Fuzz(func(t *testing.T, data []byte) { checkParsePlan(t, root, fsys, data) })
}

// checkParsePlan is FuzzParsePlan's property check of one input; fsys watches root's parent.
func checkParsePlan(t *testing.T, root string, fsys *watched, data []byte) {
	cfg, _, err := Parse(data)
	if err != nil {
		if err.Error() == "" {
			t.Fatal("an empty error")
		}
		return
	}
	_ = CheckSupported(cfg)
	p, err := NewPlan(cfg, root)
	if diff := fsys.changes(); diff != "" {
		t.Fatalf("planning changed the file system:\n%s", diff)
	}
	if err != nil {
		if err.Error() == "" {
			t.Fatal("an empty error")
		}
		return
	}
	_ = p.Summary()
	seen := map[string]bool{}
	for _, w := range p.writes() {
		if seen[w] {
			t.Fatalf("%s is planned twice: the config asks for two things there", w)
		}
		seen[w] = true
		if !path.IsAbs(w) || path.Clean(w) != w || w == "/" {
			t.Fatalf("planned write %q is not an absolute, clean path below /", w)
		}
		rp, err := p.root.resolve(w)
		if err != nil {
			continue // Apply fails there without writing
		}
		if !inside(root, p.root.host(rp)) {
			t.Fatalf("planned write %s lands at %s, outside the root %s", w, p.root.host(rp), root)
		}
		// mkdirParents makes the parents it resolves to.
		if rd, err := p.root.resolveAll(path.Dir(w)); err == nil && !inside(root, p.root.host(rd)) && p.root.host(rd) != root {
			t.Fatalf("the parents of %s resolve to %s, outside the root %s", w, p.root.host(rd), root)
		}
	}
	// Only a planned folder has planned writes in it.
	dirs := map[string]bool{}
	for _, n := range p.nodes {
		if n.kind == kindDir {
			dirs[n.path] = true
		}
	}
	for w := range seen {
		for d := path.Dir(w); d != "/"; d = path.Dir(d) {
			if seen[d] && !dirs[d] {
				t.Fatalf("%s is planned inside %s, which the plan writes as a file or link", w, d)
			}
		}
	}
	for _, n := range p.nodes {
		if n.kind != kindHardlink {
			continue
		}
		if rt, err := p.root.resolveAll(n.target); err == nil && !inside(root, p.root.host(rt)) {
			t.Fatalf("hard link %s links %s, outside the root %s", n.path, p.root.host(rt), root)
		}
	}
	for _, u := range p.units {
		var unitWrites []string
		if u.mask != nil || u.contents != nil {
			unitWrites = append(unitWrites, unitFilePath(u.name))
		}
		for _, d := range u.dropins {
			unitWrites = append(unitWrites, dropinPath(u.name, d.Name))
		}
		if isTrue(u.enabled) {
			for _, l := range u.enableLinks() {
				unitWrites = append(unitWrites, l.path)
				if l.path == u.unitFile {
					t.Fatalf("unit %s: the enablement link %s replaces the unit file", u.name, l.path)
				}
			}
		}
		for _, w := range unitWrites {
			if !strings.HasPrefix(w, SystemdUnitDir+"/") || path.Clean(w) != w {
				t.Fatalf("unit %s writes %s, not inside %s", u.name, w, SystemdUnitDir)
			}
		}
	}
}

// The seed configs plan: they reach every part of the planner, not just its refusals.
func TestFuzzSeedConfigsPlan(t *testing.T) {
	root := fuzzRoot(t)
	for i, c := range fuzzSeedConfigs() {
		cfg, _, err := Parse([]byte(c))
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		p, err := NewPlan(cfg, root)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		t.Logf("seed %d: %s; writes %v", i, p.Summary(), p.writes())
	}
}

// inside reports whether host is strictly inside root.
func inside(root, host string) bool {
	rel, err := filepath.Rel(root, host)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// fuzzRoot is newRoot with symlinks that point out of the root (absolute, relative, through
// ..), a symlink loop, and a folder beside the root, "outside", with a unit file in it.
func fuzzRoot(f testing.TB) string {
	base := f.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{"etc/systemd/system/multi-user.target.wants", "usr/lib/systemd/system", "root", "home", "var/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(outside, "lib/systemd/system"), 0o755); err != nil {
		f.Fatal(err)
	}
	w := func(p, s string) {
		if err := os.WriteFile(filepath.Join(base, p), []byte(s), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	unit := "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nAlias=other.service\n"
	w("root/etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
	w("root/etc/group", "root:x:0:\ndaemon:x:1:\nusers:x:100:\n")
	w("root/etc/motd", "old motd\n")
	w("root/etc/existing", "a\n")
	w("root/usr/lib/systemd/system/existing.service", unit)
	w("outside/lib/systemd/system/outside.service", unit)
	w("outside/secret", "s\n")
	for link, target := range map[string]string{
		"root/etc/escape":                     "../../../../outside",
		"root/abs":                            "/",
		"root/up":                             "..",
		"root/loop":                           "loop",
		"root/var/run":                        "/run",
		"root/etc/outside.d":                  filepath.Join(outside, "lib"),
		"root/etc/secret":                     "../../outside/secret",
		"root/etc/systemd/dirup":              "../../..",
		"root/etc/systemd/system/out.service": "../../../../outside/lib/systemd/system/outside.service",
		"root/usr/lib/systemd/system/escape.service":                  "../../../../../outside/lib/systemd/system/outside.service",
		"root/etc/systemd/system/multi-user.target.wants/old.service": "/usr/lib/systemd/system/old.service",
	} {
		if err := os.Symlink(target, filepath.Join(base, link)); err != nil {
			f.Fatal(err)
		}
	}
	return root
}

// watched is a folder tree and the state of every node in it, to see cheaply (lstat only:
// system calls are what a fuzz run spends its time on) whether anything changed: a node's
// inode, mode, size, mtime and ctime change with any write to it, a folder's with any entry
// added, removed or renamed in it.
type watched struct {
	paths []string
	state []string
}

func watch(base string) *watched {
	w := &watched{}
	filepath.WalkDir(base, func(p string, _ fs.DirEntry, err error) error {
		w.paths = append(w.paths, p)
		return nil
	})
	w.state = w.now()
	return w
}

func (w *watched) now() []string {
	out := make([]string, len(w.paths))
	for i, p := range w.paths {
		st, err := os.Lstat(p)
		if err != nil {
			out[i] = err.Error()
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		out[i] = fmt.Sprintf("%d %s %d %d.%d %d.%d", sys.Ino, st.Mode(), st.Size(), sys.Mtim.Sec, sys.Mtim.Nsec, sys.Ctim.Sec, sys.Ctim.Nsec)
	}
	return out
}

// changes lists the nodes that changed since watch, "" if none did.
func (w *watched) changes() string {
	var out []string
	for i, s := range w.now() {
		if s != w.state[i] {
			out = append(out, fmt.Sprintf("%s: %s, was %s", w.paths[i], s, w.state[i]))
		}
	}
	return strings.Join(out, "\n")
}

// fuzzSeedConfigs are valid configs that use every part of the planner: the config of
// TestApplyFilesLinksUnits, and ones that write through fuzzRoot's escaping symlinks.
func fuzzSeedConfigs() []string {
	gz := "compressed contents\n"
	unit := "[Unit]\nDescription=extra\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target kubebake-roles.target\nRequiredBy=x.target\nAlias=extra-alias.service\n"
	full := mustJSON(m{
		"ignition": m{"version": "3.4.0"},
		"passwd": m{
			"groups": []m{{"name": "kubeadmins", "gid": 2000}},
			"users":  []m{{"name": "core", "uid": 1500, "groups": []string{"kubeadmins"}, "shell": "/bin/bash", "sshAuthorizedKeys": []string{"ssh-ed25519 AAAA x"}}},
		},
		"storage": m{
			"directories": []m{{"path": "/srv/data", "mode": 0o750, "user": m{"id": 1}, "group": m{"name": "daemon"}}},
			"files": []m{
				{"path": "/etc/app/plain.conf", "mode": 0o640, "contents": m{"source": dataURL("key=value\n")}},
				{"path": "/etc/app/gz", "contents": m{"source": gzipB64(nil, gz), "compression": "gzip"}},
				{"path": "/etc/existing", "append": []m{{"source": dataURL("b\n")}}},
				{"path": "/etc/new-append", "contents": m{"source": dataURL("x\n")}, "append": []m{{"source": dataURL("y\n")}}},
				{"path": "/etc/motd", "overwrite": true, "contents": m{"source": dataURL("new motd\n")}},
				{"path": "/srv/data/owned", "user": m{"name": "daemon"}, "contents": m{"source": dataURL("d")}},
			},
			"links": []m{
				{"path": "/etc/app/link", "target": "/etc/app/plain.conf"},
				{"path": "/etc/app/hard", "target": "/etc/app/plain.conf", "hard": true},
			},
		},
		"systemd": m{"units": []m{
			{"name": "extra.service", "enabled": true, "contents": unit, "dropins": []m{{"name": "10-env.conf", "contents": "[Service]\nEnvironment=A=1\n"}}},
			{"name": "existing.service", "enabled": true},
			{"name": "masked.service", "mask": true},
			{"name": "old.service", "enabled": false},
			{"name": "kubelet.service", "dropins": []m{{"name": "20-x.conf", "contents": "[Unit]\nAfter=network.target\n"}}},
		}},
	})
	escapes := mustJSON(m{
		"ignition": m{"version": "3.0.0"},
		"storage": m{
			"directories": []m{{"path": "/up/up/dir"}, {"path": "/etc/outside.d/new", "overwrite": true}},
			"files": []m{
				{"path": "/etc/escape/x", "contents": m{"source": "data:,x"}},
				{"path": "/abs/etc/y", "contents": m{"source": "data:,y"}},
				{"path": "/etc/secret", "overwrite": true, "contents": m{"source": "data:,z"}},
				{"path": "/etc/systemd/dirup/z", "contents": m{"source": "data:,z"}},
			},
			"links": []m{
				{"path": "/var/run/l", "target": "../../.."},
				{"path": "/etc/h", "target": "/etc/escape/../existing", "hard": true},
			},
		},
		"systemd": m{"units": []m{{"name": "x@y.service", "enabled": false, "mask": false}}},
	})
	return []string{full, escapes}
}

// The inputs FuzzParsePlan's invariants caught, kept in testdata/fuzz/FuzzParsePlan, are
// refused with a message that says why. Before the fix NewPlan accepted them all and Apply
// did damage inside the root: Alias=.. replaced /etc/systemd with a symlink (RemoveAll of
// every unit and link in it), Alias=. replaced /etc/systemd/system, Alias=<the unit> replaced
// the unit file with a symlink to itself, and the collisions made Apply fail half-way or let
// the last writer win.
func TestPlanRefusesFuzzFindings(t *testing.T) {
	root := fuzzRoot(t)
	for name, want := range map[string]string{
		"alias-dotdot":             `[Install] names "..", which kubebake-ignition cannot link`,
		"alias-dot":                `[Install] names ".", which kubebake-ignition cannot link`,
		"alias-self":               "Alias=x.service is the unit's own name",
		"alias-other-type":         "Alias=y.service.d is not a .service unit name",
		"alias-is-other-unit":      "systemd.units.1 (y.service): /etc/systemd/system/y.service is also written for unit x.service",
		"wants-folder-is-a-file":   "unit x.service: /etc/systemd/system/multi-user.target.wants/x.service goes in /etc/systemd/system/multi-user.target.wants, which is a file in this config",
		"storage-inside-unit-file": "/etc/systemd/system/x.service/f: its parent /etc/systemd/system/x.service is written for unit x.service",
	} {
		t.Run(name, func(t *testing.T) {
			data, err := readCorpusFile(filepath.Join("testdata/fuzz/FuzzParsePlan", name))
			if err != nil {
				t.Fatal(err)
			}
			cfg, _, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewPlan(cfg, root)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("NewPlan: %v\nwant an error saying %s", err, want)
			}
		})
	}
}

// readCorpusFile reads a one-[]byte "go test fuzz v1" corpus file.
func readCorpusFile(p string) ([]byte, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	header, body, _ := strings.Cut(string(raw), "\n")
	lit, ok := strings.CutPrefix(strings.TrimSpace(body), "[]byte(")
	if header != "go test fuzz v1" || !ok || !strings.HasSuffix(lit, ")") {
		return nil, fmt.Errorf("%s: not a go test fuzz v1 file with one []byte", p)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
	return []byte(s), err
}
