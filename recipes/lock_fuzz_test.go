package recipes

import (
	"bytes"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// FuzzParseLock: no input makes the lock parser panic; every error names the file first and
// is one line; and a lock that parses round-trips: MarshalLock writes bytes that parse to the
// same lock, and writing that again gives the same bytes (and the same LockHash). "The same"
// is up to what MarshalLock normalises on purpose: artifacts sorted by name (stable) and a
// null or missing artifact list written as [].
//
//	go test -run='^$' -fuzz='^FuzzParseLock$' -fuzztime=30s ./recipes/
func FuzzParseLock(f *testing.F) {
	for _, name := range EmbeddedNames() {
		if data, err := EmbeddedFile(name + ".lock"); err == nil {
			f.Add(data)
		}
	}
	if r, err := Load("debian-12"); err == nil {
		data, err := MarshalLock(fakeLock(r))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		good := string(data)
		f.Add([]byte(good[:len(good)/2]))                                                                       // truncated
		f.Add([]byte(good + good))                                                                              // two objects
		f.Add([]byte(strings.Replace(good, `"recipe":`, `"recipee": "x", "recipe":`, 1)))                       // unknown field
		f.Add([]byte(strings.Replace(good, "  \"sourceDateEpoch\"", "<<<<<<< HEAD\n  \"sourceDateEpoch\"", 1))) // conflict
	}
	for _, s := range []string{
		"", "null", "{}", "[]", "not json at all\n", ">>>>>>>\n",
		"apiVersion: kubebake.dev/v1alpha1\nkind: Lock\n",
		`{"apiVersion":"kubebake.dev/v1alpha1","kind":"Lock"}`,
		`{"apiVersion":"kubebake.dev/v1alpha1","kind":"Lock","artifacts":null}`,
		`{"apiVersion":"kubebake.dev/v1alpha1","kind":"Lock","artifacts":[null,{"name":"b"},{"name":"a","size":-1}]}`,
		`{"APIVERSION":"kubebake.dev/v1alpha1","kind":"Lock","recipe":"<&>\u2028\ud800","sourceDateEpoch":-9223372036854775808}`,
		`{"apiVersion":"kubebake.dev/v1alpha1","kind":"Lock","sourceDateEpoch":1e3}`,
		`{"apiVersion":"kubebake.dev/v1alpha1","kind":"Lock"} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "dir/f.lock"
		l, err := parseLock(name, data)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, name+": ") || strings.Contains(msg, "\n") {
				t.Fatalf("error does not name the file on one line: %q", msg)
			}
			return
		}
		out, err := MarshalLock(l)
		if err != nil {
			t.Fatalf("MarshalLock of a parsed lock: %v", err)
		}
		back, err := parseLock(name, out)
		if err != nil {
			t.Fatalf("parseLock refuses what MarshalLock wrote: %v\n%s", err, out)
		}
		want := *l
		want.Artifacts = slices.Clone(l.Artifacts)
		if want.Artifacts == nil {
			want.Artifacts = []LockedArtifact{}
		}
		sort.SliceStable(want.Artifacts, func(i, j int) bool { return want.Artifacts[i].Name < want.Artifacts[j].Name })
		// MarshalLock writes the package set sorted by name too (a lock whose packages came
		// in another order reads back sorted).
		want.Packages = slices.Clone(l.Packages)
		sort.SliceStable(want.Packages, func(i, j int) bool { return want.Packages[i].Name < want.Packages[j].Name })
		if !reflect.DeepEqual(*back, want) {
			t.Fatalf("the lock changed in a round trip:\n got %#v\nwant %#v", *back, want)
		}
		again, err := MarshalLock(back)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("MarshalLock is not stable:\n%s\nthen\n%s", out, again)
		}
		if LockHash(l) != LockHash(back) {
			t.Fatal("LockHash changed in a round trip")
		}
	})
}
