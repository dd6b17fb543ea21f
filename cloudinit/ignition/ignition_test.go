package ignition

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/kubebake/kubebake/internal/testenv"
)

// newRoot makes a small root folder: users, groups, an existing unit and a few files.
func newRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"etc/systemd/system/multi-user.target.wants", "usr/lib/systemd/system", "root", "home", "var/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(root, "root"), 0o700)
	w := func(p, s string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), mode); err != nil {
			t.Fatal(err)
		}
	}
	w("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n", 0o644)
	w("etc/group", "root:x:0:\ndaemon:x:1:\nusers:x:100:\n", 0o644)
	w("etc/shadow", "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n", 0o640)
	w("etc/gshadow", "root:*::\ndaemon:*::\nusers:*::\n", 0o640)
	w("etc/motd", "old motd\n", 0o644)
	w("etc/existing", "a\n", 0o640)
	w("usr/lib/systemd/system/existing.service", "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n", 0o644)
	os.Symlink("/usr/lib/systemd/system/old.service", filepath.Join(root, "etc/systemd/system/multi-user.target.wants/old.service"))
	return root
}

// snapshot describes every node under root: type, mode, owner, size and content hash or target.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Lstat(p)
		sys := st.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %s %d:%d", strings.TrimPrefix(p, root), st.Mode(), sys.Uid, sys.Gid)
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			tg, _ := os.Readlink(p)
			line += " -> " + tg
		case st.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			sum := sha256.Sum256(data)
			line += " " + hex.EncodeToString(sum[:8])
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func runConfig(t *testing.T, root, cfg string, mod ...func(*Options)) (*Result, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.ign")
	os.WriteFile(p, []byte(cfg), 0o600)
	opts := Options{Root: root, Sources: []Source{FileSource{Path: p}}, Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}
	for _, m := range mod {
		m(&opts)
	}
	return Run(context.Background(), opts)
}

func dataURL(s string) string { return "data:," + url.PathEscape(s) }

func gzipB64(t *testing.T, s string) string {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(s))
	zw.Close()
	return "data:;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())
}

func mustJSON(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}

type m = map[string]any

func readFile(t *testing.T, root, p string) (string, os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return "", 0
	}
	st, _ := os.Stat(filepath.Join(root, p))
	return string(data), st.Mode()
}

func readLink(t *testing.T, root, p string) string {
	t.Helper()
	tg, err := os.Readlink(filepath.Join(root, p))
	if err != nil {
		t.Errorf("%s: %v", p, err)
	}
	return tg
}

