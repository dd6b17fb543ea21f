package cloudinit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var (
	testBundleOnce sync.Once
	testBundleVal  *Bundle
)

// testBundle is one ECDSA bundle shared by the tests (RSA keys are slow to make).
func testBundle(t *testing.T) *Bundle {
	t.Helper()
	testBundleOnce.Do(func() {
		b, err := NewBundle("demo", BundleOptions{KeyType: KeyECDSAP256})
		if err != nil {
			panic(err)
		}
		testBundleVal = b
	})
	c := *testBundleVal
	return &c
}

func TestNewBundleIsWhatKubeadmExpects(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyRSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			b, err := NewBundle("demo", BundleOptions{KeyType: kt, Now: now, MasterEndpoint: "192.168.1.10:6443"})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Validate(); err != nil {
				t.Fatal(err)
			}
			cert, err := parseCertPEM([]byte(b.CACert))
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != "kubernetes" || !cert.IsCA {
				t.Errorf("CA subject %q IsCA %v; want CN kubernetes, CA", cert.Subject.CommonName, cert.IsCA)
			}
			if years := cert.NotAfter.Sub(now).Hours() / 24 / 365; years < 9.99 || years > 10.01 {
				t.Errorf("CA valid for %.2f years, want 10", years)
			}
			switch cert.PublicKey.(type) {
			case *rsa.PublicKey:
				if kt != KeyRSA2048 || cert.PublicKey.(*rsa.PublicKey).N.BitLen() != 2048 {
					t.Errorf("key %T for %s", cert.PublicKey, kt)
				}
			case *ecdsa.PublicKey:
				if kt != KeyECDSAP256 || cert.PublicKey.(*ecdsa.PublicKey).Curve.Params().Name != "P-256" {
					t.Errorf("key %T for %s", cert.PublicKey, kt)
				}
			}
			sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
			if want := "sha256:" + hex.EncodeToString(sum[:]); b.CACertHash != want {
				t.Errorf("hash %s, want %s", b.CACertHash, want)
			}
			if !regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`).MatchString(b.BootstrapToken) {
				t.Errorf("token %q is not kubeadm's format", b.BootstrapToken)
			}
			if b.MasterEndpoint != "192.168.1.10:6443" || b.APIVersion != BundleAPIVersion || b.Kind != BundleKind {
				t.Errorf("bundle header %+v", b)
			}
		})
	}
}

func TestBootstrapTokensDiffer(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		tok, err := NewBootstrapToken(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateToken(tok); err != nil {
			t.Fatal(tok, err)
		}
		if seen[tok] {
			t.Fatalf("token %s twice", tok)
		}
		seen[tok] = true
	}
}

func TestWriteAndLoadBundle(t *testing.T) {
	b := testBundle(t)
	for _, name := range []string{"c.yaml", "c.json"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), name)
			if err := WriteBundle(p, b, false); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %04o, want 0600", st.Mode().Perm())
			}
			data, _ := os.ReadFile(p)
			if isJSON := bytes.HasPrefix(data, []byte("{")); isJSON != strings.HasSuffix(name, ".json") {
				t.Errorf("%s written as JSON=%v", name, isJSON)
			}
			got, err := LoadBundle(p)
			if err != nil {
				t.Fatal(err)
			}
			if *got != *b {
				t.Errorf("round trip changed the bundle")
			}
			// No overwrite without force; force replaces.
			err = WriteBundle(p, b, false)
			if err == nil || !strings.Contains(err.Error(), "--force") {
				t.Errorf("overwrite without force: %v", err)
			}
			if err := WriteBundle(p, b, true); err != nil {
				t.Errorf("force: %v", err)
			}
			leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*"))
			if len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
		})
	}
}

func TestLoadBundleRefusesReadableBundle(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b.yaml")
	if err := WriteBundle(p, testBundle(t), false); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		os.Chmod(p, mode)
		_, err := LoadBundle(p)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
			t.Errorf("mode %04o: %v; want a chmod 600 hint", mode, err)
		}
	}
	os.Chmod(p, 0o400)
	if _, err := LoadBundle(p); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

// writeRaw writes a bundle document as a map, with mode 0600.
func writeRaw(t *testing.T, m map[string]any) string {
	t.Helper()
	data, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "b.yaml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func bundleMap(t *testing.T, b *Bundle) map[string]any {
	t.Helper()
	data, err := b.Marshal(false)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoadBundleMissingField(t *testing.T) {
	b := testBundle(t)
	for _, f := range b.bundleFields() {
		t.Run(f.name, func(t *testing.T) {
			m := bundleMap(t, b)
			delete(m, f.name)
			_, err := LoadBundle(writeRaw(t, m))
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("field %q is missing", f.name)) {
				t.Errorf("without %s: %v", f.name, err)
			}
			m[f.name] = "  "
			if _, err := LoadBundle(writeRaw(t, m)); err == nil || !strings.Contains(err.Error(), f.name) {
				t.Errorf("blank %s: %v", f.name, err)
			}
		})
	}
}

func TestLoadBundleMalformedToken(t *testing.T) {
	b := testBundle(t)
	for _, tok := range []string{"abcdef0123456789abcdef", "ABCDEF.0123456789abcdef", "abcde.0123456789abcdef", "abcdef.0123456789abcde", "abcdef.0123456789abcdefg", "abc-ef.0123456789abcdef", "abcdef:0123456789abcdef"} {
		m := bundleMap(t, b)
		m["bootstrapToken"] = tok
		_, err := LoadBundle(writeRaw(t, m))
		if err == nil || !strings.Contains(err.Error(), "bootstrapToken is not a kubeadm token") {
			t.Errorf("token %q: %v", tok, err)
			continue
		}
		if strings.Contains(err.Error(), tok) {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}

func TestLoadBundleKeyAndHashMismatch(t *testing.T) {
	b := testBundle(t)
	other, err := NewBundle("other", BundleOptions{KeyType: KeyECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	m := bundleMap(t, b)
	m["caKey"] = other.CAKey
	_, err = LoadBundle(writeRaw(t, m))
	if err == nil || !strings.Contains(err.Error(), "caKey does not match caCert") {
		t.Errorf("foreign key: %v", err)
	}
	m = bundleMap(t, b)
	m["caCertHash"] = other.CACertHash
	if _, err = LoadBundle(writeRaw(t, m)); err == nil || !strings.Contains(err.Error(), "is not the hash of caCert") {
		t.Errorf("foreign hash: %v", err)
	}
	m = bundleMap(t, b)
	m["caKey"] = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
	if _, err = LoadBundle(writeRaw(t, m)); err == nil || !strings.Contains(err.Error(), "caKey") {
		t.Errorf("garbage key: %v", err)
	}
	m = bundleMap(t, b)
	m["masterEndpoint"] = "10.0.0.1"
	if _, err = LoadBundle(writeRaw(t, m)); err == nil || !strings.Contains(err.Error(), "masterEndpoint") {
		t.Errorf("endpoint without port: %v", err)
	}
	m = bundleMap(t, b)
	m["caKeys"] = "x"
	if _, err = LoadBundle(writeRaw(t, m)); err == nil || !strings.Contains(err.Error(), "caKeys") {
		t.Errorf("unknown field: %v", err)
	}
	m = bundleMap(t, b)
	m["apiVersion"] = "kubebake.dev/v9"
	if _, err = LoadBundle(writeRaw(t, m)); err == nil || !strings.Contains(err.Error(), "apiVersion") {
		t.Errorf("apiVersion: %v", err)
	}
}

func TestBundleNeverPrintsSecrets(t *testing.T) {
	b := testBundle(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Info("bundle", "b", b)
	out := fmt.Sprintf("%v %+v %s %#v %v", b, b, b, b, logs.String())
	for _, secret := range []string{b.BootstrapToken, keyBody(b.CAKey)} {
		if strings.Contains(out, secret) {
			t.Errorf("a secret leaked into %q", out)
		}
	}
	if !strings.Contains(out, b.CACertHash) {
		t.Errorf("the hash is not shown: %s", out)
	}
}

// keyBody is a recognisable line of a PEM key.
func keyBody(pemKey string) string {
	return strings.Split(strings.TrimSpace(pemKey), "\n")[1]
}

func TestNewBundleRefusesBadInput(t *testing.T) {
	for _, name := range []string{"", "Demo", "-x", "a_b", strings.Repeat("a", 64)} {
		if _, err := NewBundle(name, BundleOptions{KeyType: KeyECDSAP256}); err == nil {
			t.Errorf("cluster name %q accepted", name)
		}
	}
	for _, ep := range []string{"host", "host:0", "host:99999", ":6443", "a b:6443"} {
		if _, err := NewBundle("x", BundleOptions{KeyType: KeyECDSAP256, MasterEndpoint: ep}); err == nil {
			t.Errorf("endpoint %q accepted", ep)
		}
	}
	for _, ep := range []string{"[fd00::1]:6443", "master.example:443", "10.0.2.15:6443"} {
		if err := ValidateEndpoint(ep); err != nil {
			t.Errorf("endpoint %q: %v", ep, err)
		}
	}
	if _, err := NewBundle("x", BundleOptions{KeyType: "dsa"}); err == nil {
		t.Error("key type dsa accepted")
	}
}
