package verify

import (
	"fmt"
	"strings"

	"github.com/kubebake/kubebake/roles"
)

// Who may talk to a node, and how (docs/security.md): the kubelet's and the API server's TLS
// and anonymous access, etcd's client certificates, and which ports listen off loopback.
// The scripts are Python (the image has python3, not curl): its ssl module verifies a chain
// against the cluster CA and offers exactly the suites it is told to.

// tlsPythonHelpers are the helpers every TLS probe's Python uses: a verifying context (cluster
// CA, no host name: the probes dial 127.0.0.1), an anonymous GET's status, and whether a
// TLS 1.2 handshake offering only CBC/SHA-1 suites completes ("@SECLEVEL=0" so the client
// side is sure to offer them).
const tlsPythonHelpers = `import socket, ssl, time, urllib.error, urllib.request
CA = "/etc/kubernetes/pki/ca.crt"

def verifying():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.check_hostname = False
    return ctx

def unverified(ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if ciphers:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    return ctx

def handshake(ctx, port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s) as t:
            return t.getpeercert()

def suites(port):
    """One line per offer: strong=accepted|refused, weak=accepted|refused."""
    out = []
    for name, ciphers in (("strong", "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"), ("weak", "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA")):
        try:
            handshake(unverified(ciphers), port)
            out.append("%s=accepted" % name)
        except (ssl.SSLError, OSError):
            out.append("%s=refused" % name)
    return "\n".join(out)

def anonymous(port, path):
    try:
        with urllib.request.urlopen("https://127.0.0.1:%d%s" % (port, path), context=unverified(), timeout=10) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except Exception as e:
        return type(e).__name__

def closed(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return "open"
    except ConnectionRefusedError:
        return "closed"
    except OSError as e:
        return type(e).__name__
`

// pythonProbe wraps a Python body (after the helpers) as a probe script.
func pythonProbe(body string) string {
	return "python3 - <<'PY'\n" + tlsPythonHelpers + body + "PY\n"
}

// kubeletTLSProbe: the kubelet serves 10250 with a certificate the cluster CA signed (through
// serverTLSBootstrap and the approver; it may take a minute after the node registered),
// naming an address of the node; it answers anonymous requests 401, refuses CBC/SHA-1 suites
// and has no read-only port.
func kubeletTLSProbe() Probe {
	return Probe{
		Name:     "security/kubelet-tls",
		Expected: "serving cert signed by the cluster CA with an IP SAN, anonymous 401, weak suites refused, read-only port 10255 closed",
		Script: pythonProbe(`deadline = time.time() + 180
while True:
    try:
        cert = handshake(verifying(), 10250)
        print("serving=verified")
        print("san=" + ",".join("%s:%s" % kv for kv in cert.get("subjectAltName", ())))
        break
    except ssl.SSLCertVerificationError as e:
        err = "unverified:" + str(e.verify_message).replace(" ", "_")
    except (ssl.SSLError, OSError) as e:
        err = "no-handshake:" + type(e).__name__
    if time.time() > deadline:
        print("serving=" + err)
        break
    time.sleep(5)
print("anonymous=" + anonymous(10250, "/pods"))
print(suites(10250))
print("readonly=" + closed(10255))
`),
		Units: []string{"kubelet.service"},
		Eval:  func(o Output) (string, bool) { return judgeKubeletTLS(o.KV()) },
	}
}

func judgeKubeletTLS(kv map[string]string) (string, bool) {
	got := fmt.Sprintf("serving %s (SANs %s), anonymous %s, strong suites %s, weak suites %s, read-only port %s",
		orNone(kv["serving"]), orNone(kv["san"]), orNone(kv["anonymous"]), orNone(kv["strong"]), orNone(kv["weak"]), orNone(kv["readonly"]))
	ipSAN := false
	for _, san := range strings.Split(kv["san"], ",") {
		if ip, ok := strings.CutPrefix(san, "IP Address:"); ok && !strings.HasPrefix(ip, "127.") {
			ipSAN = true
		}
	}
	return got, kv["serving"] == "verified" && ipSAN && kv["anonymous"] == "401" &&
		kv["strong"] == "accepted" && kv["weak"] == "refused" && kv["readonly"] == "closed"
}

