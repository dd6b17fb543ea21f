// Package shell is the one way kubebake puts a value into generated POSIX shell: user-data
// scripts, the node layer's scripts and verify's guest probes. A value goes in through Quote
// (or Join) and comes out of the shell's parsing as exactly the same string, one word, with no
// expansion of any kind, whatever it holds; the generated script is then safe because of how it
// is written, not because some other package happened to constrain its inputs.
//
// One thing cannot be passed: a NUL byte. Shells hold words as C strings (dash and busybox cut
// a word at the NUL, bash drops it with a warning), so a string with a NUL cannot reach a
// command intact. Quote and Join panic on one, as on a programming error: code whose values
// come from outside (a manifest, a bundle, a recipe, a command line) calls Check, QuoteErr or
// JoinErr first and reports the error.
package shell

import (
	"errors"
	"strconv"
	"strings"
)

// ErrNUL is the error for a value holding a NUL byte. It never quotes the value, which may be
// a secret.
var ErrNUL = errors.New("a value holds a NUL byte, which no shell command can receive")

// Check returns ErrNUL (wrapped, with the value's position) when one of ss holds a NUL byte.
func Check(ss ...string) error {
	for i, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			if len(ss) == 1 {
				return ErrNUL
			}
			return &nulError{i}
		}
	}
	return nil
}

type nulError struct{ index int }

func (e *nulError) Error() string {
	return "value " + strconv.Itoa(e.index+1) + ": " + ErrNUL.Error()
}

func (e *nulError) Unwrap() error { return ErrNUL }

// safe reports whether s can stand bare as a word: ASCII letters, digits and _@%+:,./- only.
// Nothing in that set is special to a POSIX shell anywhere in a word ('=' is left out, since
// NAME=x in a command's first word is an assignment, and '~' since it expands at a word's start
// and after ':' in an assignment).
func safe(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("_@%+:,./-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Quote returns s as one POSIX sh word that the shell reads back as exactly s: a plain word
// (letters, digits, _@%+:,./-) as it is, anything else in single quotes, where each single
// quote of s closes the quoting, is written \' and reopens it. The empty string becomes a pair
// of single quotes. Quoting says nothing about what a command makes of its
// arguments: a value that may start with '-' still needs "--" (or a "./" prefix) in front.
//
// Quote panics when s holds a NUL byte (see the package comment): check outside values with
// Check or QuoteErr first.
func Quote(s string) string {
	q, err := QuoteErr(s)
	if err != nil {
		panic("shell.Quote: " + err.Error())
	}
	return q
}

// QuoteErr is Quote returning ErrNUL instead of panicking.
func QuoteErr(s string) (string, error) {
	if err := Check(s); err != nil {
		return "", err
	}
	if safe(s) {
		return s, nil
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'", nil
}

// Join quotes each argument and joins them with spaces: a command line whose words are
// exactly args. It panics on a NUL byte, as Quote does.
func Join(args ...string) string {
	j, err := JoinErr(args...)
	if err != nil {
		panic("shell.Join: " + err.Error())
	}
	return j
}

// JoinErr is Join returning an error (ErrNUL wrapped) instead of panicking.
func JoinErr(args ...string) (string, error) {
	if err := Check(args...); err != nil {
		return "", err
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i], _ = QuoteErr(a)
	}
	return strings.Join(q, " "), nil
}

// HeredocDelimiter returns a here-document delimiter for body: base when no line of body is
// base, else base with the first suffix _1, _2, ... that is no line of body either, so that
// the body cannot end the here-document early. base must be a plain word (letters, digits, _);
// write it quoted after << ('DELIM') so that the body is not expanded.
func HeredocDelimiter(base, body string) string {
	lines := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, base) {
			lines[l] = true
		}
	}
	d := base
	for n := 1; lines[d]; n++ {
		d = base + "_" + strconv.Itoa(n)
	}
	return d
}

// HeredocEscape escapes s for the body of an unquoted here-document (<<DELIM, whose body the
// shell expands as in double quotes): each \, $ and ` gets a backslash, so that the line reads
// back as s. A line break could end the here-document (a line equal to its delimiter) and is
// refused, as is a NUL byte.
func HeredocEscape(s string) (string, error) {
	if err := Check(s); err != nil {
		return "", err
	}
	if strings.ContainsAny(s, "\n\r") {
		return "", errors.New("a value for a here-document holds a line break")
	}
	if !strings.ContainsAny(s, "\\$`") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\\' || c == '$' || c == '`' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String(), nil
}

// Comment returns s fit to follow # on one line of a script: line breaks and NUL bytes become
// spaces, so that nothing in s can end the comment and start a command.
func Comment(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '\n', '\r', 0:
			return ' '
		}
		return r
	}, s)
}
