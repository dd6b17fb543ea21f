package roles

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// controlPlaneBins are the binaries TestControlPlane runs for real.
var controlPlaneBins = []string{"etcd", "etcdctl", "kube-apiserver", "kube-controller-manager", "kubeadm", "kubectl"}

// findBins returns a folder with the control plane binaries: $KUBEBAKE_TEST_BIN when set,
// else the debian-12 lock's binaries fetched through the artifact cache (built from the Go
// module proxy on a cold cache, shared with the builder and verify tests).
func findBins(t *testing.T) string {
	dir := os.Getenv("KUBEBAKE_TEST_BIN")
	if dir == "" {
		dir = fetchLockedBins(t, controlPlaneBins...)
	}
	for _, b := range controlPlaneBins {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			testenv.Missing(t, "an executable "+filepath.Join(dir, b),
				"point KUBEBAKE_TEST_BIN at a folder holding "+strings.Join(controlPlaneBins, ", ")+", or unset it to use the debian-12 lock's")
		}
	}
	return dir
}

// fetchLockedBins fetches the named binaries as the debian-12 lock pins them and copies them,
// executable, into a temp folder (cache blobs are read-only and not executable).
func fetchLockedBins(t *testing.T, names ...string) string {
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
	for _, b := range names {
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
// cluster-info), then the minion's join (kubeadm) against that API server, and finally the
// kubelet's TLS bootstrap: a node CSR made with the bootstrap kubeconfig is approved and
// signed by the controller manager. Paths and ports move into a temp folder; everything
// listens on 127.0.0.1. Needs the binaries (KUBEBAKE_TEST_BIN) and python3 (csr-approver).
func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a control plane")
	}
	bin := findBins(t)
	testenv.NeedTool(t, "python3")
	// kubeadm will not advertise a loopback address, and the host's own addresses are not to
	// be used: the test runs again inside a network namespace of its own, where a 10.x address
	// on lo (and a default route to it) stands for the node's address: every packet stays in
	// the namespace. kubeadm's join writes where a node keeps its files (/etc/kubernetes,
	// /var/lib/kubelet): the namespace has a mount namespace too, where /etc and /var/lib are
	// overlays whose writes land in a temp folder, never on the host.
	nodeIP := os.Getenv("KUBEBAKE_TEST_NETNS")
	if nodeIP == "" {
		testenv.NeedTools(t, "unshare", "ip", "mount")
		const ip = "10.254.254.1"
		ov := t.TempDir()
		overlay := func(dir string) string {
			up, work := filepath.Join(ov, dir, "up"), filepath.Join(ov, dir, "work")
			os.MkdirAll(up, 0o755)
			os.MkdirAll(work, 0o755)
			return " && mount -t overlay overlay -o lowerdir=" + dir + ",upperdir=" + up + ",workdir=" + work + " " + dir
		}
		setup := "mount --make-rprivate /" + overlay("/etc") + overlay("/var/lib") +
			" && ip link set lo up && ip addr add " + ip + "/32 dev lo && ip route add default dev lo && exec \"$0\" -test.run '^TestControlPlane$' -test.v -test.timeout 9m"
		cmd := exec.Command("unshare", "--net", "--mount", "sh", "-c", setup, os.Args[0])
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
	// The shared token, and n2's own token bound to its name, as user-data gives the master.
	const token, n2Token = "kbtest.0123456789abcdef", "kbnode.fedcba9876543210"
	clusterEnv := filepath.Join(dir, "cluster.env")
	writeFile(t, clusterEnv, "KUBEBAKE_CLUSTER_NAME=kbtest\nKUBEBAKE_BOOTSTRAP_TOKEN="+token+"\nKUBEBAKE_JOIN_TOKENS=n2="+n2Token+"\nKUBEBAKE_JOIN_TOKEN_TTL=3600\n", 0o600)
	env := append(os.Environ(),
		"KUBEBAKE_CLUSTER_ENV="+clusterEnv, "KUBEBAKE_STATE="+filepath.Join(dir, "state"),
		"KUBEBAKE_JOIN_TOKENS=n2="+n2Token, "KUBEBAKE_JOIN_TOKEN_TTL=3600",
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
		// %d: systemd's credentials directory; etcd's hold its files under pki/etcd.
		repl := strings.NewReplacer("%d/", filepath.Join(k8s, "pki/etcd")+"/", "/etc/kubernetes", k8s, "/var/lib/etcd", etcdData, "/var/log/kubernetes", filepath.Join(dir, "log"),
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
	policy, ok := layer.File(AuditPolicyPath)
	if !ok {
		t.Fatal("no audit policy in the layer")
	}
	writeFile(t, filepath.Join(k8s, filepath.Base(AuditPolicyPath)), string(policy.Content), 0o644)
	authn, ok := layer.File(AuthenticationConfigPath)
	if !ok {
		t.Fatal("no authentication config in the layer")
	}
	writeFile(t, filepath.Join(k8s, filepath.Base(AuthenticationConfigPath)), string(authn.Content), 0o644)
	admission, ok := layer.File(AdmissionConfigPath)
	if !ok {
		t.Fatal("no admission config in the layer")
	}
	writeFile(t, filepath.Join(k8s, filepath.Base(AdmissionConfigPath)), string(admission.Content), 0o644)
	kubeletConfig, ok := layer.File(KubeletConfigPath)
	if !ok {
		t.Fatal("no kubelet configuration in the layer")
	}
	writeFile(t, filepath.Join(k8s, filepath.Base(KubeletConfigPath)), string(kubeletConfig.Content), 0o600)
	if st, err := os.Stat(filepath.Join(k8s, "pki/encryption-config.yaml")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master-pki made no 0600 encryption config: %v %v", st, err)
	}
	start("etcd.service")
	start("kube-apiserver.service")
	start("kube-controller-manager.service", "--secure-port=0")

	out = script("master-bootstrap")
	t.Logf("master-bootstrap:\n%s", out)
	if _, err := os.Stat(filepath.Join(run, "kubeadm-bootstrap.yaml")); err == nil {
		t.Errorf("master-bootstrap left the config holding the token in %s", run)
	}
	// super-admin.conf is gone once admin.conf's group is bound, and master-pki (every boot)
	// does not make it again.
	script("master-pki")
	if _, err := os.Stat(filepath.Join(k8s, "super-admin.conf")); err == nil {
		t.Errorf("super-admin.conf is still on the master after its bootstrap")
	}
	checkAPIServerTLS(t, ca, nodeIP+":"+apiPort)
	kubectl := func(kubeconfig string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	admin := filepath.Join(k8s, "admin.conf")
	// PodSecurity: a privileged pod is refused in a namespace without labels, admitted in
	// kube-system; a plain pod is admitted.
	// (Pods need their namespace's default ServiceAccount, which the controller manager makes
	// shortly after it starts.)
	for _, ns := range []string{"default", "kube-system"} {
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
			if _, err := kubectl(admin, "-n", ns, "get", "serviceaccount", "default"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ServiceAccount %s/default two minutes after the controller manager started", ns)
			}
		}
	}
	privileged := filepath.Join(dir, "privileged.yaml")
	writeFile(t, privileged, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: priv\nspec:\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n    securityContext:\n      privileged: true\n", 0o644)
	if out, err := kubectl(admin, "-n", "default", "create", "--dry-run=server", "-f", privileged); err == nil || !strings.Contains(out, `violates PodSecurity "baseline:latest"`) {
		t.Errorf("a privileged pod in namespace default: %s %v", out, err)
	}
	if out, err := kubectl(admin, "-n", "kube-system", "create", "--dry-run=server", "-f", privileged); err != nil {
		t.Errorf("a privileged pod in kube-system: %s %v", out, err)
	}
	if out, err := kubectl(admin, "auth", "can-i", "list", "endpointslices.discovery.k8s.io", "--as=system:node:n1", "--as-group=system:nodes"); err != nil || !strings.HasSuffix(out, "yes") {
		t.Errorf("nodes cannot do kube-proxy's work: %s %v", out, err)
	}
	// The join tokens: both expire within the TTL, n2's is bound to n2, and cluster.env no
	// longer holds them.
	expiry := func(id string) string {
		out, err := kubectl(admin, "-n", "kube-system", "get", "secret", "bootstrap-token-"+id, "-o", `go-template={{.data.expiration | base64decode}} {{with .metadata.labels}}{{index . "kubebake.dev/node-name"}}{{end}}`)
		if err != nil {
			t.Fatalf("join token %s: %s %v", id, out, err)
		}
		return out
	}
	shared, bound := expiry("kbtest"), expiry("kbnode")
	for _, e := range []string{shared, bound} {
		when, err := time.Parse(time.RFC3339, strings.Fields(e)[0])
		if err != nil || time.Until(when) > time.Hour || time.Until(when) < 50*time.Minute {
			t.Errorf("join token expiry %q: want an hour from now (KUBEBAKE_JOIN_TOKEN_TTL=3600)", e)
		}
	}
	if !strings.HasSuffix(bound, " n2") || strings.HasSuffix(shared, " n2") {
		t.Errorf("token labels: shared %q, n2's %q", shared, bound)
	}
	if data, _ := os.ReadFile(clusterEnv); strings.Contains(string(data), "TOKEN=") || !strings.Contains(string(data), "KUBEBAKE_CLUSTER_NAME=kbtest") {
		t.Errorf("cluster.env after the first bootstrap:\n%s", data)
	}
	// Secrets are sealed in etcd; the audit log has the bootstrap's writes, and no bodies.
	etcdctl := exec.CommandContext(ctx, filepath.Join(bin, "etcdctl"), "--endpoints=https://127.0.0.1:"+etcdPort,
		"--cacert="+filepath.Join(k8s, "pki/etcd/ca.crt"), "--cert="+filepath.Join(k8s, "pki/apiserver-etcd-client.crt"),
		"--key="+filepath.Join(k8s, "pki/apiserver-etcd-client.key"), "get", "/registry/secrets/kube-system/bootstrap-token-kbnode", "--print-value-only")
	raw, err := etcdctl.Output()
	if err != nil || !bytes.HasPrefix(raw, []byte("k8s:enc:secretbox:v1:key1:")) || bytes.Contains(raw, []byte("fedcba9876543210")) {
		t.Errorf("n2's token in etcd: %v, not sealed: %q", err, raw[:min(len(raw), 40)])
	}
	auditLog := filepath.Join(dir, "log", "audit", "audit.log")
	audit, err := os.ReadFile(auditLog)
	if err != nil || !bytes.Contains(audit, []byte(`"resource":"secrets"`)) || !bytes.Contains(audit, []byte(`"level":"Metadata"`)) ||
		bytes.Contains(audit, []byte("requestObject")) || bytes.Contains(audit, []byte("fedcba9876543210")) {
		t.Errorf("audit log: %v\n%.2000s", err, audit)
	}
	if st, err := os.Stat(auditLog); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode: %v %v", st, err)
	}
	// Idempotent: a master reboot runs it again, and never brings a token back to life.
	if out, err := kubectl(admin, "-n", "kube-system", "delete", "secret", "bootstrap-token-kbtest"); err != nil {
		t.Fatal(out)
	}
	script("master-bootstrap")
	if out, err := kubectl(admin, "-n", "kube-system", "get", "secret", "bootstrap-token-kbtest"); err == nil {
		t.Errorf("a second master-bootstrap made the deleted shared token again: %s", out)
	}
	if again := expiry("kbnode"); again != bound {
		t.Errorf("a second master-bootstrap changed n2's token: %q, then %q", bound, again)
	}
	shared2 := "kbshar.0123456789abcdef"
	sharedSecret, err := cloudinit.JoinTokenSecret(shared2, "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "shared.yaml"), string(sharedSecret), 0o600)
	if out, err := kubectl(admin, "apply", "-f", filepath.Join(dir, "shared.yaml")); err != nil {
		t.Fatal(out)
	}

	// The approver, as its unit runs it (watching the CSRs).
	approver := exec.CommandContext(ctx, filepath.Join(scripts, "csr-approver"))
	approver.Env = env
	var approverLog bytes.Buffer
	approver.Stdout, approver.Stderr = &approverLog, &approverLog
	if err := approver.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		approver.Process.Kill()
		approver.Wait()
		t.Logf("csr-approver:\n%s", approverLog.String())
	})

	// The minion's side, kubeadm's join with the shared token: discovery, the cluster's
	// kubeadm-config and kubelet-config, the bootstrap kubeconfig. kubeadm writes a node's own
	// paths: here the overlays of the mount namespace.
	if out, err := kubectl(admin, "-n", "kube-system", "get", "configmap", "kubelet-config", "-o", "go-template={{index .data \"kubelet\"}}"); err != nil ||
		!strings.Contains(out, "serverTLSBootstrap: true") || !strings.Contains(out, "protectKernelDefaults: true") {
		t.Fatalf("the master did not publish the image's kubelet configuration as kubelet-config: %v\n%s", err, out)
	}
	const minion = "/etc/kubernetes"
	out = script("minion-join", "KUBEBAKE_K8S_DIR="+minion, "KUBEBAKE_RUN="+filepath.Join(dir, "minion-run"), "KUBEBAKE_BOOTSTRAP_TOKEN="+shared2)
	t.Logf("minion-join:\n%s", out)
	if got, _ := os.ReadFile(filepath.Join(minion, "pki/ca.crt")); !bytes.Equal(got, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})) {
		t.Errorf("the join wrote no or another CA to %s/pki/ca.crt:\n%s", minion, got)
	}
	for _, f := range []string{"/var/lib/kubelet/config.yaml", "/var/lib/kubelet/kubeadm-flags.env", filepath.Join(dir, "minion-run", "kubeadm-join.yaml")} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("the join left %s behind", f)
		}
	}
	boot := filepath.Join(minion, "bootstrap-kubelet.conf")
	if st, err := os.Stat(boot); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("bootstrap-kubelet.conf: %v %v", st, err)
	}
	if out, err := kubectl(boot, "auth", "can-i", "create", "certificatesigningrequests.certificates.k8s.io"); err != nil || !strings.HasSuffix(out, "yes") {
		t.Fatalf("the bootstrap token cannot create CSRs: %s %v", out, err)
	}
	n2Boot := filepath.Join(dir, "n2-bootstrap.conf")
	data, _ := os.ReadFile(boot)
	writeFile(t, n2Boot, strings.ReplaceAll(string(data), shared2, n2Token), 0o600)

	// The kubelet's TLS bootstrap: each CSR is decided by the approver alone.
	ask := func(kubeconfig, csrName, node string) {
		t.Helper()
		csr, err := cloudinit.NodeCSRManifest(csrName, node)
		if err != nil {
			t.Fatal(err)
		}
		csrFile := filepath.Join(dir, csrName+".yaml")
		writeFile(t, csrFile, csr, 0o644)
		if out, err := kubectl(kubeconfig, "create", "-f", csrFile); err != nil {
			t.Fatalf("creating CSR %s: %s %v", csrName, out, err)
		}
	}
	// decided waits for a CSR's verdict: its certificate (approved and signed), or "Denied".
	decided := func(csrName string) string {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			out, _ := kubectl(admin, "get", "csr", csrName, "-o", `go-template={{range .status.conditions}}{{.type}} {{end}}|{{.status.certificate}}`)
			conds, cert, _ := strings.Cut(out, "|")
			if strings.Contains(conds, "Denied") {
				return "Denied"
			}
			if cert != "" && cert != "<no value>" {
				return cert
			}
			if time.Now().After(deadline) {
				full, _ := kubectl(admin, "get", "csr", csrName, "-o", "yaml")
				t.Fatalf("CSR %s was not decided:\n%s", csrName, full)
			}
			time.Sleep(time.Second)
		}
	}
	signedFor := func(csrName, node string) {
		t.Helper()
		got := decided(csrName)
		certPEM, err := base64.StdEncoding.DecodeString(got)
		if err != nil {
			t.Fatalf("CSR %s for %s: %s", csrName, node, got)
		}
		blk, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.CheckSignatureFrom(ca); err != nil || cert.Subject.CommonName != "system:node:"+node {
			t.Fatalf("node certificate %s: %v", cert.Subject, err)
		}
	}
	denied := func(csrName, why string) {
		t.Helper()
		if got := decided(csrName); got != "Denied" {
			t.Errorf("CSR %s (%s) was approved", csrName, why)
		}
	}
	// The shared token: a new name, yes; an existing node's name, no.
	ask(boot, "shared-new-name", "n1")
	signedFor("shared-new-name", "n1")
	writeFile(t, filepath.Join(dir, "node.yaml"), "apiVersion: v1\nkind: Node\nmetadata:\n  name: existing\n", 0o644)
	if out, err := kubectl(admin, "create", "-f", filepath.Join(dir, "node.yaml")); err != nil {
		t.Fatal(out)
	}
	ask(boot, "shared-existing-name", "existing")
	denied("shared-existing-name", "the shared token taking an existing node's name")
	// n2's token, stolen: another node's name, no; its own, yes.
	ask(n2Boot, "bound-other-name", "master-0")
	denied("bound-other-name", "n2's token asking for another name")
	ask(n2Boot, "bound-own-name", "n2")
	signedFor("bound-own-name", "n2")
	// Once n2 has registered, its token is gone.
	writeFile(t, filepath.Join(dir, "n2.yaml"), "apiVersion: v1\nkind: Node\nmetadata:\n  name: n2\n", 0o644)
	if out, err := kubectl(admin, "create", "-f", filepath.Join(dir, "n2.yaml")); err != nil {
		t.Fatal(out)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := kubectl(admin, "-n", "kube-system", "get", "secret", "bootstrap-token-kbnode"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 registered, its join token is still there")
		}
		time.Sleep(time.Second)
	}
	checkServingCSRs(t, dir, admin, kubectl, decided, ca)

	for _, want := range []string{"denied shared-existing-name", "node existing exists", "denied bound-other-name", "bound to node n2, not master-0", "node n2 registered: its join token kbnode is deleted",
		"approved serving-n2: a serving certificate for node n2", "denied serving-extra-ip", "names that are not node n2's: IP 10.9.9.9",
		"denied serving-not-a-node", "asked by mallory, not by a node"} {
		if !strings.Contains(approverLog.String(), want) {
			t.Errorf("the approver's journal lacks %q", want)
		}
	}

	// The minion once joined: its join token and bootstrap kubeconfig are removed.
	minionEnv := filepath.Join(dir, "minion-cluster.env")
	writeFile(t, minionEnv, "KUBEBAKE_MASTER_ENDPOINT=x\nKUBEBAKE_BOOTSTRAP_TOKEN="+shared2+"\n", 0o600)
	writeFile(t, filepath.Join(minion, "kubelet.conf"), "joined\n", 0o600)
	out = script("join-cleanup", "KUBEBAKE_K8S_DIR="+minion, "KUBEBAKE_CLUSTER_ENV="+minionEnv)
	t.Logf("join-cleanup:\n%s", out)
	if _, err := os.Stat(boot); err == nil {
		t.Errorf("join-cleanup left %s", boot)
	}
	if data, _ := os.ReadFile(minionEnv); strings.Contains(string(data), "TOKEN") || !strings.Contains(string(data), "KUBEBAKE_MASTER_ENDPOINT=x") {
		t.Errorf("cluster.env after the join:\n%s", data)
	}
	if st, err := os.Stat(minionEnv); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("cluster.env after the join: %v %v", st, err)
	}
}

