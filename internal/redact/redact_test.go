package redact

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
)

func TestURLs(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"https://user:pass@mirror.example/debian", "https://***@mirror.example/debian"},
		{"https://user@mirror.example/debian", "https://***@mirror.example/debian"},
		{"http://u%40corp:p%2Fa%3Ass@10.0.0.1:8080/debian/", "http://***@10.0.0.1:8080/debian/"},
		{"http://u:p@ss@host/x", "http://***@host/x"}, // net/url reads up to the last "@"
		{"https://mirror.example/debian", "https://mirror.example/debian"},
		{"https://mirror.example/~user@x/debian", "https://mirror.example/~user@x/debian"}, // "@" in the path
		{"no url here, mail root@localhost", "no url here, mail root@localhost"},
		{"deb http://a:b@h/debian bookworm main\nErr:1 http://a:b@h/debian bookworm InRelease",
			"deb http://***@h/debian bookworm main\nErr:1 http://***@h/debian bookworm InRelease"},
		{`url="https://x:y@h/p" other=https://h2/`, `url="https://***@h/p" other=https://h2/`},
	} {
		if got := URLs(c.in); got != c.want {
			t.Errorf("URLs(%q) = %q, want %q", c.in, got, c.want)
		}
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestUserinfo(t *testing.T) {
	for _, c := range []struct {
		in, clean, user, pass string
		ok                    bool
	}{
		{"https://user:pass@mirror.example/debian", "https://mirror.example/debian", "user", "pass", true},
		{"https://user@mirror.example/debian", "https://mirror.example/debian", "user", "", true},
		{"http://u%40corp:p%2Fa%3Ass@10.0.0.1:8080/debian", "http://10.0.0.1:8080/debian", "u@corp", "p/a:ss", true},
		{"https://mirror.example/debian", "https://mirror.example/debian", "", "", false},
		{"file:///srv/debian", "file:///srv/debian", "", "", false},
		{"::not a url", "::not a url", "", "", false},
	} {
		clean, user, pass, ok := Userinfo(c.in)
		if clean != c.clean || user != c.user || pass != c.pass || ok != c.ok {
			t.Errorf("Userinfo(%q) = %q %q %q %v, want %q %q %q %v", c.in, clean, user, pass, ok, c.clean, c.user, c.pass, c.ok)
		}
		if got := StripUserinfo(c.in); got != c.clean {
			t.Errorf("StripUserinfo(%q) = %q", c.in, got)
		}
	}
}

func TestURLSecrets(t *testing.T) {
	got := URLSecrets("http://u%40corp:p%2Fa%3Ass@h/debian")
	want := []string{"p/a:ss", "u%40corp:p%2Fa%3Ass", "p%2Fa%3Ass"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("URLSecrets = %q, want %q", got, want)
	}
	if s := URLSecrets("https://user@h/"); s != nil {
		t.Errorf("a URL without a password has secrets %q", s)
	}
	if s := URLSecrets("https://h/"); s != nil {
		t.Errorf("a URL without userinfo has secrets %q", s)
	}
}

const testKey = `-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oabcdefghijkoAoGCCqGSM49
AwEHoUQDQgAE7xJ0i9bq3Kx2m3uVLtGm8GLPc2FJg2PSCKnhQ8dVYYUMxjlSpvQ
-----END EC PRIVATE KEY-----`

func TestRedactorMultiLine(t *testing.T) {
	token := "07401b.f395accd246ae52d"
	r := New(token, "f395accd246ae52d", testKey, "", "ab")
	text := "cloud-init[812]: kubeadm join 10.0.2.15:6443 --token " + token + " --discovery-token-ca-cert-hash sha256:00\n" +
		"write_files: content: '" + strings.ReplaceAll(testKey, "\n", `\n`) + "'\n" +
		"a line of the key alone: AwEHoUQDQgAE7xJ0i9bq3Kx2m3uVLtGm8GLPc2FJg2PSCKnhQ8dVYYUMxjlSpvQ\n" +
		"the key as it is:\n" + testKey + "\n" +
		"a mirror: deb http://apt:hunter22@h/debian bookworm main\n" +
		"an ab word stays: abc\n"
	got := r.String(text)
	for _, leak := range []string{"f395accd246ae52d", "MHcCAQEEIBkg4LVWM9", "AwEHoUQDQgAE7xJ0", "hunter22"} {
		if strings.Contains(got, leak) {
			t.Errorf("%q survived:\n%s", leak, got)
		}
	}
	for _, keep := range []string{"--discovery-token-ca-cert-hash sha256:00", "-----BEGIN EC PRIVATE KEY-----", "deb http://***@h/debian bookworm main", "an ab word stays: abc", "--token ***"} {
		if !strings.Contains(got, keep) {
			t.Errorf("%q is missing:\n%s", keep, got)
		}
	}
	if !r.Contains(text) || r.Contains(got) {
		t.Errorf("Contains: before %v, after %v", r.Contains(text), r.Contains(got))
	}
	if b := r.Bytes([]byte(text)); string(b) != got {
		t.Error("Bytes differs from String")
	}
}

// Any PEM private key is hidden, even one the Redactor was not told about; nil works.
func TestPrivateKeysAndNil(t *testing.T) {
	var r *Redactor
	in := "before\n" + strings.ReplaceAll(testKey, "EC ", "") + "\nafter https://u:p@h/"
	got := r.String(in)
	if strings.Contains(got, "MHcCAQEE") || !strings.Contains(got, "-----BEGIN PRIVATE KEY-----***-----END PRIVATE KEY-----") || !strings.HasSuffix(got, "after https://***@h/") {
		t.Errorf("got %q", got)
	}
	if !r.Empty() || !New("x").Empty() || New("long enough").Empty() { // "x" is too short to search for
		t.Error("Empty")
	}
	if got := r.With("s3cr3t-word").String("a s3cr3t-word b"); got != "a *** b" {
		t.Errorf("With: %q", got)
	}
}

func TestRedactorOverlap(t *testing.T) {
	r := New("secret", "my-secret-token")
	if got := r.String("my-secret-token and secret"); got != "*** and ***" {
		t.Errorf("got %q", got)
	}
}

func TestError(t *testing.T) {
	r := New("hunter22")
	base := &fs.PathError{Op: "open", Path: "/x/hunter22", Err: fs.ErrNotExist}
	err := r.Error(base)
	if strings.Contains(err.Error(), "hunter22") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v", err)
	}
	uerr := Err(&fs.PathError{Op: "get", Path: "https://u:hunter22@h/x", Err: fs.ErrPermission})
	if strings.Contains(uerr.Error(), "hunter22") || !errors.Is(uerr, fs.ErrPermission) {
		t.Errorf("Err = %v", uerr)
	}
	plain := errors.New("nothing to hide")
	if r.Error(plain) != plain || r.Error(nil) != nil {
		t.Error("an error without secrets is returned as it is")
	}
}

type stringer struct{}

func (stringer) String() string { return "dial https://bob:hunter22@h/" }

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewTextHandler(&buf, nil), New("tok3n-secret")))
	log = log.With("mirror", "https://bob:hunter22@h/debian")
	log.Info("fetch https://bob:hunter22@h/x", "err", errors.New("GET https://bob:hunter22@h/x: 401 tok3n-secret"),
		"s", stringer{}, "b", []byte("tok3n-secret"), "list", []string{"https://a:hunter22@h"},
		slog.Group("g", "k", "tok3n-secret"), "n", 3)
	out := buf.String()
	if strings.Contains(out, "hunter22") || strings.Contains(out, "tok3n-secret") {
		t.Errorf("a secret reached the log:\n%s", out)
	}
	if !strings.Contains(out, "n=3") || !strings.Contains(out, "https://***@h/debian") {
		t.Errorf("log lost its content:\n%s", out)
	}
	if !Handler(slog.NewTextHandler(&buf, nil), nil).Enabled(context.Background(), slog.LevelInfo) {
		t.Error("Enabled")
	}
}
