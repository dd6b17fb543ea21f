package verify

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/shell"
)

// hostileValue breaks hand-made quoting; hostileLines adds line breaks and a line that would
// end a probe's here-document in BuildScript.
const (
	hostileValue = "x'y \"$(touch PWNED)\" `touch PWNED` $HOME *?[a] ~ \\ ;|&& -e"
	hostileLines = hostileValue + "\nKUBEBAKE_PROBE_0_EOF\nKUBEBAKE_PROBE_1_EOF\n'"
)

// hostileSpec puts a hostile string in every value a probe script carries.
func hostileSpec(v string) Spec {
	return Spec{
		Role:          "r" + v,
		Roles:         map[string][]string{"r" + v: {"u" + v + ".service"}, "other" + v: {"o" + v + ".service"}},
		UserData:      UserDataCloudInit,
		Binaries:      []Binary{{Name: "b" + v, Path: "/opt/" + v + "/bin", SHA256: "00", Version: "v1.0", VersionArgs: "--version"}},
		Packages:      []Package{{Name: "p" + v, Version: "1"}},
		Sysctls:       map[string]string{"net." + v: "1"},
		Modules:       []string{"m" + v},
		Runtime:       "containerd",
		CNIPlugins:    []string{"c" + v},
		HostTools:     []string{"t" + v},
		UserDataPaths: []string{"/etc/" + v},
		Secrets:       []string{"s" + v},
	}
}

// shSyntax checks a script with sh -n.
func shSyntax(t *testing.T, what, script string) {
	t.Helper()
	if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Errorf("%s: sh -n: %v %s\n%s", what, err, out, script)
	}
}

// recordingPath returns a PATH whose first folder has stand-ins for names: each records its
// name and arguments, NUL separated, in log and exits 1.
func recordingPath(t *testing.T, log string, names ...string) string {
	t.Helper()
	bin := t.TempDir()
	for _, n := range names {
		body := "#!/bin/sh\nprintf '%s\\0' \"${0##*/}\" \"$@\" >> " + shell.Quote(log) + "\nexit 1\n"
		if err := os.WriteFile(filepath.Join(bin, n), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin + ":/usr/bin:/bin"
}

func readLog(t *testing.T, log string) []string {
	t.Helper()
	data, err := os.ReadFile(log)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

// TestProbeScriptsWithHostileValues: every probe's script and prelude, and the script joining
// them, parse whatever the manifest's values hold; the values appear only as quoted words.
func TestProbeScriptsWithHostileValues(t *testing.T) {
	for _, v := range []string{hostileValue, hostileLines} {
		s := hostileSpec(v)
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
		probes := Probes(s)
		for _, p := range probes {
			shSyntax(t, p.Name, p.Script)
			if p.Prelude != "" {
				shSyntax(t, p.Name+" prelude", p.Prelude)
			}
		}
		script := BuildScript(probes)
		shSyntax(t, "BuildScript", script)
		for _, want := range []struct{ probe, word string }{
			{"binary/b" + v + "/sha256", shell.Quote("/opt/" + v + "/bin")},
			{"binary/b" + v + "/version", shell.Quote("/opt/" + v + "/bin")},
			{"packages/versions", shell.Quote("p" + v)},
			{"sysctl/net." + v, shell.Quote("net." + v)},
			{"module/m" + v + "/loaded", shell.Quote("/sys/module/m" + v)},
			{"cni/c" + v, shell.Quote("/opt/cni/bin/c" + v)},
			{"tool/t" + v, shell.Quote("t" + v)},
			{"role/marker", shell.Quote("/etc/sysconfig/kubernetes-r" + v)},
		} {
			if p := probeByName(t, probes, want.probe); !strings.Contains(p.Script, want.word) {
				t.Errorf("%s does not carry %s:\n%s", want.probe, want.word, p.Script)
			}
		}
		// Secrets spanning lines are left out of the search; the others are quoted.
		if p := probeByName(t, probes, "hygiene/no-secrets"); strings.Contains(v, "\n") == strings.Contains(p.Script, shell.Quote("s"+v)) {
			t.Errorf("secret %q in the secrets probe: %v", v, !strings.Contains(v, "\n"))
		}
		if p := probeByName(t, probes, "unit/u"+v+".service/active"); !strings.Contains(p.Prelude, shell.Quote("u"+v+".service")) {
			t.Errorf("the units prelude does not quote the unit:\n%s", p.Prelude)
		}
	}
}

// TestProbeArgumentsArriveIntact runs the probes that hand a value to a command with stand-ins
// for those commands: each gets the value as one argument, and nothing else runs.
func TestProbeArgumentsArriveIntact(t *testing.T) {
	v := hostileLines
	s := hostileSpec(v)
	probes := Probes(s)
	for _, c := range []struct {
		probe string
		want  []string
	}{
		{"binary/b" + v + "/sha256", []string{"sha256sum", "/opt/" + v + "/bin"}},
		{"binary/b" + v + "/version", []string{"timeout", "300", "/opt/" + v + "/bin", "--version"}},
		{"packages/versions", []string{"dpkg-query", "-W", "-f", "${Package}=${Version} ${db:Status-Status}\\n", "p" + v}},
		{"sysctl/net." + v, []string{"sysctl", "-n", "net." + v}},
	} {
		dir := t.TempDir()
		log := filepath.Join(dir, "log")
		cmd := exec.Command("sh", "-c", probeByName(t, probes, c.probe).Script)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + recordingPath(t, log, "sha256sum", "timeout", "dpkg-query", "sysctl", "touch", "id"), "KB=" + dir, "HOME=/nonexistent"}
		cmd.CombinedOutput()
		if got := readLog(t, log); strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s ran %q, want %q", c.probe, got, c.want)
		}
	}
	// The probes that only test paths and look for names: they run, print their verdict and
	// run nothing a value holds.
	for _, name := range []string{"role/marker", "module/m" + v + "/loaded", "cni/c" + v, "tool/t" + v} {
		dir := t.TempDir()
		log := filepath.Join(dir, "log")
		cmd := exec.Command("sh", "-c", probeByName(t, probes, name).Script)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + recordingPath(t, log, "touch", "id"), "KB=" + dir}
		out, _ := cmd.CombinedOutput()
		if got := readLog(t, log); got != nil {
			t.Errorf("%s ran %q", name, got)
		}
		if _, err := os.Stat(filepath.Join(dir, "PWNED")); err == nil {
			t.Errorf("%s ran a command from a value", name)
		}
		switch name {
		case "role/marker":
			if want := "r" + v + "=absent\n"; !strings.Contains(string(out), want) {
				t.Errorf("marker probe printed %q, want %q in it", out, want)
			}
		case "cni/c" + v:
			if string(out) != "missing\n" {
				t.Errorf("cni probe printed %q", out)
			}
		}
	}
}

