package verify

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/testenv"
)

// TestJudgeKubeletTLS: each defect of the kubelet's port fails the check.
func TestJudgeKubeletTLS(t *testing.T) {
	good := map[string]string{"serving": "verified", "san": "DNS:m1,IP Address:10.88.0.11", "anonymous": "401",
		"strong": "accepted", "weak": "refused", "readonly": "closed"}
	if got, ok := judgeKubeletTLS(good); !ok {
		t.Errorf("good kubelet: %q", got)
	}
	for name, defect := range map[string][2]string{
		"self-signed serving cert (no serverTLSBootstrap)": {"serving", "unverified:self-signed_certificate_in_certificate_chain"},
		"no serving cert yet (nothing approved it)":        {"serving", "no-handshake:SSLError"},
		"no IP in the serving cert":                        {"san", "DNS:m1"},
		"only a loopback IP":                               {"san", "DNS:m1,IP Address:127.0.0.1"},
		"anonymous auth on":                                {"anonymous", "200"},
		"kubelet not listening":                            {"anonymous", "ConnectionRefusedError"},
		"CBC suites accepted":                              {"weak", "accepted"},
		"port closed (strong suites fail too)":             {"strong", "refused"},
		"read-only port 10255 open":                        {"readonly", "open"},
	} {
		kv := map[string]string{}
		for k, v := range good {
			kv[k] = v
		}
		kv[defect[0]] = defect[1]
		if got, ok := judgeKubeletTLS(kv); ok {
			t.Errorf("%s passed: %q", name, got)
		}
	}
	if got, ok := judgeKubeletTLS(nil); ok {
		t.Errorf("no output passed: %q", got)
	}
}

// TestJudgeAPIAccess: each defect of the master's access rules fails the check.
func TestJudgeAPIAccess(t *testing.T) {
	good := map[string]string{"readyz": "200", "clusterinfo": "200", "version": "401", "api": "401",
		"strong": "accepted", "weak": "refused", "etcd": "refused", "superadmin": "absent", "kubeletca": "set", "kubeletproxy": "ok", "kubeletconfig": "protectKernelDefaults,seccompDefault", "podsecurity": "enforced"}
	if got, ok := judgeAPIAccess(good, "enforced"); !ok {
		t.Errorf("good master: %q", got)
	}
	for name, defect := range map[string][2]string{
		"anonymous /version (no authentication config)": {"version", "200"},
		"anonymous /api allowed":                        {"api", "403"},
		"anonymous auth off: minions cannot discover":   {"clusterinfo", "401"},
		"API server down":                               {"readyz", "ConnectionRefusedError"},
		"CBC suites accepted":                           {"weak", "accepted"},
		"strong suites refused (API server down)":       {"strong", "refused"},
		"etcd answers without a client certificate":     {"etcd", "answered"},
		"etcd not listening":                            {"etcd", "down"},
		"super-admin.conf kept":                         {"superadmin", "present"},
		"kubelet serving cert not from the cluster CA":  {"kubeletproxy", "failed:Error_from_server:_x509:_certificate_signed_by_unknown_authority"},
		"no --kubelet-certificate-authority":            {"kubeletca", "unset"},
		"kubelet without seccompDefault":                {"kubeletconfig", "protectKernelDefaults"},
		"kubelet config unreadable":                     {"kubeletconfig", "unreadable"},
		"no PodSecurity default":                        {"podsecurity", "admitted"},
	} {
		kv := map[string]string{}
		for k, v := range good {
			kv[k] = v
		}
		kv[defect[0]] = defect[1]
		if got, ok := judgeAPIAccess(kv, "enforced"); ok {
			t.Errorf("%s passed: %q", name, got)
		}
	}
}

