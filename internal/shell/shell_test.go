package shell

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hostile are strings that break hand-made quoting: every one must reach a command as it is.
var hostile = []string{
	"",
	"plain",
	"/usr/bin/kubelet",
	"it's",
	"'",
	"''",
	`'\''`,
	`"double" quotes`,
	`"`,
	`back\slash`,
	`\`,
	`trailing\`,
	`\n not a newline`,
	"new\nline",
	"\n",
	"\nEOF\n",
	"ends with newline\n",
	"cr\rlf\r\n",
	"$(id)",
	"`id`",
	"$HOME",
	"${HOME}",
	"$((1+1))",
	"$",
	"$1 $@ $* $# $? $$ $! $-",
	"*",
	"?",
	"[a]",
	"/etc/*",
	"{a,b}",
	"-n",
	"-e",
	"--help",
	"-",
	"a;b",
	"; rm -rf /tmp/nothing-here",
	"a && b",
	"a || b",
	"a | b",
	"a & b",
	"a > b",
	"< /etc/passwd",
	"(sub)",
	"#not a comment",
	"a #b",
	"~",
	"~root",
	"a:~/x",
	"~/.ssh",
	"x=y",
	"PATH=/nowhere",
	"  leading and trailing spaces  ",
	"tab\there",
	"\t",
	" ",
	"héllo wörld ✓ 日本語 🚀",
	"\xff\xfe invalid utf-8 \x80",
	"\x01\x02\x1b[31mcontrol\x7f",
	"!",
	"!!",
	"a^b",
	"%s %d %%",
	"@:,./+-_%",
	"x\\'y",
	"'\"'\"'",
	strings.Repeat("'", 100),
	strings.Repeat("a'b\"c$d`e\\f\ng ", 300),
}

// shells are the POSIX shells to try: /bin/sh always, bash and busybox's ash when installed.
func shells(t *testing.T) [][]string {
	t.Helper()
	out := [][]string{{"/bin/sh"}}
	for _, s := range []string{"dash", "bash"} {
		if p, err := exec.LookPath(s); err == nil {
			out = append(out, []string{p})
		}
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		out = append(out, []string{p, "sh"})
	}
	return out
}

// runSh runs script with the shell sh: with -c when it fits in one argument (Linux limits one
// to 128 KiB), else from a file.
func runSh(t *testing.T, sh []string, script string) []byte {
	t.Helper()
	var cmd *exec.Cmd
	if len(script) < 100_000 {
		cmd = exec.Command(sh[0], append(sh[1:], "-c", script)...)
	} else {
		f := filepath.Join(t.TempDir(), "script")
		if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(sh[0], append(sh[1:], f)...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s\nscript:\n%.2000s", sh, err, stderr.Bytes(), script)
	}
	return out
}

// printed splits printf '%s\0' output.
func printed(out []byte) []string {
	if len(out) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

func TestQuoteReachesTheCommandIntact(t *testing.T) {
	// One script per shell: each string as an argument, as an assignment's value (where ~
	// after : would expand) read back in double quotes, and inside a command substitution (a
	// fresh parse); printf '%s\0' separates them.
	var script strings.Builder
	var want []string
	for _, s := range hostile {
		q := Quote(s)
		script.WriteString("printf '%s\\0' " + q + "\n")
		script.WriteString("x=" + q + "; printf '%s\\0' \"$x\"\n")
		script.WriteString("x=$(printf '%s.' " + q + "); printf '%s\\0' \"$x\"\n")
		want = append(want, s, s, s+".")
	}
	for _, sh := range shells(t) {
		got := printed(runSh(t, sh, script.String()))
		if len(got) != len(want) {
			t.Fatalf("%v: %d words, want %d", sh, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%v: %s (form %d) gave %q, want %q", sh, Quote(hostile[i/3]), i%3, got[i], want[i])
			}
		}
	}
}

func TestQuoteForms(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "''",
		"/usr/bin/kubelet": "/usr/bin/kubelet",
		"v1.35.4+k3s":      "v1.35.4+k3s",
		"10.96.0.0/12":     "10.96.0.0/12",
		"a b":              "'a b'",
		"it's":             `'it'\''s'`,
		"x=y":              "'x=y'",
		"~root":            "'~root'",
		"[a]":              "'[a]'",
		"*":                "'*'",
		"héllo":            "'héllo'",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestLongStrings(t *testing.T) {
	long := strings.Repeat("x'y\"z$(id)\n\\`*", 1<<14) // 256 KiB: run from a file
	mid := strings.Repeat("a b'c", 15_000)             // 75 kB: fits sh -c
	for _, sh := range shells(t) {
		for _, s := range []string{long, mid} {
			if got := runSh(t, sh, "printf '%s\\0' "+Quote(s)); string(got) != s+"\x00" {
				t.Errorf("%v: a string of %d bytes came back as %d bytes", sh, len(s), len(got)-1)
			}
		}
	}
}

func TestJoin(t *testing.T) {
	args := append([]string{"printf", "%s\\0"}, hostile...)
	for _, sh := range shells(t) {
		got := printed(runSh(t, sh, Join(args...)))
		if len(got) != len(hostile) {
			t.Fatalf("%v: %d words, want %d", sh, len(got), len(hostile))
		}
		for i := range got {
			if got[i] != hostile[i] {
				t.Errorf("%v: word %d is %q, want %q", sh, i, got[i], hostile[i])
			}
		}
		// set -- gives the count: an empty argument stays one word, no word splits.
		if got := runSh(t, sh, "set -- "+Join("", "a b", "", "*")+"; echo $#"); string(got) != "4\n" {
			t.Errorf("%v: set -- gave %q words", sh, got)
		}
	}
	if Join() != "" {
		t.Errorf("Join() = %q", Join())
	}
}

// TestRandomBytes: random strings of every byte but NUL, all in one script per shell.
func TestRandomBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var in []string
	for range 300 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(1 + r.IntN(255))
		}
		in = append(in, string(b))
	}
	script := "printf '%s\\0' " + Join(in...)
	for _, sh := range shells(t) {
		got := printed(runSh(t, sh, script))
		if len(got) != len(in) {
			t.Fatalf("%v: %d words, want %d", sh, len(got), len(in))
		}
		for i := range got {
			if got[i] != in[i] {
				t.Errorf("%v: %q came back as %q", sh, in[i], got[i])
			}
		}
	}
}

