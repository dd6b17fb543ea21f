package diskedit

import (
	"context"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/etc/hostname":    "/etc/hostname",
		"/etc/a b":         `"/etc/a b"`,
		`/etc/a"b`:         `"/etc/a""b"`,
		`/etc/back\slash`:  `/etc/back\slash`,
		`/etc/"q" \ 'x'	t`: `"/etc/""q"" \ 'x'	t"`,
		"":                 `""`,
	} {
		if got, err := quote(in); err != nil || got != want {
			t.Errorf("quote(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"/etc/a\nb", "/etc/a\x00b"} {
		if _, err := quote(bad); err == nil {
			t.Errorf("quote(%q) accepted", bad)
		}
	}
}

// TestHostileNames: files whose names hold blanks, quotes, backslashes and shell syntax are
// written, read, found and removed by their exact names.
func TestHostileNames(t *testing.T) {
	ctx := context.Background()
	e, err := Open(ctx, makeImage(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		`/etc/a "quoted" name`,
		`/etc/"`,
		`/etc/back\slash and "\"`,
		"/etc/it's $(id) `id` *?[a] ;|&\ttab",
	} {
		content := []byte("content of " + name + "\n")
		if err := e.WriteFile(ctx, name, content, 0o600); err != nil {
			t.Fatalf("WriteFile(%q): %v", name, err)
		}
		if !e.Exists(ctx, name) {
			t.Errorf("%q not found after WriteFile", name)
		}
		if got, err := e.ReadFile(ctx, name); err != nil || string(got) != string(content) {
			t.Errorf("ReadFile(%q) = %q, %v", name, got, err)
		}
		if err := e.Remove(ctx, name); err != nil || e.Exists(ctx, name) {
			t.Errorf("Remove(%q): %v", name, err)
		}
	}
	// The names above are not mistaken for others: /etc/hostname is as it was.
	if got, _ := e.ReadFile(ctx, "/etc/hostname"); string(got) != "node\n" {
		t.Errorf("/etc/hostname reads %q", got)
	}
	if err := e.WriteFile(ctx, "/etc/new\nline", nil, 0o644); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Errorf("a name with a line break: %v", err)
	}
}
