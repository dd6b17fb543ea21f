package cloudinit

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/shell"
)

// hostileDir is a folder name no hand-made quoting survives.
const hostileDir = "we ird'dir \"$(touch PWNED)\" `touch PWNED` $HOME *?[a] ~ -x;&&|\t\nnext"

// stubTools writes stand-ins for the commands the shell user-data runs that would touch the
// host (getent, useradd, chown, hostname, systemctl): each records its arguments, NUL
// separated, in log; getent reports home as the user's home. It returns a PATH that finds them
// first.
func stubTools(t *testing.T, log, home string) string {
	t.Helper()
	bin := t.TempDir()
	record := "printf '%s\\0' \"${0##*/}\" \"$@\" >> " + shell.Quote(log) + "\n"
	for name, body := range map[string]string{
		"getent":    record + "printf '%s:x:1000:1000::%s:/bin/sh\\n' \"$2\" " + shell.Quote(home) + "\n",
		"useradd":   record,
		"chown":     record,
		"hostname":  record,
		"systemctl": record,
	} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin + string(os.PathListSeparator) + os.Getenv("PATH")
}

// systemctlCall is what the systemctl stub records: the script starts the roles target only
// where systemd runs.
func systemctlCall() string {
	if st, err := os.Stat("/run/systemd/system"); err != nil || !st.IsDir() {
		return ""
	}
	return "systemctl\x00--no-block\x00start\x00" + RolesTarget + "\x00"
}

// runScript checks the script's syntax with sh -n, then runs it with sh and the stubs.
func runScript(t *testing.T, script []byte, path string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(f, script, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", f).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s\n%.3000s", err, out, script)
	}
	cmd := exec.Command("sh", f)
	cmd.Env = append(os.Environ(), "PATH="+path)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the script failed: %v\n%s\n%.3000s", err, out, script)
	}
}

// noPwned fails if any hostile value ran a command (created a file named PWNED).
func noPwned(t *testing.T, roots ...string) {
	t.Helper()
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "PWNED" {
				t.Errorf("a value ran a command: %s exists", p)
			}
			return nil
		})
	}
}

// TestShellScriptHostileFiles: the shell user-data writes files whose paths and contents hold
// quotes, newlines, command substitutions, globs and the heredoc delimiter, and every file
// lands with exactly its content and mode.
func TestShellScriptHostileFiles(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, hostileDir, "sub'2")
	files := []File{
		{Path: filepath.Join(dir, "cluster'\".env"), Mode: 0o600, Content: []byte("A='$(touch PWNED)'\n`touch PWNED`\n$HOME \\\n" + heredocEnd + "\n" + heredocEnd + "_1\nlast\n")},
		{Path: filepath.Join(dir, "no newline *"), Mode: 0o644, Content: []byte("ends without a newline $(touch PWNED) 'q' \"d\" \\")},
		{Path: filepath.Join(dir, "only-delimiter"), Mode: 0o640, Content: []byte(heredocEnd + "\n")},
		{Path: filepath.Join(dir, "crlf and unicode ✓"), Mode: 0o600, Content: []byte("line\r\nhéllo ✓ \xff\xfe\n\n\n")},
		{Path: filepath.Join(dir, "newline\nonly"), Mode: 0o644, Content: []byte("\n")},
		{Path: filepath.Join(dir, "big"), Mode: 0o644, Content: bytes.Repeat([]byte("x'y\"z$(touch PWNED)`\\\n"), 20000)},
		{Path: filepath.Join(dir, "empty;touch PWNED"), Mode: 0o644},
	}
	script, err := shellScript("master\ntouch PWNED", "demo$(touch PWNED)\n`touch PWNED`", files, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !strings.Contains(string(script), shell.Quote(f.Path)) {
			t.Errorf("the script does not name %q as one quoted word", f.Path)
		}
	}
	log := filepath.Join(t.TempDir(), "log")
	runScript(t, script, stubTools(t, log, t.TempDir()))
	for _, f := range files {
		checkFile(t, "/", f)
	}
	for d := dir; d != root; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("folder %q: %v %v", d, st, err)
		}
	}
	if data, _ := os.ReadFile(log); !bytes.Equal(data, []byte(systemctlCall())) {
		t.Errorf("commands run: %q", data)
	}
	noPwned(t, root, filepath.Dir(log))
}

