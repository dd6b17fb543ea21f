// Package redact keeps secrets out of what kubebake logs and saves: the credentials of URLs
// (https://user:password@host/ becomes https://***@host/), PEM private keys, and the strings a
// caller names as secret (a cluster bundle's token and CA key, a mirror's password).
package redact

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Mask replaces what is hidden.
const Mask = "***"

// MinSecretLen is the length below which a secret is not searched for in free text: a
// two-letter password would otherwise blank every word that contains it. URL credentials are
// hidden whatever their length (URLs).
const MinSecretLen = 4

// userinfoRE finds the userinfo of URLs in free text: scheme "://" then everything up to the
// last "@" before the host ends (greedy, as net/url reads an authority).
var userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s"'<>]*@`)

// URLs replaces the userinfo of every URL in s by Mask.
func URLs(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return userinfoRE.ReplaceAllString(s, "${1}"+Mask+"@")
}

// URL is URLs for a string that is one URL: https://user:pass@host/x -> https://***@host/x.
func URL(u string) string { return URLs(u) }

// Userinfo splits a URL into the URL without its userinfo and the (decoded) user name and
// password. A string that does not parse as a URL, or has no userinfo, comes back as it is.
func Userinfo(raw string) (clean, user, password string, ok bool) {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw, "", "", false
	}
	user = u.User.Username()
	password, _ = u.User.Password()
	u.User = nil
	return u.String(), user, password, true
}

// StripUserinfo is the URL without its credentials (as apt sources or a log may show it).
func StripUserinfo(raw string) string {
	clean, _, _, _ := Userinfo(raw)
	return clean
}

// URLSecrets are the strings that give away a URL's credentials: the password as written and
// decoded, and the userinfo as written. Nil for a URL without a password.
func URLSecrets(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return nil
	}
	p, ok := u.User.Password()
	if !ok || p == "" {
		return nil
	}
	out := []string{p, u.User.String()}
	if _, enc, found := strings.Cut(u.User.String(), ":"); found {
		out = append(out, enc) // percent-encoded password
	}
	return out
}

// privateKeyRE matches a PEM private key block (RSA, EC, OPENSSH, ENCRYPTED, PKCS#8).
var privateKeyRE = regexp.MustCompile(`(?s)-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END ([A-Z0-9 ]*)PRIVATE KEY-----`)

// PrivateKeys replaces the body of every PEM private key block in s by Mask.
func PrivateKeys(s string) string {
	if !strings.Contains(s, "PRIVATE KEY-----") {
		return s
	}
	return privateKeyRE.ReplaceAllString(s, "-----BEGIN ${1}PRIVATE KEY-----"+Mask+"-----END ${2}PRIVATE KEY-----")
}

// Redactor hides a set of secret strings, URL credentials and PEM private keys in text. The
// nil *Redactor is ready to use and hides URL credentials and private keys only.
type Redactor struct {
	secrets  []string
	replacer *strings.Replacer
}

// New returns a Redactor for secrets. Each is hidden as a whole; a multi-line secret (a PEM
// key) is also hidden line by line, so a log that re-wraps or quotes it leaks no line of it.
// Empty secrets and ones shorter than MinSecretLen are ignored.
func New(secrets ...string) *Redactor {
	seen := map[string]bool{}
	var list []string
	add := func(s string) {
		if len(s) >= MinSecretLen && !seen[s] {
			seen[s] = true
			list = append(list, s)
		}
	}
	for _, s := range secrets {
		add(s)
		add(strings.TrimSpace(s))
		if !strings.Contains(s, "\n") {
			continue
		}
		for _, line := range strings.Split(s, "\n") {
			line = strings.TrimSpace(line)
			// PEM armour ("-----BEGIN RSA PRIVATE KEY-----") is no secret; the body lines are.
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				add(line)
			}
		}
	}
	// Longest first: a secret that contains another is hidden whole.
	slices.SortStableFunc(list, func(a, b string) int { return len(b) - len(a) })
	r := &Redactor{secrets: list}
	if len(list) > 0 {
		pairs := make([]string, 0, 2*len(list))
		for _, s := range list {
			pairs = append(pairs, s, Mask)
		}
		r.replacer = strings.NewReplacer(pairs...)
	}
	return r
}

// With returns a Redactor that also hides more secrets.
func (r *Redactor) With(more ...string) *Redactor {
	if r == nil {
		return New(more...)
	}
	return New(append(slices.Clone(r.secrets), more...)...)
}

// Empty reports whether r hides no secret strings (it still hides URL credentials and keys).
func (r *Redactor) Empty() bool { return r == nil || len(r.secrets) == 0 }

// String hides the secrets, URL credentials and private keys in s.
func (r *Redactor) String(s string) string {
	s = PrivateKeys(URLs(s))
	if r != nil && r.replacer != nil {
		s = r.replacer.Replace(s)
	}
	return s
}

// Bytes is String for bytes.
func (r *Redactor) Bytes(b []byte) []byte { return []byte(r.String(string(b))) }

// Contains reports whether s holds one of r's secrets as it is (a check for tests and for
// callers that refuse rather than hide).
func (r *Redactor) Contains(s string) bool {
	if r == nil {
		return false
	}
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			return true
		}
	}
	return false
}

// Error wraps err so that its message is redacted; errors.Is and errors.As still see err.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := r.String(msg); red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
}

// Err is Error of the nil Redactor: err with URL credentials and private keys hidden in
// its message.
func Err(err error) error { return (*Redactor)(nil).Error(err) }

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// Handler wraps a slog handler so that every record's message and attribute values pass
// through r (nil: URL credentials and private keys only) before they are written.
func Handler(h slog.Handler, r *Redactor) slog.Handler {
	return &handler{h: h, r: r}
}

type handler struct {
	h slog.Handler
	r *Redactor
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = h.attr(a)
	}
	return &handler{h: h.h.WithAttrs(red), r: h.r}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{h: h.h.WithGroup(name), r: h.r}
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = h.attr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.r.String(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.r.String(x.String()))
		case []byte:
			return slog.String(a.Key, h.r.String(string(x)))
		case []string:
			red := make([]string, len(x))
			for i, s := range x {
				red[i] = h.r.String(s)
			}
			return slog.Any(a.Key, red)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
