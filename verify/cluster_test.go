package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/manifest"
)

func TestPlanCluster(t *testing.T) {
	plan, err := planCluster("kb", DefaultClusterSubnet, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if plan.ServerIP != netip.MustParseAddr("10.88.0.1") {
		t.Errorf("switch address %s", plan.ServerIP)
	}
	want := []struct{ role, host, ip, userData string }{
		{RoleMaster, "kb-master", "10.88.0.10", UserDataCloudInit},
		{RoleMinion, "kb-minion-1", "10.88.0.11", UserDataCloudInit},
		{RoleMinion, "kb-minion-2", "10.88.0.12", UserDataIgnition},
		{RoleMinion, "kb-minion-3", "10.88.0.13", UserDataCloudInit},
	}
	if len(plan.Nodes) != len(want) {
		t.Fatalf("%d nodes, want %d", len(plan.Nodes), len(want))
	}
	macs := map[string]bool{}
	for i, w := range want {
		n := plan.Nodes[i]
		if n.Role != w.role || n.Hostname != w.host || n.IP.String() != w.ip || n.UserData != w.userData {
			t.Errorf("node %d = %s %s %s %s, want %v", i, n.Role, n.Hostname, n.IP, n.UserData, w)
		}
		// A locally administered unicast MAC, distinct per node, stable per host name.
		if len(n.MAC) != 6 || n.MAC[0]&1 != 0 || n.MAC[0]&2 == 0 || macs[n.MAC.String()] {
			t.Errorf("%s: MAC %s", n.Hostname, n.MAC)
		}
		macs[n.MAC.String()] = true
	}
	again, _ := planCluster("kb", DefaultClusterSubnet, 3, nil)
	if again.Nodes[2].MAC.String() != plan.Nodes[2].MAC.String() {
		t.Error("MACs differ between two plans of the same cluster")
	}
	leases := plan.leases()
	if len(leases) != 4 || leases[3].Hostname != "kb-minion-3" || leases[3].IP.String() != "10.88.0.13" || leases[3].MAC.String() != plan.Nodes[3].MAC.String() {
		t.Errorf("leases: %+v", leases)
	}

	// Explicit user-data kinds win, the rest keep their defaults.
	plan, err = planCluster("kb", DefaultClusterSubnet, 2, []string{UserDataIgnition})
	if err != nil || plan.Nodes[0].UserData != UserDataIgnition || plan.Nodes[2].UserData != UserDataIgnition || plan.Nodes[1].UserData != UserDataCloudInit {
		t.Errorf("user-data override: %+v %v", plan.Nodes, err)
	}

	for _, c := range []struct {
		name     string
		subnet   string
		minions  int
		userData []string
		want     string
	}{
		{"kb", "10.88.0.0/24", 0, nil, "at least one minion"},
		{"Bad_Name", "10.88.0.0/24", 2, nil, "cluster name"},
		{"kb", "10.88.0.5/24", 2, nil, "network address"},
		{"kb", "fd00::/64", 2, nil, "IPv4"},
		{"kb", "10.88.0.0/28", 5, nil, "no room for 5 minions"},
		{"kb", "10.88.0.0/24", 1, []string{"cloud-init", "yaml"}, `user-data "yaml" for kb-minion-1`},
		{"kb", "10.88.0.0/24", 1, []string{"cloud-init", "cloud-init", "ignition"}, "3 user-data kinds for 2 nodes"},
		{strings.Repeat("a", 60), "10.88.0.0/24", 2, nil, "longer than 63"},
	} {
		_, err := planCluster(c.name, netip.MustParsePrefix(c.subnet), c.minions, c.userData)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("planCluster(%s, %s, %d): err = %v, want %q", c.name, c.subnet, c.minions, err, c.want)
		}
	}
	// A /28 holds the master (.10) and minions up to .14 (.15 is the broadcast address).
	if _, err := planCluster("kb", netip.MustParsePrefix("10.88.0.0/28"), 4, nil); err != nil {
		t.Errorf("4 minions in a /28: %v", err)
	}
}

