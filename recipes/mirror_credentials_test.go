package recipes

import (
	"strings"
	"testing"
)

// A base.mirror with credentials is accepted with a warning that names no credential; a bad
// one is refused without showing them either.
func TestLintMirrorCredentials(t *testing.T) {
	const pass = "s3cr3t-Pa55"
	src := mutate(t, e("  # mirror: leave it out", "  mirror: https://apt:"+pass+"@mirror.invalid/debian\n  # mirror: leave it out"))
	r, err := Parse("m.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	fs := Lint(r)
	if err := LintError(fs); err != nil {
		t.Fatalf("a mirror with credentials fails lint: %v", err)
	}
	var warned bool
	for _, f := range fs {
		if strings.Contains(f.String(), pass) {
			t.Errorf("a finding shows the password: %s", f)
		}
		if f.Field == "base.mirror" && f.Severity == SeverityWarning && strings.Contains(f.Message, "build time only") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning that the credentials are for the build only: %v", fs)
	}

	src = mutate(t, e("  # mirror: leave it out", "  mirror: ftp://apt:"+pass+"@mirror.invalid/debian\n  # mirror: leave it out"))
	if r, err = Parse("m.yaml", []byte(src)); err != nil {
		t.Fatal(err)
	}
	err = LintError(Lint(r))
	if err == nil || strings.Contains(err.Error(), pass) || !strings.Contains(err.Error(), "ftp://***@mirror.invalid/debian") {
		t.Errorf("err = %v", err)
	}
}

// The inputs digest (and so the lock) holds no trace of a mirror's credentials: adding or
// changing them is no drift.
func TestInputsDigestIgnoresMirrorCredentials(t *testing.T) {
	r, err := Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	r.Base.Mirror = "http://127.0.0.1:8080/debian"
	plain := r.InputsDigest()
	r.Base.Mirror = "http://apt:one@127.0.0.1:8080/debian"
	one := r.InputsDigest()
	r.Base.Mirror = "http://apt:two@127.0.0.1:8080/debian"
	if two := r.InputsDigest(); plain != one || one != two {
		t.Errorf("digests %s %s %s differ with the credentials", plain, one, two)
	}
	r.Base.Mirror = "http://127.0.0.1:8081/debian"
	if r.InputsDigest() == plain {
		t.Error("the digest ignores the mirror itself")
	}
	for _, in := range r.Inputs() {
		if in.Kind == InputDeb && in.Mirror != r.Base.Mirror {
			t.Errorf("%s: mirror %q, want the recipe's (with its credentials, for the download)", in.Name, in.Mirror)
		}
	}
}