// TestShellScriptHostileUser: the SSH user, the keys and the host name reach useradd, chown,
// hostname and authorized_keys as they are.
func TestShellScriptHostileUser(t *testing.T) {
	user := "o'brien $(touch PWNED) `touch PWNED` \"x\" *"
	host := "host'$(touch PWNED)"
	keys := []string{testSSHKey, "ssh-ed25519 AAAA x'$(touch PWNED)", heredocEnd, "last"}
	home := t.TempDir()
	script, err := shellScript("minion", "demo", nil, Options{SSHUser: user, SSHAuthorizedKeys: keys, Hostname: host})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "useradd -m -s /bin/bash "+shell.Quote(user)+"\n") {
		t.Errorf("the user is not quoted:\n%s", script)
	}
	log := filepath.Join(t.TempDir(), "log")
	runScript(t, script, stubTools(t, log, home))
	checkFile(t, home, File{Path: ".ssh/authorized_keys", Mode: 0o600, Content: []byte(strings.Join(keys, "\n") + "\n")})
	data, _ := os.ReadFile(log)
	got := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
	want := []string{
		"getent", "passwd", user,
		"getent", "passwd", user,
		"chown", "-R", user + ":", filepath.Join(home, ".ssh"),
		"hostname", host,
	}
	if c := systemctlCall(); c != "" {
		want = append(want, strings.Split(strings.TrimSuffix(c, "\x00"), "\x00")...)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands run:\n%q\nwant\n%q", got, want)
	}
	noPwned(t, home, filepath.Dir(log))

	// A user that would pass for an option is refused, as is anything with a NUL byte.
	if _, err := shellScript("minion", "demo", nil, Options{SSHUser: "-oops", SSHAuthorizedKeys: keys}); err == nil {
		t.Error("user -oops accepted")
	}
	for _, o := range []Options{
		{SSHUser: "a\x00b", SSHAuthorizedKeys: keys},
		{SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA\x00"}},
		{Hostname: "h\x00"},
	} {
		if _, err := shellScript("minion", "demo", nil, o); !errors.Is(err, shell.ErrNUL) {
			t.Errorf("%+q: %v", o, err)
		}
	}
	for _, f := range []File{{Path: "/x\x00", Mode: 0o644}, {Path: "/x", Mode: 0o644, Content: []byte("a\x00b\n")}} {
		if _, err := shellScript("minion", "demo", []File{f}, Options{}); !errors.Is(err, shell.ErrNUL) {
			t.Errorf("%q: %v", f.Path, err)
		}
	}
}

// TestShellUserDataUnchanged: ordinary user-data keeps its plain form (no quotes where none
// are needed, the usual delimiter).
func TestShellUserDataUnchanged(t *testing.T) {
	data, err := RenderShell(testBundle(t), RoleMinion, Options{SSHAuthorizedKeys: []string{testSSHKey}, SSHUser: "kube", Hostname: "demo-minion-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"mkdir -p -m 0755 /etc/kubebake\n",
		"cat > /etc/kubebake/cluster.env <<'KUBEBAKE_EOF'\n",
		"\nKUBEBAKE_EOF\nchmod 0600 /etc/kubebake/cluster.env\n",
		"touch /etc/sysconfig/kubernetes-minion\nchmod 0644 /etc/sysconfig/kubernetes-minion\n",
		"getent passwd kube >/dev/null || useradd -m -s /bin/bash kube\n",
		"chown -R kube: \"$home/.ssh\"\n",
		"hostname demo-minion-1\n",
		"systemctl --no-block start kubebake-roles.target || true",
	} {
		if !strings.Contains(string(data), line) {
			t.Errorf("no %q in:\n%s", line, data)
		}
	}
}