// apiAccessProbe: on the master, anonymous requests reach /readyz and cluster-info only (not
// /version or /api); 6443 refuses CBC/SHA-1 suites; etcd refuses a client without a
// certificate; super-admin.conf is gone once the bootstrap bound admin.conf's group; the
// API server reaches the master's kubelet through its node proxy (it checks the kubelet's
// serving certificate against the cluster CA), and that kubelet runs with
// protectKernelDefaults and seccompDefault; PodSecurity refuses a privileged pod in a
// namespace without labels (a server-side dry run: nothing is created).
// With pod-security-baseline relaxed (relaxedPodSecurity), the privileged pod must be admitted.
func apiAccessProbe(relaxedPodSecurity bool) Probe {
	podSecurity, privileged := "enforced", "refused"
	if relaxedPodSecurity {
		podSecurity, privileged = "admitted", "admitted (pod-security-baseline relaxed)"
	}
	return Probe{
		Name:     "security/apiserver-access",
		Expected: "anonymous: /readyz 200, cluster-info 200, /version 401, /api 401; weak suites refused; etcd refuses a client without a certificate; no super-admin.conf; kubelet reached through the API server, with protectKernelDefaults and seccompDefault; privileged pod " + privileged,
		Script: pythonProbe(`import json, os, subprocess
def kubectl(*args, stdin=None):
    try:
        return subprocess.run(["kubectl", "--kubeconfig", "` + AdminKubeconfig + `"] + list(args), input=stdin, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", "timed out")
for key, path in (("readyz", "/readyz"), ("clusterinfo", "/api/v1/namespaces/kube-public/configmaps/cluster-info"), ("version", "/version"), ("api", "/api")):
    print("%s=%s" % (key, anonymous(6443, path)))
print(suites(6443))
ctx = ssl.create_default_context(cafile="/etc/kubernetes/pki/etcd/ca.crt")
ctx.check_hostname = False
try:
    with socket.create_connection(("127.0.0.1", 2379), timeout=10) as s:
        with ctx.wrap_socket(s) as t:
            t.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = t.recv(64)
    print("etcd=" + ("answered" if answer else "refused"))
except ConnectionRefusedError:
    print("etcd=down")
except (ssl.SSLError, OSError):
    print("etcd=refused")
print("superadmin=" + ("present" if os.path.exists("` + roles.SuperAdminKubeconfig + `") else "absent"))
node = ""
with open("/run/kubebake/master.env") as f:
    for line in f:
        if line.startswith("KUBEBAKE_NODE_NAME="):
            node = line.strip().split("=", 1)[1]
args = []
for pid in os.listdir("/proc"):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError):
        continue
    if argv and argv[0].endswith(b"/kube-apiserver"):
        args = [a.decode() for a in argv]
print("kubeletca=" + ("set" if any(a.startswith("--kubelet-certificate-authority=") for a in args) else "unset"))
p = kubectl("get", "--raw", "/api/v1/nodes/%s/proxy/healthz" % node)
print("kubeletproxy=" + ("ok" if p.stdout.strip() == "ok" else "failed:" + "_".join((p.stderr or p.stdout).split())[:120]))
p = kubectl("get", "--raw", "/api/v1/nodes/%s/proxy/configz" % node)
try:
    kc = json.loads(p.stdout)["kubeletconfig"]
    print("kubeletconfig=" + ",".join(k for k in ("protectKernelDefaults", "seccompDefault") if kc.get(k) is True))
except (ValueError, KeyError, TypeError):
    print("kubeletconfig=unreadable")
pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kubebake-verify-privileged\nspec:\n  containers:\n  - name: c\n    image: kubebake.invalid/none\n    securityContext:\n      privileged: true\n"
p = kubectl("-n", "default", "create", "--dry-run=server", "-f", "-", stdin=pod)
print("podsecurity=" + ("enforced" if "violates PodSecurity" in p.stderr else ("admitted" if p.returncode == 0 else "error:" + "_".join(p.stderr.split())[:120])))
`),
		Units: []string{"kube-apiserver.service", "etcd.service", "kubebake-master-bootstrap.service"},
		Eval:  func(o Output) (string, bool) { return judgeAPIAccess(o.KV(), podSecurity) },
	}
}