// TestBuildScriptDelimiter: a probe whose script holds its here-document's usual delimiter as a
// line (a quoted value with line breaks) still runs as written.
func TestBuildScriptDelimiter(t *testing.T) {
	text := "a\nKUBEBAKE_PROBE_0_EOF\nKUBEBAKE_PROBE_0_EOF_1\nKUBEBAKE_RUN_EOF\nb"
	ps := []Probe{
		{Name: "a", Script: "printf '%s' " + shell.Quote(text)},
		{Name: "b", Script: "echo second"},
	}
	out, err := exec.Command("sh", "-c", BuildScript(ps)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := ParseScriptOutput(ps, string(out))
	if got["a"].Text != text || got["b"].Text != "second" {
		t.Errorf("outputs %+v", got)
	}
}

// TestUnitScriptHostileName: a unit name with a backslash (systemd's \x2d escapes), quotes and
// a dollar sign still picks its own job line.
func TestUnitScriptHostileName(t *testing.T) {
	kb := t.TempDir()
	u := `dev-disk-by\x2dlabel-it's"$HOME".device`
	os.WriteFile(filepath.Join(kb, "units"), []byte("Id=a.service\n\nId="+u+"\nActiveState=inactive\n"), 0o644)
	os.WriteFile(filepath.Join(kb, "jobs"), []byte("12 a.service start running\n13 "+u+" start waiting\n"), 0o644)
	cmd := exec.Command("sh", "-c", unitScript(u, 2))
	cmd.Env = append(os.Environ(), "KB="+kb)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if kv := (Output{Text: string(out)}).KV(); kv["Id"] != u || kv["Job"] != "start/waiting" {
		t.Errorf("unit script printed %q", out)
	}
}

func TestSpecCheckRefusesNUL(t *testing.T) {
	if err := hostileSpec(hostileLines).Check(); err != nil {
		t.Errorf("a spec without NUL refused: %v", err)
	}
	for name, mod := range map[string]func(*Spec){
		"binary path": func(s *Spec) { s.Binaries[0].Path = "/bin/a\x00b" },
		"unit":        func(s *Spec) { s.Roles["x"] = []string{"a\x00.service"} },
		"sysctl":      func(s *Spec) { s.Sysctls["a\x00"] = "1" },
		"module":      func(s *Spec) { s.Modules = append(s.Modules, "\x00") },
		"package":     func(s *Spec) { s.Packages[0].Name = "p\x00" },
		"secret":      func(s *Spec) { s.Secrets = []string{"top-secret\x00"} },
	} {
		s := hostileSpec("ok")
		mod(&s)
		err := s.Check()
		if !errors.Is(err, shell.ErrNUL) {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if strings.Contains(err.Error(), "top-secret") {
			t.Errorf("the error quotes a secret: %v", err)
		}
	}
}

// TestSSHCommandQuotesTheKeyFile: the login line a kept node reports survives a key file
// folder with spaces and quotes.
func TestSSHCommandQuotesTheKeyFile(t *testing.T) {
	key := "/tmp/my artifacts/it's $(touch PWNED)/node-id_ed25519"
	line := sshCommand(key, "2222")
	out, err := exec.Command("sh", "-c", "set -- "+line+"; printf '%s\\0' \"$@\"").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ssh", "-i", key, "-p", "2222", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "root@127.0.0.1"}
	if got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("%s\nparsed as %q", line, got)
	}
	if plain := sshCommand("/tmp/kb/node-id_ed25519", "2222"); plain != "ssh -i /tmp/kb/node-id_ed25519 -p 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1" {
		t.Errorf("plain login line changed: %s", plain)
	}
}

// TestHTTPGetCommandIPv6: a bracketed IPv6 address reaches socat as it is (unquoted, the
// shell would read [..] as a glob).
func TestHTTPGetCommandIPv6(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	// A file the glob [fd00::1]:80,... could match if the address were left bare.
	os.WriteFile(filepath.Join(dir, "TCP:f:80,connect-timeout=5"), nil, 0o644)
	cmd := exec.Command("sh", "-c", httpGetCommand("fd00::1", 80))
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + recordingPath(t, log, "socat")}
	cmd.Run()
	want := []string{"socat", "-t", "10", "-", "TCP:[fd00::1]:80,connect-timeout=5"}
	if got := readLog(t, log); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("ran %q, want %q", got, want)
	}
}
