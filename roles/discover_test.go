package roles

import (
	"context"
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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// testCluster is a fake API server on 127.0.0.1 serving kube-public/cluster-info as a
// kubeadm master does: the kubeconfig with the CA, and its JWS signature per token.
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
	json.NewEncoder(w).Encode(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "data": data})
}

// runDiscover runs the layer's kubebake-discover with python3.
func runDiscover(t *testing.T, dir string, env ...string) (int, string) {
	t.Helper()
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	l := mustRender(t, r, fakeLock(r))
	f, _ := l.File(ScriptDir + "/kubebake-discover")
	script := filepath.Join(dir, "kubebake-discover")
	writeFile(t, script, string(f.Content), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", script, "--timeout", "5",
		"--ca-out", filepath.Join(dir, "pki/ca.crt"), "--kubeconfig-out", filepath.Join(dir, "bootstrap-kubelet.conf"))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestDiscover runs the minion's discovery against a fake master: the pinned CA and the
// token signature are checked, and the kubelet's bootstrap kubeconfig is written.
func TestDiscover(t *testing.T) {
	testenv.NeedTool(t, "python3")
	const id, secret = "abcdef", "0123456789abcdef"
	c := newTestCluster(t)
	c.signFor[id] = secret
	env := func(token, pin string) []string {
		return []string{"KUBEBAKE_MASTER_ENDPOINT=" + c.endpoint(), "KUBEBAKE_BOOTSTRAP_TOKEN=" + token, "KUBEBAKE_CA_CERT_HASH=" + pin}
	}

	t.Run("joins", func(t *testing.T) {
		dir := t.TempDir()
		code, out := runDiscover(t, dir, env(id+"."+secret, c.pin)...)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		ca, _ := os.ReadFile(filepath.Join(dir, "pki/ca.crt"))
		if string(ca) != string(c.caPEM) {
			t.Errorf("ca.crt:\n%s", ca)
		}
		st, err := os.Stat(filepath.Join(dir, "bootstrap-kubelet.conf"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("bootstrap-kubelet.conf: %v %v", st, err)
		}
		kc, _ := os.ReadFile(filepath.Join(dir, "bootstrap-kubelet.conf"))
		for _, want := range []string{"server: " + c.srv.URL + "\n", "token: " + id + "." + secret + "\n",
			"certificate-authority-data: " + base64.StdEncoding.EncodeToString(c.caPEM) + "\n"} {
			if !strings.Contains(string(kc), want) {
				t.Errorf("bootstrap kubeconfig lacks %q:\n%s", want, kc)
			}
		}
		if strings.Contains(out, secret) {
			t.Errorf("the token secret is in the output:\n%s", out)
		}
	})
	cases := []struct {
		name, token, pin string
		code             int
		want             string
	}{
		{"wrong CA pin", id + "." + secret, "sha256:" + strings.Repeat("0", 64), 3, "join refused: the cluster CA of the master (sha256:"},
		{"wrong token secret", id + ".ffffffffffffffff", c.pin, 3, "join refused: cluster-info's signature for token " + id + " does not match the secret"},
		{"unknown token", "zzzzzz." + secret, c.pin, 4, "join refused: the master signs cluster-info for bootstrap token(s) " + id + " but not for zzzzzz"},
		{"malformed token", "abc.def", c.pin, 2, "is not a kubeadm token"},
		{"malformed pin", id + "." + secret, "md5:abc", 2, "is not sha256:<64 hex digits>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			code, out := runDiscover(t, dir, env(tc.token, tc.pin)...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out)
			}
			if _, err := os.Stat(filepath.Join(dir, "bootstrap-kubelet.conf")); err == nil {
				t.Errorf("a failed discovery wrote the kubeconfig")
			}
		})
	}
	t.Run("no token signed yet", func(t *testing.T) {
		fresh := newTestCluster(t) // a master whose signer has not run: wait, do not refuse
		dir := t.TempDir()
		code, out := runDiscover(t, dir, "KUBEBAKE_MASTER_ENDPOINT="+fresh.endpoint(), "KUBEBAKE_BOOTSTRAP_TOKEN="+id+"."+secret, "KUBEBAKE_CA_CERT_HASH="+fresh.pin)
		if code != 1 || !strings.Contains(out, "not signed for token "+id+" yet") {
			t.Fatalf("exit %d, want 1 (retry):\n%s", code, out)
		}
	})
	t.Run("master unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		dir := t.TempDir()
		code, out := runDiscover(t, dir, "KUBEBAKE_MASTER_ENDPOINT="+addr, "KUBEBAKE_BOOTSTRAP_TOKEN="+id+"."+secret, "KUBEBAKE_CA_CERT_HASH="+c.pin)
		if code != 1 || !strings.Contains(out, "cannot reach "+addr) {
			t.Fatalf("exit %d, want 1 (retry):\n%s", code, out)
		}
	})
}