// adminConf is a kubeconfig as kubeadm writes admin.conf (keys shortened).
const adminConf = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EgREFUQQ==
    server: https://10.88.0.10:6443
  name: kubebake
contexts:
- context:
    cluster: kubebake
    user: kubernetes-admin
  name: kubernetes-admin@kubebake
current-context: kubernetes-admin@kubebake
kind: Config
preferences: {}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
`

func TestRewriteKubeconfig(t *testing.T) {
	out, err := rewriteKubeconfig([]byte(adminConf), "https://127.0.0.1:40123", "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	var kc struct {
		Clusters []struct {
			Name    string
			Cluster map[string]string
		}
		Users []struct {
			Name string
			User map[string]string
		}
		CurrentContext string `yaml:"current-context"`
	}
	if err := yaml.Unmarshal(out, &kc); err != nil {
		t.Fatalf("rewritten kubeconfig does not parse: %v\n%s", err, out)
	}
	cl := kc.Clusters[0].Cluster
	if cl["server"] != "https://127.0.0.1:40123" || cl["tls-server-name"] != "kubernetes" || cl["certificate-authority-data"] != "Q0EgREFUQQ==" {
		t.Errorf("cluster entry: %v", cl)
	}
	if len(kc.Users) != 1 || kc.Users[0].User["client-key-data"] != "S0VZ" || kc.CurrentContext != "kubernetes-admin@kubebake" {
		t.Errorf("credentials or context lost:\n%s", out)
	}
	for _, bad := range []string{"", "clusters: []\n", "clusters:\n- name: x\n", ": not yaml ["} {
		if _, err := rewriteKubeconfig([]byte(bad), "https://127.0.0.1:1", "kubernetes"); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestRunSteps: a step that runs out of time is reported by name with what it saw last; a
// later step that does not need it still runs; one that needs it (or needs a step that was
// not run) is a failed check saying why it did not run.
func TestRunSteps(t *testing.T) {
	var ran []string
	step := func(name string, needs []string, f func(ctx context.Context) (string, error)) smokeStep {
		return smokeStep{name: name, expected: name + " works", needs: needs, run: func(ctx context.Context) (string, error) {
			ran = append(ran, name)
			return f(ctx)
		}}
	}
	steps := []smokeStep{
		step("first", nil, func(ctx context.Context) (string, error) { return "fine", nil }),
		step("slow", []string{"first"}, func(ctx context.Context) (string, error) {
			return poll(ctx, 10*time.Millisecond, func(ctx context.Context) (bool, string, error) {
				return false, "2 of 3 pods Running", nil
			})
		}),
		step("after-slow", []string{"slow"}, func(ctx context.Context) (string, error) { return "ran", nil }),
		step("after-after", []string{"after-slow"}, func(ctx context.Context) (string, error) { return "ran", nil }),
		step("independent", []string{"first"}, func(ctx context.Context) (string, error) { return "ran too", nil }),
		step("broken", nil, func(ctx context.Context) (string, error) {
			return "", errors.New("pod cannot start: ErrImageNeverPull")
		}),
	}
	timeouts := map[string]time.Duration{"first": time.Second, "slow": 200 * time.Millisecond, "independent": time.Second, "broken": time.Second}
	var progressed []string
	checks, stages := runSteps(context.Background(), steps, timeouts, func(s string) { progressed = append(progressed, s) })
	if strings.Join(ran, " ") != "first slow independent broken" || strings.Join(progressed, " ") != "first slow independent broken" {
		t.Errorf("ran %v, progress %v", ran, progressed)
	}
	if len(stages) != 4 || stages[1].Name != "slow" || stages[1].Seconds < 0.2 {
		t.Errorf("stages: %+v", stages)
	}
	want := []struct {
		name string
		pass bool
		got  string
	}{
		{"cluster/first", true, "fine"},
		{"cluster/slow", false, "step slow timed out after 200ms: still not done; last seen: 2 of 3 pods Running"},
		{"cluster/after-slow", false, "not run: needs cluster/slow, which failed"},
		{"cluster/after-after", false, "not run: needs cluster/after-slow, which failed"},
		{"cluster/independent", true, "ran too"},
		{"cluster/broken", false, "pod cannot start: ErrImageNeverPull"},
	}
	if len(checks) != len(want) {
		t.Fatalf("%d checks: %+v", len(checks), checks)
	}
	for i, w := range want {
		c := checks[i]
		if c.Name != w.name || c.Pass != w.pass || c.Got != w.got || c.Expected == "" {
			t.Errorf("check %d = %+v, want %+v", i, c, w)
		}
	}

	// A cancelled run marks what is left as not run.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checks, _ = runSteps(ctx, steps[:1], timeouts, nil)
	if checks[0].Pass || checks[0].Got != "not run: the run was cancelled" {
		t.Errorf("cancelled: %+v", checks[0])
	}
}

func TestStepTimeouts(t *testing.T) {
	got, err := stepTimeouts(map[string]time.Duration{"nodes": time.Minute})
	if err != nil || got["nodes"] != time.Minute || got["reboot-master"] != DefaultStepTimeouts["reboot-master"] {
		t.Errorf("stepTimeouts = %v, %v", got, err)
	}
	for _, s := range SmokeSteps {
		if DefaultStepTimeouts[s] <= 0 {
			t.Errorf("step %s has no default timeout", s)
		}
	}
	if _, err := stepTimeouts(map[string]time.Duration{"node": time.Minute}); err == nil || !strings.Contains(err.Error(), "no such step") {
		t.Errorf("unknown step: %v", err)
	}
	if _, err := stepTimeouts(map[string]time.Duration{"dns": 0}); err == nil {
		t.Error("zero timeout accepted")
	}
}

func k8sJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func nodeJSON(name, ip, ready, bootID string, master bool) string {
	taints := "[]"
	if master {
		taints = `[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]`
	}
	return fmt.Sprintf(`{"metadata": {"name": %q}, "spec": {"taints": %s}, "status": {
		"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": %q, "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
		"addresses": [{"type": "InternalIP", "address": %q}, {"type": "Hostname", "address": %q}],
		"nodeInfo": {"bootID": %q}}}`, name, taints, ready, ip, name, bootID)
}

func TestJudgeNodes(t *testing.T) {
	plan, _ := planCluster("kb", DefaultClusterSubnet, 2, nil)
	list := func(items ...string) []k8sNode {
		return k8sJSON[k8sList[k8sNode]](t, `{"items": [`+strings.Join(items, ",")+`]}`).Items
	}
	good := list(nodeJSON("kb-master", "10.88.0.10", "True", "b0", true), nodeJSON("kb-minion-1", "10.88.0.11", "True", "b1", false), nodeJSON("kb-minion-2", "10.88.0.12", "True", "b2", false))
	if got, ok := judgeNodes(good, plan); !ok || got != "3 nodes Ready: kb-master 10.88.0.10 (control-plane:NoSchedule), kb-minion-1 10.88.0.11, kb-minion-2 10.88.0.12" {
		t.Errorf("good cluster: %v %s", ok, got)
	}
	for _, c := range []struct {
		nodes []k8sNode
		want  string
	}{
		{list(nodeJSON("kb-master", "10.88.0.10", "True", "b0", true), nodeJSON("kb-minion-1", "10.88.0.11", "True", "b1", false)), "kb-minion-2 not registered"},
		{list(nodeJSON("kb-master", "10.88.0.10", "True", "b0", true), nodeJSON("kb-minion-1", "10.88.0.11", "False", "b1", false), nodeJSON("kb-minion-2", "10.88.0.12", "True", "b2", false)), "kb-minion-1 not Ready (False KubeletReady"},
		// Every node's default route is the user-mode NIC: a kubelet that picks it registers
		// 10.0.2.15, and pod routes between nodes go nowhere.
		{list(nodeJSON("kb-master", "10.88.0.10", "True", "b0", true), nodeJSON("kb-minion-1", "10.0.2.15", "True", "b1", false), nodeJSON("kb-minion-2", "10.88.0.12", "True", "b2", false)), "kb-minion-1 has InternalIP 10.0.2.15, not its cluster address 10.88.0.11"},
		{list(nodeJSON("kb-master", "10.88.0.10", "True", "b0", false), nodeJSON("kb-minion-1", "10.88.0.11", "True", "b1", false), nodeJSON("kb-minion-2", "10.88.0.12", "True", "b2", false)), "kb-master lacks the taint"},
		{append(good, list(nodeJSON("localhost", "10.88.0.13", "True", "b3", false))...), "unexpected node localhost"},
	} {
		got, ok := judgeNodes(c.nodes, plan)
		if ok || !strings.Contains(got, c.want) {
			t.Errorf("judgeNodes = %v %q, want failure %q", ok, got, c.want)
		}
	}
}

func podJSON(name, node, phase string, ready bool, waiting string) string {
	state := `{"running": {}}`
	if waiting != "" {
		state = fmt.Sprintf(`{"waiting": {"reason": %q, "message": "container image \"kubebake.local/busybox:1.35.0\" is not present with pull policy of Never"}}`, waiting)
	}
	return fmt.Sprintf(`{"metadata": {"name": %q}, "spec": {"nodeName": %q}, "status": {"phase": %q, "podIP": "10.244.1.5",
		"containerStatuses": [{"name": "main", "ready": %v, "restartCount": 0, "state": %s}]}}`, name, node, phase, ready, state)
}

func TestJudgePods(t *testing.T) {
	pods := func(items ...string) []k8sPod {
		return k8sJSON[k8sList[k8sPod]](t, `{"items": [`+strings.Join(items, ",")+`]}`).Items
	}
	minions := []string{"kb-minion-1", "kb-minion-2"}
	names, got, ok := judgeWebPods(pods(podJSON("web-b", "kb-minion-2", "Running", true, ""), podJSON("web-a", "kb-minion-1", "Running", true, "")), minions)
	if !ok || strings.Join(names, ",") != "web-a,web-b" || got != "web-a Running on kb-minion-1, web-b Running on kb-minion-2" {
		t.Errorf("good web pods: %v %v %q", ok, names, got)
	}
	for _, c := range []struct {
		pods []k8sPod
		want string
	}{
		{pods(podJSON("web-a", "kb-minion-1", "Running", true, ""), podJSON("web-b", "kb-minion-1", "Running", true, "")), "no web pod on kb-minion-2; web-a and web-b share kb-minion-1 despite the required anti-affinity"},
		{pods(podJSON("web-a", "kb-minion-1", "Running", true, ""), podJSON("web-b", "kb-master", "Running", true, "")), "web-b runs on kb-master, not a minion"},
		{pods(podJSON("web-a", "kb-minion-1", "Running", true, ""), podJSON("web-b", "kb-minion-2", "Pending", false, "ErrImageNeverPull")), "web-b Pending on kb-minion-2 (main: ErrImageNeverPull"},
		{pods(podJSON("web-a", "kb-minion-1", "Running", true, ""), `{"metadata": {"name": "web-c"}, "spec": {}, "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available: 1 node(s) had untolerated taint, 2 node(s) didn't match pod anti-affinity rules."}]}}`), "web-c Pending (unschedulable: 0/3 nodes are available"},
	} {
		_, got, ok := judgeWebPods(c.pods, minions)
		if ok || !strings.Contains(got, c.want) {
			t.Errorf("judgeWebPods = %v %q, want failure %q", ok, got, c.want)
		}
	}
	if why := stuckReason(pods(podJSON("x", "n", "Pending", false, "ErrImageNeverPull"))[0]); !strings.HasPrefix(why, "ErrImageNeverPull: container image") {
		t.Errorf("stuckReason = %q", why)
	}
	if why := stuckReason(pods(podJSON("x", "n", "Pending", false, "ContainerCreating"))[0]); why != "" {
		t.Errorf("ContainerCreating is not stuck: %q", why)
	}
	sys := pods(podJSON("coredns-5d78c9869d-abcde", "kb-minion-1", "Running", true, ""), podJSON("coredns-5d78c9869d-fghij", "kb-minion-2", "Running", true, ""))
	if got, ok := judgeSystemPods(sys); !ok || !strings.Contains(got, "coredns-5d78c9869d-abcde") {
		t.Errorf("kube-system: %v %q", ok, got)
	}
	if got, ok := judgeSystemPods(pods(podJSON("coredns-x", "kb-minion-1", "Running", false, ""))); ok || !strings.Contains(got, "no coredns pod Running and ready") {
		t.Errorf("unready coredns: %v %q", ok, got)
	}
}

func TestParseNslookup(t *testing.T) {
	newer := "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\nName:\tweb.default.svc.cluster.local\nAddress: 10.96.113.7\n\n*** Can't find web.default.svc.cluster.local: No answer\n"
	a := parseNslookup(newer)
	if a.Server != "10.96.0.10" || strings.Join(a.Addresses, ",") != "10.96.113.7" {
		t.Errorf("busybox 1.35 output: %+v", a)
	}
	older := "Server:    10.96.0.10\nAddress 1: 10.96.0.10 kube-dns.kube-system.svc.cluster.local\n\nName:      kubernetes.default\nAddress 1: 10.96.0.1 kubernetes.default.svc.cluster.local\n"
	a = parseNslookup(older)
	if a.Server != "10.96.0.10" || strings.Join(a.Addresses, ",") != "10.96.0.1" {
		t.Errorf("busybox 1.28 output: %+v", a)
	}
	if a := parseNslookup("Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n** server can't find kubernetes.default: NXDOMAIN\n"); len(a.Addresses) != 0 {
		t.Errorf("NXDOMAIN has addresses: %+v", a)
	}
}

func TestSmokeManifests(t *testing.T) {
	var pod struct {
		Metadata struct{ Name string }
		Spec     struct {
			NodeSelector map[string]string `yaml:"nodeSelector"`
			Containers   []struct {
				Image           string
				ImagePullPolicy string `yaml:"imagePullPolicy"`
				Command         []string
			}
		}
	}
	y := podYAML(reachPodName, DefaultBusyboxImage, "kb-minion-1", []string{"nc", "-ll", "-p", "9000", "-e", "/bin/cat"})
	if err := yaml.Unmarshal([]byte(y), &pod); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	c := pod.Spec.Containers
	if pod.Metadata.Name != reachPodName || pod.Spec.NodeSelector["kubernetes.io/hostname"] != "kb-minion-1" || len(c) != 1 ||
		c[0].Image != DefaultBusyboxImage || c[0].ImagePullPolicy != "Never" || strings.Join(c[0].Command, " ") != "nc -ll -p 9000 -e /bin/cat" {
		t.Errorf("pod: %+v\n%s", pod, y)
	}
	var dep struct {
		Spec struct {
			Replicas int
			Template struct {
				Spec struct {
					Affinity struct {
						PodAntiAffinity struct {
							Required []struct {
								TopologyKey   string `yaml:"topologyKey"`
								LabelSelector struct {
									MatchLabels map[string]string `yaml:"matchLabels"`
								} `yaml:"labelSelector"`
							} `yaml:"requiredDuringSchedulingIgnoredDuringExecution"`
						} `yaml:"podAntiAffinity"`
					}
					Containers []struct {
						Command []string
					}
				}
			}
		}
	}
	y = webYAML(DefaultBusyboxImage, 2)
	if err := yaml.Unmarshal([]byte(y), &dep); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	req := dep.Spec.Template.Spec.Affinity.PodAntiAffinity.Required
	if dep.Spec.Replicas != 2 || len(req) != 1 || req[0].TopologyKey != "kubernetes.io/hostname" || req[0].LabelSelector.MatchLabels["app"] != "web" ||
		!strings.Contains(strings.Join(dep.Spec.Template.Spec.Containers[0].Command, " "), "httpd -f -p 8080") {
		t.Errorf("deployment: %+v\n%s", dep, y)
	}
}

// TestNodeCommandsRealTools runs the commands the steps send to the nodes with the host's
// own sh and socat against servers on 127.0.0.1: the HTTP GET a Service check sends, and
// the TCP connect of the pod-reach check.
func TestNodeCommandsRealTools(t *testing.T) {
	requireTool(t, "socat")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "web-7d4b9c-x2x8q")
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().(*net.TCPAddr)
	out, err := exec.Command("sh", "-c", httpGetCommand("127.0.0.1", addr.Port)).Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if by, err := servedBy(string(out), []string{"web-other", "web-7d4b9c-x2x8q"}); err != nil || by != "web-7d4b9c-x2x8q" {
		t.Errorf("servedBy = %q, %v\n%s", by, err, out)
	}
	if _, err := servedBy(string(out), []string{"web-other"}); err == nil || !strings.Contains(err.Error(), "not a web pod") {
		t.Errorf("a page from another pod passed: %v", err)
	}

	// A free port, then a listener on it: another process may take the port in between (it
	// is free, after all), which is a race to retry with another port, not a reason to skip.
	for attempt := 1; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close() // nothing listens now: the connect must fail fast, and say so
		probe := fmt.Sprintf("socat -u OPEN:/dev/null TCP:127.0.0.1:%d,connect-timeout=5 2>&1", port)
		if out, err := exec.Command("sh", "-c", probe).CombinedOutput(); err == nil {
			t.Errorf("connect to a closed port succeeded: %s", out)
		}
		l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			if attempt < 5 {
				t.Logf("port %d taken meanwhile (%v): again with another port", port, err)
				continue
			}
			t.Fatalf("port taken meanwhile %d times in a row: %v", attempt, err)
		}
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}()
		if out, err := exec.Command("sh", "-c", probe).CombinedOutput(); err != nil {
			t.Errorf("connect to a listener failed: %v %s", err, out)
		}
		l.Close()
		return
	}
}

func TestParseHTTPResponse(t *testing.T) {
	code, body, err := parseHTTPResponse("HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n<HTML>404</HTML>\n")
	if err != nil || code != 404 || body != "<HTML>404</HTML>\n" {
		t.Errorf("= %d %q %v", code, body, err)
	}
	if _, err := servedBy("HTTP/1.1 404 Not Found\r\n\r\nnope", []string{"web-a"}); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("404 passed: %v", err)
	}
	for _, bad := range []string{"", "SSH-2.0-OpenSSH\r\n\r\n", "HTTP/1.1 200 OK\r\nhalf"} {
		if _, _, err := parseHTTPResponse(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestFindKubectl(t *testing.T) {
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "cache")
	work := filepath.Join(dir, "work")
	os.MkdirAll(work, 0o755)
	script := []byte("#!/bin/sh\necho 'Client Version: v1.35.0'\n")
	sum := sha256.Sum256(script)
	hexSum := hex.EncodeToString(sum[:])
	c, err := artifacts.OpenCache(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(hexSum, bytes.NewReader(script)); err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Manifest: manifest.Manifest{Files: []manifest.File{{Path: "/usr/bin/kubectl", Type: "file", Artifact: "kubectl", SHA256: hexSum}}}}

	bin, how, err := findKubectl("", m, cacheDir, work)
	if err != nil || bin != filepath.Join(work, "kubectl") || !strings.Contains(how, "artifact cache") {
		t.Fatalf("from the cache: %s, %s, %v", bin, how, err)
	}
	// The blob is read-only; the copy must run.
	out, err := exec.Command(bin).Output()
	if err != nil || !strings.Contains(string(out), "v1.35.0") {
		t.Errorf("running the copy: %v %s", err, out)
	}

	explicit := filepath.Join(dir, "my-kubectl")
	os.WriteFile(explicit, script, 0o755)
	if bin, how, err := findKubectl(explicit, m, cacheDir, work); err != nil || bin != explicit || !strings.HasPrefix(how, "given") {
		t.Errorf("explicit: %s, %s, %v", bin, how, err)
	}
	if _, _, err := findKubectl(filepath.Join(dir, "nothere"), m, cacheDir, work); err == nil {
		t.Error("a missing explicit kubectl was accepted")
	}

	// Not in the cache: kubectl on PATH, else an error that says what to do.
	other := &Manifest{Manifest: manifest.Manifest{Files: []manifest.File{{Path: "/usr/bin/kubectl", Type: "file", Artifact: "kubectl", SHA256: strings.Repeat("0", 64)}}}}
	pathDir := filepath.Join(dir, "path")
	os.MkdirAll(pathDir, 0o755)
	t.Setenv("PATH", pathDir)
	if _, _, err := findKubectl("", other, cacheDir, work); err == nil || !strings.Contains(err.Error(), "--kubectl") {
		t.Errorf("no kubectl anywhere: %v", err)
	}
	os.WriteFile(filepath.Join(pathDir, "kubectl"), script, 0o755)
	if bin, how, err := findKubectl("", other, cacheDir, work); err != nil || bin != filepath.Join(pathDir, "kubectl") || !strings.Contains(how, "PATH") {
		t.Errorf("PATH: %s, %s, %v", bin, how, err)
	}
}

// TestClusterArtifactModes: failure artifacts (serial logs of every boot) are 0600 in a 0700
// folder, even when an older folder of that name was left with looser modes, and the report
// lists them.
func TestClusterArtifactModes(t *testing.T) {
	dir := t.TempDir()
	arts := filepath.Join(dir, "artifacts", "cluster-kb")
	os.MkdirAll(arts, 0o755)
	work := filepath.Join(dir, "work")
	os.MkdirAll(work, 0o755)
	c := &cluster{opts: ClusterOptions{Name: "kb", WorkDir: work}}
	rep := &Report{}
	for i, host := range []string{"kb-master", "kb-minion-1"} {
		var logs []string
		for boot := 1; boot <= i+1; boot++ {
			p := filepath.Join(work, fmt.Sprintf("%s-serial-%d.log", host, boot))
			os.WriteFile(p, []byte("boot "+host), 0o644)
			logs = append(logs, p)
		}
		n := &node{opts: Options{ArtifactsDir: arts}, hostname: host, machine: &Machine{SerialLogs: logs, SerialLog: logs[len(logs)-1]}}
		c.nodes = append(c.nodes, n)
		rep.Results = append(rep.Results, Result{Node: host})
	}
	rep.Results = append(rep.Results, Result{Role: RoleCluster, Node: RoleCluster})
	c.saveArtifacts(context.Background(), rep)

	st, err := os.Stat(arts)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("artifacts folder: %v %v", st.Mode(), err)
	}
	want := map[string][]string{
		"kb-master":   {"kb-master-serial.log"},
		"kb-minion-1": {"kb-minion-1-serial.log", "kb-minion-1-serial-boot2.log"},
	}
	for i, r := range rep.Results[:2] {
		var names []string
		for _, a := range r.Artifacts {
			names = append(names, filepath.Base(a))
			st, err := os.Stat(a)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v %v", a, st.Mode(), err)
			}
		}
		if strings.Join(names, " ") != strings.Join(want[r.Node], " ") {
			t.Errorf("result %d (%s) lists %v, want %v", i, r.Node, names, want[r.Node])
		}
	}
	if b, _ := os.ReadFile(rep.Results[1].Artifacts[1]); string(b) != "boot kb-minion-1" {
		t.Errorf("second boot's log: %q", b)
	}
}

func TestClusterReport(t *testing.T) {
	rep := &Report{Image: "out/debian-12/debian-12.raw", Results: []Result{
		{Role: RoleMaster, UserData: UserDataCloudInit, Node: "kb-master", Accel: "tcg", Checks: []Check{{Name: "role/marker", Pass: true}}},
		{Role: RoleCluster, Node: RoleCluster, Accel: "tcg", Stages: []Stage{{"nodes", 42}},
			Checks: []Check{{Name: "cluster/nodes", Expected: "Ready", Got: "step nodes timed out after 15m0s: still not done; last seen: kb-minion-2 not registered"}}},
	}}
	rep.Finish()
	var b bytes.Buffer
	rep.WriteText(&b)
	for _, w := range []string{"== kb-master (master/cloud-init, tcg", "== cluster (tcg, 0s, nodes 42s)", "cluster/nodes", "FAIL cluster/nodes"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("text lacks %q:\n%s", w, b.String())
		}
	}
	b.Reset()
	rep.WriteJUnit(&b)
	for _, w := range []string{`name="kubebake.verify.cluster.kb-master"`, `name="kubebake.verify.cluster"`, `<property name="node" value="kb-master">`, `name="cluster/nodes"`} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("JUnit lacks %q:\n%s", w, b.String())
		}
	}
}

func TestManifestImageRef(t *testing.T) {
	m, err := ParseManifest([]byte(`{"apiVersion": "kubebake.dev/v1alpha1", "kind": "ImageManifest", "files": [{"path": "/usr/bin/kubelet"}], "artifacts": [
		{"name": "kubelet", "kind": "binary", "source": "gomod", "version": "v1.35.0", "sha256": "aa"},
		{"name": "busybox-image", "kind": "image", "ref": "kubebake.local/busybox:1.35.0", "sha256": "bb"},
		{"name": "coredns-image", "kind": "image", "ref": "kubebake.local/coredns:v1.15.0", "sha256": "cc"}]}`), "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"busybox": "kubebake.local/busybox:1.35.0", "coredns": "kubebake.local/coredns:v1.15.0", "pause": "", "box": ""} {
		if got := m.ImageRef(name); got != want {
			t.Errorf("ImageRef(%s) = %q, want %q", name, got, want)
		}
	}
}

func TestPlanBoots(t *testing.T) {
	str := func(bs []boot) string {
		var out []string
		for _, b := range bs {
			out = append(out, b.role+"/"+b.userData)
		}
		return strings.Join(out, " ")
	}
	roles := []string{RoleMaster, RoleMinion, "edge"}
	both := []string{UserDataCloudInit, UserDataIgnition}
	bs, err := planBoots(roles, both, nil)
	if want := "master/cloud-init master/ignition minion/cloud-init minion/ignition edge/cloud-init edge/ignition"; err != nil || str(bs) != want {
		t.Errorf("every role, both kinds: %q %v, want %q", str(bs), err, want)
	}
	bs, err = planBoots(roles, []string{UserDataCloudInit}, map[string]string{RoleMaster: UserDataIgnition})
	if want := "master/ignition minion/cloud-init edge/cloud-init"; err != nil || str(bs) != want {
		t.Errorf("master=ignition: %q %v, want %q", str(bs), err, want)
	}
	if _, err := planBoots(roles, both, map[string]string{"mastr": UserDataIgnition}); err == nil || !strings.Contains(err.Error(), "mastr is not a role this run boots") {
		t.Errorf("a role that is not booted: %v", err)
	}
}