func TestApplyFilesLinksUnits(t *testing.T) {
	root := newRoot(t)
	gz := "compressed contents\n"
	gzSum := sha512.Sum512([]byte(gz))
	unit := "[Unit]\nDescription=extra\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target kubebake-roles.target\nAlias=extra-alias.service\n"
	cfg := mustJSON(m{
		"ignition": m{"version": "3.4.0"},
		"storage": m{
			"directories": []m{{"path": "/srv/data", "mode": 0o750, "user": m{"id": 1}, "group": m{"name": "daemon"}}},
			"files": []m{
				{"path": "/etc/app/plain.conf", "mode": 0o640, "contents": m{"source": dataURL("key=value\n")}},
				{"path": "/etc/app/gz", "contents": m{"source": gzipB64(t, gz), "compression": "gzip", "verification": m{"hash": "sha512-" + hex.EncodeToString(gzSum[:])}}},
				{"path": "/etc/existing", "append": []m{{"source": dataURL("b\n")}}},
				{"path": "/etc/new-append", "contents": m{"source": dataURL("x\n")}, "append": []m{{"source": dataURL("y\n")}}},
				{"path": "/etc/motd", "overwrite": true, "contents": m{"source": dataURL("new motd\n")}},
				{"path": "/etc/sysconfig/kubernetes-minion", "mode": 0o644, "contents": m{"source": "data:,"}},
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
	res, err := runConfig(t, root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "applied" {
		t.Fatalf("status %s", res.Status)
	}
	if !strings.Contains(strings.Join(res.Apply.Targets, " "), "kubebake-roles.target multi-user.target") || len(res.Apply.Enabled) != 2 {
		t.Errorf("targets %v enabled %v", res.Apply.Targets, res.Apply.Enabled)
	}
	check := func(p, want string, mode os.FileMode) {
		t.Helper()
		got, gm := readFile(t, root, p)
		if got != want || gm.Perm() != mode {
			t.Errorf("%s = %q %04o, want %q %04o", p, got, gm.Perm(), want, mode)
		}
	}
	check("/etc/app/plain.conf", "key=value\n", 0o640)
	check("/etc/app/gz", gz, 0o644)
	check("/etc/existing", "a\nb\n", 0o640) // kept its mode
	check("/etc/new-append", "x\ny\n", 0o644)
	check("/etc/motd", "new motd\n", 0o644)
	check("/etc/sysconfig/kubernetes-minion", "", 0o644)
	check("/etc/systemd/system/extra.service", unit, 0o644)
	check("/etc/systemd/system/extra.service.d/10-env.conf", "[Service]\nEnvironment=A=1\n", 0o644)
	check("/etc/systemd/system/kubelet.service.d/20-x.conf", "[Unit]\nAfter=network.target\n", 0o644)

	st, _ := os.Stat(filepath.Join(root, "srv/data"))
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode().Perm() != 0o750 || sys.Uid != 1 || sys.Gid != 1 {
		t.Errorf("/srv/data %s %d:%d", st.Mode(), sys.Uid, sys.Gid)
	}
	st, _ = os.Stat(filepath.Join(root, "srv/data/owned"))
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 1 || sys.Gid != 0 {
		t.Errorf("owned by %d:%d, want daemon:root", sys.Uid, sys.Gid)
	}
	if tg := readLink(t, root, "/etc/app/link"); tg != "/etc/app/plain.conf" {
		t.Errorf("symlink -> %s", tg)
	}
	a, _ := os.Stat(filepath.Join(root, "etc/app/hard"))
	b, _ := os.Stat(filepath.Join(root, "etc/app/plain.conf"))
	if !os.SameFile(a, b) {
		t.Error("hard link is not the target")
	}
	for p, want := range map[string]string{
		"/etc/systemd/system/multi-user.target.wants/extra.service":     "/etc/systemd/system/extra.service",
		"/etc/systemd/system/kubebake-roles.target.wants/extra.service": "/etc/systemd/system/extra.service",
		"/etc/systemd/system/extra-alias.service":                       "/etc/systemd/system/extra.service",
		"/etc/systemd/system/multi-user.target.wants/existing.service":  "/usr/lib/systemd/system/existing.service",
		"/etc/systemd/system/masked.service":                            "/dev/null",
	} {
		if tg := readLink(t, root, p); tg != want {
			t.Errorf("%s -> %s, want %s", p, tg, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/old.service")); err == nil {
		t.Error("enabled: false left the .wants link")
	}
	if stamp, _ := readFile(t, root, StampPath); !strings.Contains(stamp, "sha256=") {
		t.Errorf("stamp %q", stamp)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(root, "etc", ".*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestBadConfigsChangeNothing(t *testing.T) {
	good := m{"path": "/etc/good", "contents": m{"source": dataURL("good")}}
	cfg := func(files []m, extra ...m) string {
		c := m{"ignition": m{"version": "3.4.0"}, "storage": m{"files": files}}
		for _, e := range extra {
			for k, v := range e {
				c[k] = v
			}
		}
		return mustJSON(c)
	}
	cases := []struct{ name, cfg, want string }{
		{"bad JSON", `{"ignition": {"version": "3.4.0"}, "storage": {`, "not an Ignition config"},
		{"cloud-config", "#cloud-config\nwrite_files: []\n", "not an Ignition config"},
		{"spec 2", `{"ignition":{"version":"2.2.0"}}`, "ignition.version 2.2.0 is not supported"},
		{"spec 4", `{"ignition":{"version":"4.0.0"}}`, "ignition.version 4.0.0 is not supported"},
		{"no version", `{"ignition":{}}`, "ignition.version is missing"},
		{"empty", "  ", "empty"},
		{"invalid file mode", cfg([]m{good, {"path": "/etc/x", "mode": 99999, "contents": m{"source": "data:,x"}}}), "illegal file mode"},
		{"relative path", cfg([]m{good, {"path": "etc/x", "contents": m{"source": "data:,x"}}}), "path not absolute"},
		{"https source", cfg([]m{good, {"path": "/etc/x", "contents": m{"source": "https://example.com/x"}}}), "remote source https://example.com... refused"},
		{"tftp append", cfg([]m{good, {"path": "/etc/x", "append": []m{{"source": "tftp://10.0.0.1/x"}}}}), "remote source tftp://10.0.0.1... refused"},
		{"s3 source", cfg([]m{good, {"path": "/etc/x", "contents": m{"source": "s3://bucket/key"}}}), "remote source s3://bucket... refused"},
		{"hash mismatch", cfg([]m{good, {"path": "/etc/x", "contents": m{"source": "data:,x", "verification": m{"hash": "sha256-" + strings.Repeat("0", 64)}}}}), "verification.hash mismatch"},
		{"bad gzip", cfg([]m{good, {"path": "/etc/x", "contents": m{"source": "data:,notgzip", "compression": "gzip"}}}), "gzip contents"},
		{"exists, no overwrite", cfg([]m{good, {"path": "/etc/motd", "contents": m{"source": "data:,x"}}}), "a file exists there and overwrite is false"},
		{"dir exists, no overwrite", cfg([]m{good, {"path": "/etc/systemd", "contents": m{"source": "data:,x"}}}), "a non-regular file exists there"},
		{"parent is a file", cfg([]m{good, {"path": "/etc/motd/x", "contents": m{"source": "data:,x"}}}), "its parent /etc/motd exists and is not a directory"},
		{"unknown owner", cfg([]m{good, {"path": "/etc/x", "user": m{"name": "nobody2"}}}), `user "nobody2" does not exist`},
		{"unknown group", cfg([]m{good}, m{"passwd": m{"users": []m{{"name": "core", "groups": []string{"wheel"}}}}}), `group "wheel" does not exist`},
		{"bad user name", cfg([]m{good}, m{"passwd": m{"users": []m{{"name": "-oops"}}}}), "not a valid user name"},
		{"delete user", cfg([]m{good}, m{"passwd": m{"users": []m{{"name": "daemon", "shouldExist": false}}}}), "deleting users"},
		{"disks", cfg([]m{good}, m{"storage": m{"files": []m{good}, "disks": []m{{"device": "/dev/vda", "wipeTable": true}}}}), "storage.disks"},
		{"symlink clash", cfg([]m{good}, m{"storage": m{"files": []m{good}, "links": []m{{"path": "/etc/motd", "target": "/x"}}}}), "a non-symlink exists there"},
		{"hard link to nothing", cfg([]m{good}, m{"storage": m{"files": []m{good}, "links": []m{{"path": "/etc/h", "target": "/nope", "hard": true}}}}), "hard link target /nope does not exist"},
		{"enable without install", cfg([]m{good}, m{"systemd": m{"units": []m{{"name": "x.service", "enabled": true, "contents": "[Service]\nExecStart=/bin/true\n"}}}}), "no [Install]"},
		{"enable unknown unit", cfg([]m{good}, m{"systemd": m{"units": []m{{"name": "nope.service", "enabled": true}}}}), "no unit file nope.service exists"},
		{"bad drop-in name", cfg([]m{good}, m{"systemd": m{"units": []m{{"name": "x.service", "dropins": []m{{"name": "x.txt", "contents": "[Unit]\n"}}}}}}), "invalid systemd drop-in extension"},
		{"merge", cfg([]m{good}, m{"ignition": m{"version": "3.4.0", "config": m{"merge": []m{{"source": dataURL("{}")}}}}}), "merge/replace is not supported"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := newRoot(t)
			before := snapshot(t, root)
			_, err := runConfig(t, root, c.cfg)
			if err == nil {
				t.Fatal("applied")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if after := snapshot(t, root); after != before {
				t.Errorf("the root changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func TestRunsOnceDryRunAndForce(t *testing.T) {
	root := newRoot(t)
	cfg := mustJSON(m{"ignition": m{"version": "3.0.0"}, "storage": m{"files": []m{{"path": "/etc/once", "overwrite": true, "contents": m{"source": "data:,1"}}}}})
	before := snapshot(t, root)
	res, err := runConfig(t, root, cfg, func(o *Options) { o.DryRun = true })
	if err != nil || res.Status != "planned" {
		t.Fatalf("dry run: %v %v", res, err)
	}
	if snapshot(t, root) != before {
		t.Error("a dry run changed the root")
	}
	if res, err = runConfig(t, root, cfg); err != nil || res.Status != "applied" {
		t.Fatalf("first run: %v %v", res, err)
	}
	os.WriteFile(filepath.Join(root, "etc/once"), []byte("changed"), 0o644)
	if res, err = runConfig(t, root, cfg); err != nil || res.Status != "already-applied" {
		t.Fatalf("second run: %v %v", res, err)
	}
	if got, _ := readFile(t, root, "/etc/once"); got != "changed" {
		t.Error("the second run applied again")
	}
	if res, err = runConfig(t, root, cfg, func(o *Options) { o.Force = true }); err != nil || res.Status != "applied" {
		t.Fatalf("forced run: %v %v", res, err)
	}
	if got, _ := readFile(t, root, "/etc/once"); got != "1" {
		t.Error("force did not apply")
	}
	// No source with a config: nothing happens, no stamp.
	root2 := newRoot(t)
	before = snapshot(t, root2)
	res, err = Run(context.Background(), Options{Root: root2, Sources: []Source{FwCfg{Path: filepath.Join(root2, "nope"), LoadModule: func(context.Context) error { return nil }}}})
	if err != nil || res.Status != "no-config" {
		t.Fatalf("no config: %v %v", res, err)
	}
	if snapshot(t, root2) != before {
		t.Error("no config changed the root")
	}
}

func TestSymlinksStayInsideTheRoot(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	os.MkdirAll(filepath.Join(root, "realetc"), 0o755)
	os.MkdirAll(outside, 0o755)
	// An absolute symlink means the root's /realetc, and ../ cannot climb out of the root.
	os.Symlink("/realetc", filepath.Join(root, "etc"))
	os.Symlink("../../../../outside", filepath.Join(root, "escape"))
	cfg := mustJSON(m{"ignition": m{"version": "3.4.0"}, "storage": m{"files": []m{
		{"path": "/etc/x", "contents": m{"source": "data:,x"}},
		{"path": "/escape/y", "contents": m{"source": "data:,y"}},
	}}})
	if _, err := runConfig(t, root, cfg); err != nil {
		t.Fatal(err)
	}
	if got, _ := readFile(t, root, "/realetc/x"); got != "x" {
		t.Errorf("/etc/x did not land in the root's /realetc")
	}
	if got, _ := readFile(t, root, "/outside/y"); got != "y" {
		t.Errorf("/escape/y did not land in the root's /outside")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("a write escaped the root: %v", entries)
	}
}

func TestUsers(t *testing.T) {
	testenv.NeedRoot(t) // useradd --root
	root := newRoot(t)
	key1 := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ3BkTj1yR1Auho8J4BcJxb98ZjB/Ilunr/p1ZN1SzzG one"
	key2 := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ3BkTj1yR1Auho8J4BcJxb98ZjB/Ilunr/p1ZN1SzzG two"
	os.MkdirAll(filepath.Join(root, "root/.ssh"), 0o700)
	os.WriteFile(filepath.Join(root, "root/.ssh/authorized_keys"), []byte(key1+"\n"), 0o600)
	const hash = "$6$saltsalt$abcdefghijklmnopqrstuvwxyz"
	cfg := mustJSON(m{
		"ignition": m{"version": "3.4.0"},
		"passwd": m{
			"groups": []m{{"name": "kubeadmins", "gid": 2000}},
			"users": []m{
				{"name": "root", "sshAuthorizedKeys": []string{key1, key2}},
				{"name": "core", "uid": 1500, "groups": []string{"kubeadmins"}, "shell": "/bin/bash", "passwordHash": hash, "sshAuthorizedKeys": []string{key2}},
			},
		},
		"storage": m{"files": []m{{"path": "/home/core/owned", "user": m{"name": "core"}, "group": m{"name": "kubeadmins"}, "contents": m{"source": "data:,z"}}}},
	})
	var logs bytes.Buffer
	_, err := runConfig(t, root, cfg, func(o *Options) {
		o.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := readFile(t, root, "/root/.ssh/authorized_keys"); got != key1+"\n"+key2+"\n" {
		t.Errorf("root keys %q", got)
	}
	passwd, _ := readFile(t, root, "/etc/passwd")
	if !strings.Contains(passwd, "core:x:1500:") || !strings.Contains(passwd, ":/home/core:/bin/bash") {
		t.Errorf("passwd:\n%s", passwd)
	}
	group, _ := readFile(t, root, "/etc/group")
	if !strings.Contains(group, "kubeadmins:x:2000:core") {
		t.Errorf("group:\n%s", group)
	}
	shadow, _ := readFile(t, root, "/etc/shadow")
	if !strings.Contains(shadow, "core:"+hash+":") {
		t.Errorf("shadow:\n%s", shadow)
	}
	ak, mode := readFile(t, root, "/home/core/.ssh/authorized_keys")
	st, _ := os.Stat(filepath.Join(root, "home/core/.ssh/authorized_keys"))
	if ak != key2+"\n" || mode.Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 1500 {
		t.Errorf("core keys %q %s uid %d", ak, mode, st.Sys().(*syscall.Stat_t).Uid)
	}
	st, _ = os.Stat(filepath.Join(root, "home/core/owned"))
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 1500 || sys.Gid != 2000 {
		t.Errorf("owned by %d:%d", sys.Uid, sys.Gid)
	}
	if strings.Contains(logs.String(), hash) {
		t.Error("the password hash is in the log")
	}
}

func TestNoSecretsInLogs(t *testing.T) {
	const token = "q7k2m9.x4c8v1b5n3m6z0aa"
	const keyLine = "MHcCAQEEIEdiJaK54j2NdWoaQ1z45B4NYM3SEYVGPat/YkNGGMm4oAoGCCqGSM49"
	env := "KUBEBAKE_BOOTSTRAP_TOKEN=" + token + "\n"
	key := "-----BEGIN EC PRIVATE KEY-----\n" + keyLine + "\n-----END EC PRIVATE KEY-----\n"
	cfg := mustJSON(m{"ignition": m{"version": "3.4.0"}, "storage": m{"files": []m{
		{"path": "/etc/kubebake/cluster.env", "mode": 0o600, "overwrite": true, "contents": m{"source": dataURL(env)}},
		{"path": "/etc/kubernetes/pki/ca.key", "mode": 0o600, "overwrite": true, "contents": m{"source": gzipB64(t, key), "compression": "gzip"}},
	}}})
	var logs bytes.Buffer
	h := slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	prev := slog.Default()
	slog.SetDefault(slog.New(h)) // the command runner and sources log through the default logger
	defer slog.SetDefault(prev)
	root := newRoot(t)
	if _, err := runConfig(t, root, cfg, func(o *Options) { o.Log = slog.New(h) }); err != nil {
		t.Fatal(err)
	}
	// A failing run's error message: the key file exists now and overwrite is false.
	bad := strings.ReplaceAll(cfg, `"overwrite":true`, `"overwrite":false`)
	_, err := runConfig(t, root, bad, func(o *Options) { o.Log = slog.New(h); o.Force = true })
	if err == nil {
		t.Fatal("the second config applied")
	}
	all := logs.String() + err.Error()
	if !strings.Contains(all, "/etc/kubernetes/pki/ca.key") {
		t.Fatalf("the log does not even name the files:\n%s", all)
	}
	for _, s := range []string{token, keyLine, "PRIVATE KEY"} {
		if strings.Contains(all, s) {
			t.Errorf("%q is in the log or error:\n%s", s, all)
		}
	}
}

func TestTemplateName(t *testing.T) {
	for in, want := range map[string]string{"getty@tty1.service": "getty@.service", "a@b.c.timer": "a@.timer", "plain.service": ""} {
		got, _ := templateName(in)
		if got != want {
			t.Errorf("%s -> %q, want %q", in, got, want)
		}
	}
}

// fakeSystemd records what Run tells a running system.
type fakeSystemd struct {
	hostname string
	reloads  int
}

func (f *fakeSystemd) SetHostname(_ context.Context, name string) error {
	f.hostname = name
	return nil
}
func (f *fakeSystemd) DaemonReload(context.Context) error           { f.reloads++; return nil }
func (f *fakeSystemd) StartTargets(context.Context, []string) error { return nil }

// A config that writes /etc/hostname renames the running node too: systemd read the file at
// boot, before the applier ran, and the kubelet takes its node name from the live host name.
func TestHostnameAppliedLive(t *testing.T) {
	root := newRoot(t)
	cfg := mustJSON(m{"ignition": m{"version": "3.0.0"}, "storage": m{"files": []m{
		{"path": "/etc/hostname", "overwrite": true, "contents": m{"source": "data:,demo-minion-2%0A"}},
	}}})
	sd := &fakeSystemd{}
	res, err := runConfig(t, root, cfg, func(o *Options) { o.Systemd = sd })
	if err != nil || res.Status != "applied" {
		t.Fatalf("run: %v %v", res, err)
	}
	if sd.hostname != "demo-minion-2" {
		t.Errorf("live host name set to %q, want demo-minion-2", sd.hostname)
	}
	// A config that leaves /etc/hostname alone leaves the name alone.
	root2 := newRoot(t)
	sd2 := &fakeSystemd{}
	cfg2 := mustJSON(m{"ignition": m{"version": "3.0.0"}, "storage": m{"files": []m{{"path": "/etc/other", "contents": m{"source": "data:,x"}}}}})
	if _, err := runConfig(t, root2, cfg2, func(o *Options) { o.Systemd = sd2 }); err != nil {
		t.Fatal(err)
	}
	if sd2.hostname != "" {
		t.Errorf("host name set to %q by a config that does not write /etc/hostname", sd2.hostname)
	}
}
