package roles

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// testCluster is a fake API server on 127.0.0.1 serving kube-public/cluster-info as a
// kubeadm master does: the kubeconfig with the CA, and its JWS signature per token. It is
// enough for kubeadm's token discovery, where every refusal happens; a join that gets further
// runs against a real control plane (TestControlPlane).
type testCluster struct {
	srv     *httptest.Server
	caPEM   []byte
	pin     string
	signFor map[string]string // token id -> secret used to sign
	kubecfg string
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	c := &testCluster{
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pin:     "sha256:" + hex.EncodeToString(sum[:]),
		signFor: map[string]string{},
	}
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(c.serve))
	c.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}}
	c.srv.StartTLS()
	t.Cleanup(c.srv.Close)
	c.kubecfg = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: " +
		base64.StdEncoding.EncodeToString(c.caPEM) + "\n    server: " + c.srv.URL + "\n  name: \"\"\ncontexts: null\n" +
		"current-context: \"\"\nkind: Config\npreferences: {}\nusers: null\n"
	return c
}

func (c *testCluster) endpoint() string { return strings.TrimPrefix(c.srv.URL, "https://") }

// detachedJWS is what k8s.io/cluster-bootstrap/token/jws.ComputeDetachedSignature makes.
func detachedJWS(content, id, secret string) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","kid":"` + id + `"}`))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(header + "." + enc.EncodeToString([]byte(content))))
	return header + ".." + enc.EncodeToString(mac.Sum(nil))
}

func (c *testCluster) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/namespaces/kube-public/configmaps/cluster-info" {
		http.NotFound(w, r)
		return
	}
	data := map[string]string{"kubeconfig": c.kubecfg}
	for id, secret := range c.signFor {
		data["jws-kubeconfig-"+id] = detachedJWS(c.kubecfg, id, secret)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "data": data})
}