func TestNULIsRefused(t *testing.T) {
	for _, s := range []string{"\x00", "a\x00b", "trailing\x00"} {
		if _, err := QuoteErr(s); !errors.Is(err, ErrNUL) {
			t.Errorf("QuoteErr(%q): %v", s, err)
		}
		if _, err := JoinErr("ok", s); !errors.Is(err, ErrNUL) || !strings.Contains(err.Error(), "value 2") {
			t.Errorf("JoinErr: %v", err)
		}
		if err := Check("fine", "", s); !errors.Is(err, ErrNUL) {
			t.Errorf("Check: %v", err)
		}
		if _, err := HeredocEscape(s); !errors.Is(err, ErrNUL) {
			t.Errorf("HeredocEscape(%q): %v", s, err)
		}
		for name, f := range map[string]func(){"Quote": func() { Quote(s) }, "Join": func() { Join("a", s) }} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s(%q) did not panic", name, s)
					}
				}()
				f()
			}()
		}
	}
	if err := Check(hostile...); err != nil {
		t.Errorf("Check refused a string without NUL: %v", err)
	}
	if strings.Contains(ErrNUL.Error(), "\x00") {
		t.Error("the error quotes the value")
	}
}

func TestHeredocDelimiter(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{"plain\n", "EOF"},
		{"EOF\n", "EOF_1"},
		{"a\nEOF\nEOF_1\nb", "EOF_2"},
		{"EOF_1\n", "EOF"},
		{" EOF\nEOF \n", "EOF"},
	} {
		d := HeredocDelimiter("EOF", c.body)
		if d != c.want {
			t.Errorf("HeredocDelimiter(%q) = %s, want %s", c.body, d, c.want)
		}
		body := c.body
		if !strings.HasSuffix(body, "\n") {
			body += "\n"
		}
		for _, sh := range shells(t) {
			out := runSh(t, sh, "cat <<'"+d+"'\n"+body+d+"\necho after\n")
			if string(out) != body+"after\n" {
				t.Errorf("%v: here-document %q printed %q", sh, body, out)
			}
		}
	}
}

func TestHeredocEscape(t *testing.T) {
	var script strings.Builder
	var want strings.Builder
	script.WriteString("HOME=/h; x=X; cat <<EOF\n")
	for _, s := range hostile {
		e, err := HeredocEscape(s)
		if strings.ContainsAny(s, "\n\r") {
			if err == nil {
				t.Errorf("HeredocEscape(%q) accepted a line break", s)
			}
			continue
		}
		if err != nil {
			t.Fatalf("HeredocEscape(%q): %v", s, err)
		}
		script.WriteString("<" + e + "> $x\n")
		want.WriteString("<" + s + "> X\n")
	}
	script.WriteString("EOF\n")
	for _, sh := range shells(t) {
		if out := runSh(t, sh, script.String()); string(out) != want.String() {
			t.Errorf("%v: the unquoted here-document printed\n%q\nwant\n%q", sh, out, want.String())
		}
	}
	if e, _ := HeredocEscape("unix:///run/containerd/containerd.sock"); e != "unix:///run/containerd/containerd.sock" {
		t.Errorf("a plain value changed: %s", e)
	}
}

func TestComment(t *testing.T) {
	var script strings.Builder
	for _, s := range append(hostile, "a\x00b\nid\n") {
		script.WriteString("# " + Comment(s) + "\n")
	}
	script.WriteString("echo ok\n")
	for _, sh := range shells(t) {
		if out := runSh(t, sh, script.String()); string(out) != "ok\n" {
			t.Errorf("%v: a comment ran something: %q", sh, out)
		}
	}
}