// checkAPIServerTLS: anonymous requests reach the health checks and cluster-info only, and the
// API server refuses a CBC suite over TLS 1.2 while it accepts the image's suites.
func checkAPIServerTLS(t *testing.T, ca *x509.Certificate, addr string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for path, want := range map[string]int{
		"/readyz": 200, "/livez": 200, "/api/v1/namespaces/kube-public/configmaps/cluster-info": 200,
		"/version": 401, "/api": 401, "/api/v1/namespaces/kube-system/secrets": 401, "/metrics": 401,
	} {
		resp, err := client.Get("https://" + addr + path)
		if err != nil {
			t.Errorf("anonymous GET %s: %v", path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("anonymous GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	dial := func(suite uint16) error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr,
			&tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}})
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA); err == nil {
		t.Errorf("the API server accepts TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
	}
	if err := dial(tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256); err != nil {
		t.Errorf("the API server refuses TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: %v", err)
	}
}

// checkServingCSRs: a node's kubelet gets a serving certificate for its own name and its
// Node's addresses; not for an address the Node does not report, not for another node, and
// not through the client signer's path.
func checkServingCSRs(t *testing.T, dir, admin string, kubectl func(string, ...string) (string, error), decided func(string) string, ca *x509.Certificate) {
	t.Helper()
	if out, err := kubectl(admin, "patch", "node", "n2", "--subresource=status", "--type=merge", "-p",
		`{"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.2"},{"type":"Hostname","address":"n2"}]}}`); err != nil {
		t.Fatalf("node n2's addresses: %s %v", out, err)
	}
	ask := func(name, cn string, dns []string, ips []string) {
		t.Helper()
		// As the kubelet of n2 asks it: user system:node:n2 in group system:nodes.
		if out, err := kubectl(admin, "--as=system:node:n2", "--as-group=system:nodes", "--as-group=system:authenticated", "create", "-f", servingCSR(t, dir, name, cn, dns, ips)); err != nil {
			t.Fatalf("creating CSR %s: %s %v", name, out, err)
		}
	}
	ask("serving-n2", "n2", []string{"n2"}, []string{"10.0.0.2"})
	got := decided("serving-n2")
	certPEM, err := base64.StdEncoding.DecodeString(got)
	if err != nil {
		t.Fatalf("serving-n2: %s", got)
	}
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.2")) {
		t.Errorf("n2's serving certificate: %v, IPs %v", err, cert.IPAddresses)
	}
	ask("serving-extra-ip", "n2", []string{"n2"}, []string{"10.0.0.2", "10.9.9.9"})
	if decided("serving-extra-ip") != "Denied" {
		t.Errorf("a serving certificate for an address node n2 does not have was approved")
	}
	// Another node's name: the API server's NodeRestriction refuses the CSR itself (the
	// approver would deny it too, but it never sees one).
	if out, err := kubectl(admin, "--as=system:node:n2", "--as-group=system:nodes", "create", "-f", servingCSR(t, dir, "serving-other-node", "existing", []string{"existing"}, nil)); err == nil ||
		!strings.Contains(out, "can only create a node CSR with CN=system:node:n2") {
		t.Errorf("node n2 asking a serving certificate for node existing: %s %v", out, err)
	}
	// A serving CSR asked by anything but a node (here a join token's group) is denied.
	f := servingCSR(t, dir, "serving-not-a-node", "n2", []string{"n2"}, nil)
	if out, err := kubectl(admin, "--as=mallory", "--as-group=system:bootstrappers:kubebake:nodes", "--as-group=system:authenticated", "create", "-f", f); err != nil {
		t.Fatalf("creating CSR serving-not-a-node: %s %v", out, err)
	}
	if decided("serving-not-a-node") != "Denied" {
		t.Errorf("a serving certificate asked by a user that is no node was approved")
	}
}

// servingCSR writes a kubelet-serving CSR manifest for node cn with these names; its path.
func servingCSR(t *testing.T, dir, name, cn string, dns, ips []string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + cn, Organization: []string{"system:nodes"}}, DNSNames: dns}
	for _, ip := range ips {
		req.IPAddresses = append(req.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, req, key)
	if err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf("apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: %s\nspec:\n  request: %s\n  signerName: kubernetes.io/kubelet-serving\n  usages: [digital signature, server auth]\n",
		name, base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	f := filepath.Join(dir, name+".yaml")
	writeFile(t, f, manifest, 0o644)
	return f
}
