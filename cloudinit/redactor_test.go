package cloudinit

import (
	"strings"
	"testing"
)

// The bundle's Redactor hides the token (whole and its secret half) and every line of the CA
// key, and nothing public (the CA certificate, its hash, the endpoint).
func TestBundleRedactor(t *testing.T) {
	b, err := NewBundle("demo", BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := strings.Cut(b.BootstrapToken, ".")
	keyBody := strings.Split(strings.TrimSpace(b.CAKey), "\n")
	text := strings.Join([]string{"token " + b.BootstrapToken, "secret " + secret, b.CAKey, "line " + keyBody[len(keyBody)/2],
		b.CACert, b.CACertHash, b.MasterEndpoint}, "\n")
	got := b.Redactor().String(text)
	for _, leak := range append([]string{secret}, keyBody[1:len(keyBody)-1]...) {
		if strings.Contains(got, leak) {
			t.Fatalf("%q survived:\n%s", leak, got)
		}
	}
	for _, keep := range []string{b.CACert, b.CACertHash, b.MasterEndpoint} {
		if !strings.Contains(got, strings.TrimSpace(keep)) {
			t.Errorf("public %q was hidden", keep[:min(len(keep), 30)])
		}
	}
	var none *Bundle
	if none.Redactor().String("x https://u:p@h/") != "x https://***@h/" {
		t.Error("the nil bundle's Redactor does not hide URL credentials")
	}
}
