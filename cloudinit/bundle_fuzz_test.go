package cloudinit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParseBundle: no input makes ParseBundle (decode and Validate) panic; a bundle it
// accepts validates again, and writes (Marshal, YAML and JSON, as WriteBundle does) to bytes
// that parse back to the same bundle; and neither an error nor the bundle's String,
// GoString or LogValue shows a secret: the bootstrap token or a line of the CA key.
//
//	go test -run='^$' -fuzz='^FuzzParseBundle$' -fuzztime=30s ./cloudinit/
func FuzzParseBundle(f *testing.F) {
	var bundles []*Bundle
	for _, kt := range []KeyType{KeyECDSAP256, KeyRSA2048} {
		b, err := NewBundle("demo", BundleOptions{KeyType: kt, MasterEndpoint: "[fd00::1]:6443"})
		if err != nil {
			f.Fatal(err)
		}
		bundles = append(bundles, b)
	}
	for _, b := range bundles {
		for _, asJSON := range []bool{false, true} {
			data, err := b.Marshal(asJSON)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	// Broken ones, from a valid bundle: a missing or unknown field, a wrong type, a foreign key.
	b, other := bundles[0], bundles[1]
	for _, edit := range []func(m map[string]any){
		func(m map[string]any) { delete(m, "caKey") },
		func(m map[string]any) { m["caKeys"] = "x" },
		func(m map[string]any) { m["caKey"] = []string{"x"} },
		func(m map[string]any) { m["caKey"] = other.CAKey },
		func(m map[string]any) { m["caCertHash"] = other.CACertHash },
		func(m map[string]any) { m["bootstrapToken"] = "ABCDEF.0123456789abcdef" },
		func(m map[string]any) { m["masterEndpoint"] = "10.0.0.1" },
		func(m map[string]any) { m["apiVersion"] = "kubebake.dev/v9" },
	} {
		m := map[string]any{}
		data, _ := b.Marshal(false)
		if err := yaml.Unmarshal(data, &m); err != nil {
			f.Fatal(err)
		}
		edit(m)
		data, err := yaml.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// What the round trip caught (a key is no thing to commit, so these are made here rather
	// than kept in testdata/fuzz): PEM fields with more than the block in them.
	for _, edit := range pemFieldEdits {
		c := *b
		c.CACert, c.CAKey = edit.edit(c.CACert), edit.edit(c.CAKey)
		data, err := json.Marshal(&c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{"", "\n", "{}", "null", "[]", "---\n---\n", "a: &a [*a, *a]\n", "caKey: !!binary AAAA\n", "clusterName: [\n"} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseBundle(data)
		secrets := bundleSecrets(data)
		if err != nil {
			if leaked := leaks(err.Error(), secrets); leaked != "" {
				t.Fatalf("the error shows a secret (%q): %v", leaked, err)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("ParseBundle accepted a bundle Validate refuses: %v", err)
		}
		for _, asJSON := range []bool{false, true} {
			out, err := got.Marshal(asJSON)
			if err != nil {
				t.Fatalf("Marshal(json %v): %v", asJSON, err)
			}
			back, err := ParseBundle(out)
			if err != nil {
				t.Fatalf("ParseBundle refuses what Marshal(json %v) wrote: %v\n%s", asJSON, err, out)
			}
			if *back != *got {
				t.Fatalf("the bundle changed in a round trip through Marshal(json %v)", asJSON)
			}
		}
		var logs bytes.Buffer
		slog.New(slog.NewTextHandler(&logs, nil)).Info("b", "bundle", got)
		shown := fmt.Sprintf("%v %+v %s %#v %s", got, got, got, got, logs.String())
		if leaked := leaks(shown, bundleSecrets(data)); leaked != "" {
			t.Fatalf("the bundle shows a secret (%q): %s", leaked, shown)
		}
	})
}

// pemFieldEdits change a bundle's PEM fields; refused says how Validate refuses the result,
// "" when it keeps the bundle valid (and must then round-trip).
var pemFieldEdits = []struct {
	name    string
	edit    func(string) string
	refused string
}{
	// yaml.v3 writes "\n\n-----BEGIN..." as a block scalar that reads back as "\n-----BEGIN...".
	{"leading blank lines", func(s string) string { return "\n\n" + s }, "text before the PEM block"},
	{"text before", func(s string) string { return "x\n" + s }, "text before the PEM block"},
	// JSON bundles are read with the YAML decoder, which takes U+0085 for a line break.
	{"NEL after", func(s string) string { return s + "\u0085" }, "text after the PEM block"},
	{"second block", func(s string) string { return s + s }, "text after the PEM block"},
	{"invalid UTF-8 after", func(s string) string { return s + "\xff" }, "text after the PEM block"},
	{"headers", func(s string) string { return strings.Replace(s, "-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1) }, "has headers"},
	{"CRLF", func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }, ""},
	{"trailing blanks", func(s string) string { return strings.ReplaceAll(s, "\n", " \t\n") + "\n\n" }, ""},
}

// A bundle's PEM fields hold one block and blank space, the form that survives WriteBundle
// and LoadBundle unchanged; before, LoadBundle accepted any text around the block, and a
// leading blank line was lost when the bundle was written as YAML and read again.
func TestBundlePEMFieldsRoundTrip(t *testing.T) {
	b := testBundle(t)
	for _, e := range pemFieldEdits {
		t.Run(e.name, func(t *testing.T) {
			for _, field := range []string{"caCert", "caKey"} {
				c := *b
				if field == "caCert" {
					c.CACert = e.edit(c.CACert)
				} else {
					c.CAKey = e.edit(c.CAKey)
				}
				err := c.Validate()
				if e.refused != "" {
					if err == nil || !strings.Contains(err.Error(), field+": ") || !strings.Contains(err.Error(), e.refused) {
						t.Errorf("%s: %v; want %q", field, err, e.refused)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", field, err)
				}
				for _, asJSON := range []bool{false, true} {
					data, err := c.Marshal(asJSON)
					if err != nil {
						t.Fatal(err)
					}
					back, err := ParseBundle(data)
					if err != nil || *back != c {
						t.Errorf("%s, JSON %v: round trip: %v", field, asJSON, err)
					}
				}
			}
		})
	}
}

// secretsOf is what a bundle document holds that must never be shown: the bootstrap token
// when it has a token's form, and every line of the CA key that looks like PEM key material
// (20 or more base64 characters; shorter ones are too likely to be found elsewhere by chance).
// shown holds the document's other values, which messages may quote: a secret that is also
// one of those is not counted.
type secretsOf struct {
	secrets []string
	shown   string
}

var pemLineRE = regexp.MustCompile(`^[A-Za-z0-9+/=]{20,}$`)

// bundleSecrets decodes data loosely (unknown fields ignored) to find its secrets.
func bundleSecrets(data []byte) secretsOf {
	var b Bundle
	if yaml.Unmarshal(data, &b) != nil {
		if json.Unmarshal(data, &b) != nil {
			return secretsOf{}
		}
	}
	s := secretsOf{shown: strings.Join([]string{b.APIVersion, b.Kind, b.ClusterName, b.MasterEndpoint, b.CACertHash, b.CACert,
		"07401b.f395accd246ae52d"}, "\n")} // ValidateToken's example
	if tokenRE.MatchString(b.BootstrapToken) {
		s.secrets = append(s.secrets, b.BootstrapToken)
	}
	for _, l := range strings.Split(b.CAKey, "\n") {
		if l = strings.TrimSpace(l); pemLineRE.MatchString(l) {
			s.secrets = append(s.secrets, l)
		}
	}
	return s
}

// leaks returns the first secret that text shows, "" if none.
func leaks(text string, s secretsOf) string {
	for _, sec := range s.secrets {
		if strings.Contains(text, sec) && !strings.Contains(s.shown, sec) {
			return sec
		}
	}
	return ""
}