// TestJudgeListenPorts: a listener off loopback that the role's table lacks fails; loopback
// ones never count.
func TestJudgeListenPorts(t *testing.T) {
	minion := []string{"tcp 0.0.0.0:22", "tcp [::]:22", "tcp *:10250", "udp 0.0.0.0:8472",
		"tcp 127.0.0.1:10248", "tcp 127.0.0.1:10256", "udp 127.0.0.53%lo:53", "tcp [::1]:2379"}
	if got, ok := judgeListenPorts(minion, "minion"); !ok {
		t.Errorf("minion: %q", got)
	}
	if got, ok := judgeListenPorts(append(minion, "tcp *:6443"), "master"); !ok {
		t.Errorf("master: %q", got)
	}
	for name, c := range map[string]struct {
		line, role string
	}{
		"kube-proxy healthz on every address": {"tcp *:10256", "minion"},
		"LLMNR responder":                     {"udp 0.0.0.0:5355", "minion"},
		"etcd on the node's address":          {"tcp 10.88.0.10:2379", "master"},
		"an API server on a minion":           {"tcp *:6443", "minion"},
	} {
		got, ok := judgeListenPorts(append(append([]string(nil), minion...), c.line), c.role)
		if ok || !strings.Contains(got, "not in the role's table") {
			t.Errorf("%s passed: %q", name, got)
		}
	}
	if got, ok := judgeListenPorts(nil, "minion"); ok {
		t.Errorf("no ss output passed: %q", got)
	}
}

// TestTLSProbeScriptsParse: the Python the TLS probes run in the guest is valid Python 3
// (a syntax error would only show in a boot).
func TestTLSProbeScriptsParse(t *testing.T) {
	testenv.NeedTool(t, "python3")
	for _, p := range []Probe{kubeletTLSProbe(), apiAccessProbe(false)} {
		body, ok := strings.CutPrefix(p.Script, "python3 - <<'PY'\n")
		body, ok2 := strings.CutSuffix(body, "PY\n")
		if !ok || !ok2 {
			t.Fatalf("%s: not a python3 heredoc", p.Name)
		}
		cmd := exec.Command("python3", "-c", "import ast, sys; ast.parse(sys.stdin.read())")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", p.Name, err, out)
		}
	}
}

// TestTLSProbeHelpers runs the probes' Python helpers on the host against TLS servers on
// 127.0.0.1: a server taking only AEAD suites over TLS 1.2 gives strong=accepted and
// weak=refused, one that also takes a CBC/SHA-1 suite weak=accepted; an anonymous GET reports
// the server's status; a port nothing listens on is closed. Each result is one key=value
// line, as Output.KV reads it.
func TestTLSProbeHelpers(t *testing.T) {
	testenv.NeedTool(t, "python3")
	serve := func(suites []uint16) (port string) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
		}))
		srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: suites}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	}
	aead := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}
	strict := serve(aead)
	lax := serve(append(aead, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := l.Addr().(*net.TCPAddr).Port
	l.Close()

	run := func(body string) map[string]string {
		t.Helper()
		out, err := exec.Command("python3", "-c", tlsPythonHelpers+body).CombinedOutput()
		if err != nil {
			t.Fatalf("python3: %v\n%s", err, out)
		}
		return Output{Text: string(out)}.KV()
	}
	kv := run(fmt.Sprintf("print(suites(%s))\nprint('anonymous=' + anonymous(%s, '/pods'))\nprint('readonly=' + closed(%d))\n", strict, strict, free))
	if kv["strong"] != "accepted" || kv["weak"] != "refused" || kv["anonymous"] != "401" || kv["readonly"] != "closed" {
		t.Errorf("strict server: %v", kv)
	}
	if _, ok := judgeKubeletTLS(map[string]string{"serving": "verified", "san": "IP Address:10.0.0.1", "anonymous": kv["anonymous"],
		"strong": kv["strong"], "weak": kv["weak"], "readonly": kv["readonly"]}); !ok {
		t.Errorf("the judge fails what the helpers print for a good server: %v", kv)
	}
	kv = run(fmt.Sprintf("print(suites(%s))\nprint('readonly=' + closed(%s))\n", lax, lax))
	if kv["strong"] != "accepted" || kv["weak"] != "accepted" || kv["readonly"] != "open" {
		t.Errorf("lax server: %v", kv)
	}
}
