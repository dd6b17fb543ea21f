package roles

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// controlPlaneBins are the binaries TestControlPlane runs for real.
var controlPlaneBins = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubeadm", "kubectl"}

// findBins returns a folder with the control plane binaries: $KUBEBAKE_TEST_BIN when set,
// else the debian-12 lock's binaries fetched through the artifact cache (built from the Go
// module proxy on a cold cache, shared with the builder and verify tests).
func findBins(t *testing.T) string {
	dir := os.Getenv("KUBEBAKE_TEST_BIN")
	if dir == "" {
		dir = fetchLockedBins(t)
	}
	for _, b := range controlPlaneBins {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			testenv.Missing(t, "an executable "+filepath.Join(dir, b),
				"point KUBEBAKE_TEST_BIN at a folder holding "+strings.Join(controlPlaneBins, ", ")+", or unset it to use the debian-12 lock's")
		}
	}
	return dir
}

// fetchLockedBins fetches controlPlaneBins as the debian-12 lock pins them and copies them,
// executable, into a temp folder (cache blobs are read-only and not executable).
func fetchLockedBins(t *testing.T) string {
	t.Helper()
	r, err := recipes.Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	lock, err := recipes.ReadRecipeLock(r)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, b := range controlPlaneBins {
		want[b] = true
	}
	sub := *lock
	sub.Artifacts = nil
	for _, a := range lock.Artifacts {
		if want[a.Name] {
			sub.Artifacts = append(sub.Artifacts, a)
		}
	}
	cache, err := artifacts.OpenCache("")
	if err != nil {
		t.Fatal(err)
	}
	sources, err := artifacts.RecipeSources(cache, r)
	if err != nil {
		t.Fatal(err)
	}
	paths, err := artifacts.Fetch(context.Background(), &sub, sources)
	if err != nil {
		t.Fatalf("fetching the control plane binaries of the debian-12 lock: %v", err)
	}
	dir := t.TempDir()
	for name, src := range paths {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// execStart is a unit's ExecStart= command line, split into words.
func execStart(t *testing.T, unit []byte) []string {
	t.Helper()
	text := strings.ReplaceAll(string(unit), "\\\n", " ")
	m := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no ExecStart= in\n%s", unit)
	}
	return strings.Fields(m[1])
}

// TestControlPlane runs the master side of the layer for real, outside a VM: kubebake-master-pki
// (kubeadm phases) on a CA the test makes, etcd, kube-apiserver and kube-controller-manager
// with the flags of their rendered units, kubebake-master-bootstrap (token, RBAC,
// cluster-info), then the minion's kubebake-discover against that API server, and finally the
// kubelet's TLS bootstrap: a node CSR made with the bootstrap kubeconfig is approved and
// signed by the controller manager. Paths and ports move into a temp folder; everything
// listens on 127.0.0.1. Needs the binaries (KUBEBAKE_TEST_BIN) and python3.
func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a control plane")
	}
	bin := findBins(t)
	testenv.NeedTool(t, "python3")
	// kubeadm will not advertise a loopback address, and the host's own addresses are not to
	// be used: the test runs again inside a network namespace of its own, where a 10.x address
	// on lo (and a default route to it) stands for the node's address: every packet stays in
	// the namespace.
	nodeIP := os.Getenv("KUBEBAKE_TEST_NETNS")
	if nodeIP == "" {
		testenv.NeedTools(t, "unshare", "ip")
		const ip = "10.254.254.1"
		setup := "ip link set lo up && ip addr add " + ip + "/32 dev lo && ip route add default dev lo && exec \"$0\" -test.run '^TestControlPlane$' -test.v -test.timeout 9m"
		cmd := exec.Command("unshare", "--net", "sh", "-c", setup, os.Args[0])
		cmd.Env = append(os.Environ(), "KUBEBAKE_TEST_NETNS="+ip, "KUBEBAKE_TEST_BIN="+bin)
		out, err := cmd.CombinedOutput()
		if err != nil && strings.Contains(string(out), "unshare failed") {
			testenv.Missing(t, "a network namespace (unshare --net)", "run as root where unshare --net is allowed: "+strings.TrimSpace(string(out)))
		}
		t.Logf("in a network namespace:\n%s", out)
		if err != nil {
			t.Fatalf("TestControlPlane in a network namespace: %v", err)
		}
		return
	}
	r, err := recipes.Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	lock := fakeLock(r)
	for i, a := range lock.Artifacts {
		if a.Name == "kubeadm" {
			out, err := exec.Command(filepath.Join(bin, "kubeadm"), "version", "-o", "short").Output()
			if err != nil {
				t.Fatal(err)
			}
			lock.Artifacts[i].Version = strings.TrimSpace(string(out))
		}
	}
	layer := mustRender(t, r, lock)

	dir := t.TempDir()
	k8s, run, etcdData, scripts := filepath.Join(dir, "k8s"), filepath.Join(dir, "run"), filepath.Join(dir, "etcd"), filepath.Join(dir, "scripts")
	for _, f := range layer.Files {
		if f.Type == TypeFile && f.Artifact == "" && strings.HasPrefix(f.Path, ScriptDir+"/") {
			writeFile(t, filepath.Join(scripts, filepath.Base(f.Path)), string(f.Content), 0o755)
		}
	}

	// The cluster CA, as `kubebake cluster init` makes it, written where user-data puts it.
	caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pinSum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	writeFile(t, filepath.Join(k8s, "pki/ca.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), 0o644)
	writeFile(t, filepath.Join(k8s, "pki/ca.key"), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(caKey)})), 0o600)

	apiPort, etcdPort, peerPort, metricsPort := freePort(t), freePort(t), freePort(t), freePort(t)
	const token = "kbtest.0123456789abcdef"
	env := append(os.Environ(),
		"KUBEBAKE_RUN="+run, "KUBEBAKE_K8S_DIR="+k8s, "KUBEBAKE_API_PORT="+apiPort,
		"KUBEBAKE_PATH="+bin+":/usr/sbin:/usr/bin:/sbin:/bin",
		"KUBEBAKE_CLUSTER_NAME=kbtest", "KUBEBAKE_MASTER_ENDPOINT="+nodeIP+":"+apiPort,
		"KUBEBAKE_ADVERTISE_ADDRESS="+nodeIP, "KUBEBAKE_BOOTSTRAP_TOKEN="+token,
		"KUBEBAKE_CA_CERT_HASH=sha256:"+hex.EncodeToString(pinSum[:]))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	script := func(name string, extraEnv ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(scripts, name))
		cmd.Env = append(append([]string(nil), env...), extraEnv...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		return string(out)
	}

	out := script("master-pki")
	t.Logf("master-pki:\n%s", out)
	for _, f := range []string{"pki/apiserver.crt", "pki/etcd/server.crt", "pki/sa.key", "pki/front-proxy-ca.crt", "admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf"} {
		if _, err := os.Stat(filepath.Join(k8s, f)); err != nil {
			t.Fatalf("master-pki did not make %s", f)
		}
	}
	masterEnv, _ := os.ReadFile(filepath.Join(run, "master.env"))
	vars := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(masterEnv)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		vars[k] = v
	}
	if vars["KUBEBAKE_ADVERTISE_ADDRESS"] != nodeIP || vars["KUBEBAKE_CLUSTER_NAME"] != "kbtest" {
		t.Fatalf("master.env:\n%s", masterEnv)
	}
	// A second run keeps what exists (every boot runs it).
	before, _ := os.ReadFile(filepath.Join(k8s, "pki/apiserver.crt"))
	script("master-pki")
	after, _ := os.ReadFile(filepath.Join(k8s, "pki/apiserver.crt"))
	if !bytes.Equal(before, after) {
		t.Errorf("master-pki replaced the API server certificate on its second run")
	}

	// Start a unit's ExecStart= with paths and ports moved, as systemd would with its
	// EnvironmentFile=.
	start := func(unit string, extra ...string) {
		f, ok := layer.File(UnitDir + "/" + unit)
		if !ok {
			t.Fatalf("no %s", unit)
		}
		words := execStart(t, f.Content)
		repl := strings.NewReplacer("/etc/kubernetes", k8s, "/var/lib/etcd", etcdData,
			"127.0.0.1:2379", "127.0.0.1:"+etcdPort, "127.0.0.1:2380", "127.0.0.1:"+peerPort,
			"127.0.0.1:2381", "127.0.0.1:"+metricsPort, "--secure-port=6443", "--secure-port="+apiPort)
		var args []string
		for _, w := range words[1:] {
			w = repl.Replace(w)
			w = regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(w, func(m string) string { return vars[m[2:len(m)-1]] })
			args = append(args, w)
		}
		args = append(args, extra...)
		cmd := exec.CommandContext(ctx, filepath.Join(bin, filepath.Base(words[0])), args...)
		logf, _ := os.Create(filepath.Join(dir, unit+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			logf.Close()
			if t.Failed() {
				data, _ := os.ReadFile(logf.Name())
				if len(data) > 4000 {
					data = data[len(data)-4000:]
				}
				t.Logf("%s log (tail):\n%s", unit, data)
			}
		})
	}
	start("etcd.service")
	start("kube-apiserver.service")
	start("kube-controller-manager.service", "--secure-port=0")

	out = script("master-bootstrap")
	t.Logf("master-bootstrap:\n%s", out)
	if _, err := os.Stat(filepath.Join(run, "kubeadm-bootstrap.yaml")); err == nil {
		t.Errorf("master-bootstrap left the config holding the token in %s", run)
	}
	kubectl := func(kubeconfig string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	admin := filepath.Join(k8s, "admin.conf")
	if out, err := kubectl(admin, "auth", "can-i", "list", "endpointslices.discovery.k8s.io", "--as=system:node:n1", "--as-group=system:nodes"); err != nil || !strings.HasSuffix(out, "yes") {
		t.Errorf("nodes cannot do kube-proxy's work: %s %v", out, err)
	}
	// Idempotent: a master reboot runs it again.
	script("master-bootstrap")

	// The minion's side: discovery and the bootstrap kubeconfig.
	minion := filepath.Join(dir, "minion")
	out = script("minion-join", "KUBEBAKE_K8S_DIR="+minion, "KUBEBAKE_RUN="+filepath.Join(dir, "minion-run"))
	t.Logf("minion-join:\n%s", out)
	boot := filepath.Join(minion, "bootstrap-kubelet.conf")
	if out, err := kubectl(boot, "auth", "can-i", "create", "certificatesigningrequests.certificates.k8s.io"); err != nil || !strings.HasSuffix(out, "yes") {
		t.Fatalf("the bootstrap token cannot create CSRs: %s %v", out, err)
	}

	// The kubelet's TLS bootstrap: a node client CSR is approved and signed.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:n1", Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := fmt.Sprintf(`apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: kbtest-node-csr
spec:
  request: %s
  signerName: kubernetes.io/kube-apiserver-client-kubelet
  usages: [digital signature, client auth]
`, base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})))
	csrFile := filepath.Join(dir, "csr.yaml")
	writeFile(t, csrFile, csr, 0o644)
	if out, err := kubectl(boot, "create", "-f", csrFile); err != nil {
		t.Fatalf("creating the node CSR with the bootstrap token: %s %v", out, err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, _ := kubectl(admin, "get", "csr", "kbtest-node-csr", "-o", "jsonpath={.status.certificate}")
		if out != "" {
			certPEM, err := base64.StdEncoding.DecodeString(out)
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode(certPEM)
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if err := cert.CheckSignatureFrom(ca); err != nil || cert.Subject.CommonName != "system:node:n1" {
				t.Fatalf("node certificate %s: %v", cert.Subject, err)
			}
			break
		}
		if time.Now().After(deadline) {
			cond, _ := kubectl(admin, "get", "csr", "kbtest-node-csr", "-o", "yaml")
			t.Fatalf("the node CSR was not approved and signed:\n%s", cond)
		}
		time.Sleep(2 * time.Second)
	}
}