// judgeAPIAccess: podSecurity is the answer the privileged pod must get ("enforced" or "admitted").
func judgeAPIAccess(kv map[string]string, podSecurity string) (string, bool) {
	got := fmt.Sprintf("anonymous /readyz %s, cluster-info %s, /version %s, /api %s; strong suites %s, weak %s; etcd without a certificate %s; super-admin.conf %s; API server checks the kubelet's certificate: %s, kubelet through the API server %s (its config: %s); privileged pod %s",
		orNone(kv["readyz"]), orNone(kv["clusterinfo"]), orNone(kv["version"]), orNone(kv["api"]),
		orNone(kv["strong"]), orNone(kv["weak"]), orNone(kv["etcd"]), orNone(kv["superadmin"]), orNone(kv["kubeletca"]), orNone(kv["kubeletproxy"]), orNone(kv["kubeletconfig"]), orNone(kv["podsecurity"]))
	return got, kv["readyz"] == "200" && kv["clusterinfo"] == "200" && kv["version"] == "401" && kv["api"] == "401" &&
		kv["strong"] == "accepted" && kv["weak"] == "refused" && kv["etcd"] == "refused" && kv["superadmin"] == "absent" &&
		kv["kubeletca"] == "set" && kv["kubeletproxy"] == "ok" && kv["kubeletconfig"] == "protectKernelDefaults,seccompDefault" &&
		kv["podsecurity"] == podSecurity
}

// listenPortsProbe: every socket listening on an address other than loopback is one the
// role's table (roles.ListeningPorts, docs/security.md) names.
func listenPortsProbe(role string) Probe {
	var want []string
	for _, p := range roles.ListeningPorts(role) {
		want = append(want, p.String())
	}
	return Probe{
		Name:     "security/listen-ports",
		Expected: "off loopback only " + strings.Join(want, ", "),
		// Netid, State, Recv-Q, Send-Q, Local Address:Port, Peer, [process]
		Script: `ss -Hlntu | awk '{print $1, $5}'`,
		Eval:   func(o Output) (string, bool) { return judgeListenPorts(o.Lines(), role) },
	}
}

func judgeListenPorts(lines []string, role string) (string, bool) {
	allowed := map[string]bool{}
	for _, p := range roles.ListeningPorts(role) {
		allowed[p.String()] = true
	}
	var open, extra []string
	seen := map[string]bool{}
	for _, l := range lines {
		proto, local, ok := strings.Cut(l, " ")
		i := strings.LastIndex(local, ":")
		if !ok || i < 0 {
			continue
		}
		addr, port := local[:i], local[i+1:]
		addr = strings.Trim(strings.SplitN(addr, "%", 2)[0], "[]")
		if strings.HasPrefix(addr, "127.") || addr == "::1" || strings.HasSuffix(local[:i], "%lo") {
			continue
		}
		key := proto + "/" + port
		if seen[key] {
			continue
		}
		seen[key] = true
		open = append(open, key)
		if !allowed[key] {
			extra = append(extra, key+" on "+addr)
		}
	}
	if len(lines) == 0 {
		return "ss listed no socket", false
	}
	if len(extra) > 0 {
		return "not in the role's table: " + strings.Join(extra, ", "), false
	}
	return "off loopback: " + strings.Join(open, ", "), true
}
