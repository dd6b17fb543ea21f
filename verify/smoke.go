package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/shell"
)

// SmokeSteps are the cluster smoke steps in the order they run; each is a check
// "cluster/<step>" with its own timeout.
var SmokeSteps = []string{"api-access", "nodes", "join", "pod-reach", "service", "dns", "replace", "reboot-minion", "reboot-master"}

// DefaultStepTimeouts are sized for TCG on two cores with three VMs sharing them.
var DefaultStepTimeouts = map[string]time.Duration{
	"api-access":    5 * time.Minute,
	"nodes":         15 * time.Minute,
	"join":          5 * time.Minute,
	"pod-reach":     15 * time.Minute,
	"service":       15 * time.Minute,
	"dns":           5 * time.Minute,
	"replace":       10 * time.Minute,
	"reboot-minion": 20 * time.Minute,
	"reboot-master": 25 * time.Minute,
}

// stepTimeouts is DefaultStepTimeouts with the overrides, which must name known steps.
func stepTimeouts(overrides map[string]time.Duration) (map[string]time.Duration, error) {
	t := map[string]time.Duration{}
	for k, v := range DefaultStepTimeouts {
		t[k] = v
	}
	for k, v := range overrides {
		if _, ok := t[k]; !ok {
			return nil, fmt.Errorf("step timeout for %q: no such step (steps: %s)", k, strings.Join(SmokeSteps, ", "))
		}
		if v <= 0 {
			return nil, fmt.Errorf("step timeout for %q: %s is not a duration above zero", k, v)
		}
		t[k] = v
	}
	return t, nil
}

// smokeStep is one cluster promise, proven from the host and over SSH.
type smokeStep struct {
	name     string
	expected string
	// needs are the steps whose failure makes this one meaningless (it uses what they made).
	needs []string
	run   func(ctx context.Context) (got string, err error)
}

// runSteps runs the steps in order, each under its own timeout; every step becomes a check.
// A step that runs out of time is reported by name, with what it saw last. A later step
// still runs unless it needs one that failed (or was not run): then it is a failed check
// "not run: needs cluster/<step>, which failed", so the report shows every step either way.
func runSteps(ctx context.Context, steps []smokeStep, timeouts map[string]time.Duration, progress func(step string)) ([]Check, []Stage) {
	failed := map[string]bool{}
	var checks []Check
	var stages []Stage
	for _, s := range steps {
		c := Check{Name: "cluster/" + s.name, Expected: s.expected}
		var blocked []string
		for _, d := range s.needs {
			if failed[d] {
				blocked = append(blocked, "cluster/"+d)
			}
		}
		switch {
		case ctx.Err() != nil:
			c.Got = "not run: the run was cancelled"
		case len(blocked) > 0:
			c.Got = "not run: needs " + strings.Join(blocked, ", ") + ", which failed"
		default:
			if progress != nil {
				progress(s.name)
			}
			limit := timeouts[s.name]
			if limit <= 0 {
				limit = DefaultStepTimeouts[s.name]
			}
			sctx, cancel := context.WithTimeout(ctx, limit)
			start := time.Now()
			got, err := s.run(sctx)
			timedOut := errors.Is(sctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
			cancel()
			stages = append(stages, Stage{Name: s.name, Seconds: time.Since(start).Seconds()})
			switch {
			case err == nil:
				c.Got, c.Pass = got, true
			case timedOut:
				c.Got = fmt.Sprintf("step %s timed out after %s: %v", s.name, limit, err)
			default:
				c.Got = err.Error()
			}
		}
		if !c.Pass {
			failed[s.name] = true
		}
		checks = append(checks, c)
	}
	return checks, stages
}

// poll calls try every interval until it is done or fails for good (a non-nil error), or
// ctx ends: then the error says what try saw last.
func poll(ctx context.Context, every time.Duration, try func(ctx context.Context) (done bool, last string, err error)) (string, error) {
	var last string
	for {
		done, l, err := try(ctx)
		if ctx.Err() != nil && !done {
			// What try saw while ctx ended is only the deadline itself.
			return last, fmt.Errorf("still not done; last seen: %s", orNone(last))
		}
		if l != "" {
			last = l
		}
		if err != nil || done {
			return last, err
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("still not done; last seen: %s", orNone(last))
		case <-time.After(every):
		}
	}
}

// smoke runs the smoke steps when every node booted, and returns the cluster's Result.
func (c *cluster) smoke(ctx context.Context, accel string) Result {
	res := Result{Role: RoleCluster, Node: RoleCluster, Accel: accel}
	start := time.Now()
	var down []string
	for _, n := range c.nodes {
		if n.session == nil {
			down = append(down, n.hostname)
		}
	}
	c.busybox = c.opts.BusyboxImage
	if m := c.master().manifest; c.busybox == "" && m != nil {
		c.busybox = m.ImageRef("busybox")
	}
	if c.busybox == "" {
		c.busybox = DefaultBusyboxImage
	}
	steps := c.steps()
	if len(down) > 0 {
		for _, s := range steps {
			res.Checks = append(res.Checks, Check{Name: "cluster/" + s.name, Expected: s.expected,
				Got: "not run: " + strings.Join(down, ", ") + " did not boot (see its stage check)"})
		}
	} else {
		res.Checks, res.Stages = runSteps(ctx, steps, c.timeouts, c.progress)
	}
	res.Seconds = time.Since(start).Seconds()
	res.Finish()
	return res
}

func (c *cluster) progress(step string) {
	slog.Info("verify cluster step", "step", step, "timeout", c.timeouts[step])
	if c.opts.Progress != nil {
		c.opts.Progress(RoleCluster, step)
	}
}

func (c *cluster) steps() []smokeStep {
	minions := len(c.minions())
	return []smokeStep{
		{name: "api-access", run: c.stepAPIAccess,
			expected: "the master's admin kubeconfig, pointed at its forwarded API port, reaches an API server that is ready"},
		{name: "nodes", needs: []string{"api-access"}, run: c.stepNodes,
			expected: fmt.Sprintf("%s registered and Ready with their cluster addresses, the master tainted; kube-system pods (coredns) Running", strings.Join(c.nodeNames(), ", "))},
		{name: "join", needs: []string{"nodes"}, run: c.stepJoin,
			expected: "every join token expires within the bundle's TTL and a registered node's token is gone; the minions keep no join token or bootstrap-kubelet.conf; a token minted for a new node is denied the master's certificate"},
		{name: "pod-reach", needs: []string{"nodes"}, run: c.stepPodReach,
			expected: "a busybox nc pod on " + c.minions()[0].hostname + " accepts TCP on its pod IP:9000 from every other node"},
		{name: "service", needs: []string{"nodes"}, run: c.stepService,
			expected: fmt.Sprintf("Deployment web (%d replicas, required anti-affinity) runs one pod per minion; Service web answers from every node and from a pod, NodePort on each minion", minions)},
		{name: "dns", needs: []string{"service"}, run: c.stepDNS,
			expected: "CoreDNS (kube-dns) answers web (short, through the pod's search list), web.default.svc.cluster.local and kubernetes.default.svc.cluster.local with their ClusterIPs; pods use it with the cluster search list"},
		{name: "replace", needs: []string{"service"}, run: c.stepReplace,
			expected: "a deleted web pod is replaced by its ReplicaSet (Running, one per minion) and the Service answers"},
		{name: "reboot-minion", needs: []string{"service"}, run: c.stepRebootMinion,
			expected: c.minions()[0].hostname + " powered off and started again on the same disk comes back Ready under its name with no step by hand; the Service answers"},
		{name: "reboot-master", needs: []string{"service"}, run: c.stepRebootMaster,
			expected: "the master powered off and started again: the API answers, every node is Ready, the Service answers"},
	}
}

// Names of what the smoke steps create (namespace default).
const (
	reachPodName  = "kubebake-reach"
	clientPodName = "kubebake-client"
	webName       = "web"
	webNodePort   = "web-nodeport"
	reachPort     = 9000
	webPort       = 8080
)

// stepAPIAccess reads the admin kubeconfig from the master, points it at the forwarded API
// port and waits for /readyz through it.
func (c *cluster) stepAPIAccess(ctx context.Context) (string, error) {
	m := c.master()
	data, err := m.session.ReadFile(ctx, AdminKubeconfig)
	if err != nil {
		return "", fmt.Errorf("reading %s on %s: %w", AdminKubeconfig, m.hostname, err)
	}
	addr := m.machine.HostAddr(apiPort)
	server := "https://" + addr
	kc, err := rewriteKubeconfig(data, server, "kubernetes")
	if err != nil {
		return "", fmt.Errorf("%s on %s: %w", AdminKubeconfig, m.hostname, err)
	}
	kcPath := filepath.Join(c.opts.WorkDir, c.opts.Name+"-admin.conf")
	if err := atomicfile.WriteFile(kcPath, kc, 0o600); err != nil {
		return "", err
	}
	bin, how, err := findKubectl(c.opts.Kubectl, m.manifest, c.cacheDir, c.opts.WorkDir)
	if err != nil {
		return "", err
	}
	c.kubectl = &kubectlClient{bin: bin, kubeconfig: kcPath}
	_, err = poll(ctx, 5*time.Second, func(ctx context.Context) (bool, string, error) {
		out, err := c.kubectl.run(ctx, "", "get", "--raw", "/readyz")
		if err != nil {
			return false, "kubectl get --raw /readyz: " + firstLineOf(err.Error()), nil
		}
		return strings.TrimSpace(out) == "ok", "readyz: " + firstLineOf(out), nil
	})
	if err != nil {
		return "", fmt.Errorf("API server through %s: %w", server, err)
	}
	return fmt.Sprintf("ready at %s (tls-server-name kubernetes); kubectl: %s", server, how), nil
}

// getJSON runs kubectl get ... -o json into v.
func (c *cluster) getJSON(ctx context.Context, v any, args ...string) error {
	out, err := c.kubectl.run(ctx, "", append(args, "-o", "json")...)
	if err != nil {
		return fmt.Errorf("kubectl %s: %s", strings.Join(args, " "), firstLineOf(err.Error()))
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("kubectl %s: unreadable JSON: %w", strings.Join(args, " "), err)
	}
	return nil
}

// nodesReady polls until judgeNodes passes.
func (c *cluster) nodesReady(ctx context.Context) (string, error) {
	return poll(ctx, 5*time.Second, func(ctx context.Context) (bool, string, error) {
		var nodes k8sList[k8sNode]
		if err := c.getJSON(ctx, &nodes, "get", "nodes"); err != nil {
			return false, err.Error(), nil
		}
		got, ok := judgeNodes(nodes.Items, c.plan)
		return ok, got, nil
	})
}

func (c *cluster) stepNodes(ctx context.Context) (string, error) {
	nodes, err := c.nodesReady(ctx)
	if err != nil {
		return "", err
	}
	pods, err := poll(ctx, 5*time.Second, func(ctx context.Context) (bool, string, error) {
		var pods k8sList[k8sPod]
		if err := c.getJSON(ctx, &pods, "get", "pods", "-n", "kube-system"); err != nil {
			return false, err.Error(), nil
		}
		got, ok := judgeSystemPods(pods.Items)
		return ok, got, nil
	})
	if err != nil {
		return "", fmt.Errorf("kube-system pods: %w", err)
	}
	return nodes + "; kube-system: " + pods, nil
}

// apply gives manifest (YAML) to kubectl apply.
func (c *cluster) apply(ctx context.Context, manifest string) error {
	if _, err := c.kubectl.run(ctx, manifest, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("kubectl apply: %s", firstLineOf(err.Error()))
	}
	return nil
}

// podYAML is a busybox pod pinned to a node by its hostname label (through the scheduler).
func podYAML(name, image, node string, command []string) string {
	cmd, _ := json.Marshal(command)
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %q
  labels: {app: %q}
spec:
  nodeSelector: {kubernetes.io/hostname: %q}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: %q
    imagePullPolicy: Never
    command: %s
`, name, name, node, image, cmd)
}

// webYAML is Deployment web: busybox httpd serving a page with the pod's host name (its pod
// name). Required anti-affinity on kubernetes.io/hostname allows one pod per node: a rolling
// update that surged a pod first would find no node for it, so it replaces one at a time.
func webYAML(image string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: %d
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 0, maxUnavailable: 1}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 5
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {app: web}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: httpd
        image: %q
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p %d -h /www"]
        ports:
        - containerPort: %d
`, replicas, image, webPort, webPort)
}

// waitPod waits until the pod runs with every container ready; a pod stuck for a reason
// that never resolves (the image is not baked) fails at once.
func (c *cluster) waitPod(ctx context.Context, name string) (k8sPod, error) {
	var pod k8sPod
	_, err := poll(ctx, 3*time.Second, func(ctx context.Context) (bool, string, error) {
		var p k8sPod
		if err := c.getJSON(ctx, &p, "get", "pod", name); err != nil {
			return false, err.Error(), nil
		}
		pod = p
		if why := stuckReason(p); why != "" {
			return false, "", fmt.Errorf("pod %s cannot start: %s (is %s baked into the image's containerd store?)", name, why, c.busybox)
		}
		s, ok := podState(p)
		return ok, s, nil
	})
	return pod, err
}

// sh runs a command on a node over SSH; a non-zero exit is an error carrying its output.
func sh(ctx context.Context, n *node, cmd string) (string, error) {
	if n.session == nil {
		return "", fmt.Errorf("%s: no SSH session", n.hostname)
	}
	r, err := n.session.Run(ctx, cmd)
	if err != nil {
		return "", fmt.Errorf("%s: %w", n.hostname, err)
	}
	if r.Exit != 0 {
		return string(r.Stdout), fmt.Errorf("%s: %q exited %d: %s", n.hostname, short(cmd), r.Exit, firstLineOf(string(r.Stdout)+string(r.Stderr)))
	}
	return string(r.Stdout), nil
}

func (c *cluster) stepPodReach(ctx context.Context) (string, error) {
	host := c.minions()[0]
	// The listener loops (-ll) and echoes what it gets; anyone can run nc POD_IP 9000.
	cmd := []string{"nc", "-ll", "-p", strconv.Itoa(reachPort), "-e", "/bin/cat"}
	if err := c.apply(ctx, podYAML(reachPodName, c.busybox, host.hostname, cmd)); err != nil {
		return "", err
	}
	pod, err := c.waitPod(ctx, reachPodName)
	if err != nil {
		return "", err
	}
	if pod.Spec.NodeName != host.hostname {
		return "", fmt.Errorf("pod %s runs on %s, not on %s (its nodeSelector)", reachPodName, pod.Spec.NodeName, host.hostname)
	}
	ip := pod.Status.PodIP
	if _, err := netip.ParseAddr(ip); err != nil {
		return "", fmt.Errorf("pod %s has no pod IP (%q)", reachPodName, ip)
	}
	var from []string
	for _, n := range c.nodes {
		if n == host {
			continue
		}
		probe := fmt.Sprintf("socat -u OPEN:/dev/null TCP:%s,connect-timeout=5 2>&1", shell.Quote(net.JoinHostPort(ip, strconv.Itoa(reachPort))))
		_, err := poll(ctx, 3*time.Second, func(ctx context.Context) (bool, string, error) {
			if _, err := sh(ctx, n, probe); err != nil {
				return false, err.Error(), nil
			}
			return true, "", nil
		})
		if err != nil {
			return "", fmt.Errorf("pod %s (%s on %s) not reachable on port %d from %s: %w", reachPodName, ip, host.hostname, reachPort, n.hostname, err)
		}
		from = append(from, n.hostname)
	}
	return fmt.Sprintf("pod %s %s on %s: port %d reached from %s", reachPodName, ip, host.hostname, reachPort, strings.Join(from, ", ")), nil
}

// webPods polls until judgeWebPods passes and returns the pods' names.
func (c *cluster) webPods(ctx context.Context, gone ...string) ([]string, string, error) {
	var names []string
	got, err := poll(ctx, 3*time.Second, func(ctx context.Context) (bool, string, error) {
		var pods k8sList[k8sPod]
		if err := c.getJSON(ctx, &pods, "get", "pods", "-l", "app="+webName); err != nil {
			return false, err.Error(), nil
		}
		for _, p := range pods.Items {
			if why := stuckReason(p); why != "" {
				return false, "", fmt.Errorf("web pod %s cannot start: %s (is %s baked into the image's containerd store?)", p.Metadata.Name, why, c.busybox)
			}
		}
		var got string
		var ok bool
		names, got, ok = judgeWebPods(pods.Items, c.minionNames())
		for _, g := range gone {
			if slices.ContainsFunc(pods.Items, func(p k8sPod) bool { return p.Metadata.Name == g }) {
				return false, got + "; " + g + " still exists", nil
			}
		}
		return ok, got, nil
	})
	return names, got, err
}

// httpGetCommand fetches / from host:port with socat (no curl on the nodes; python3 costs
// seconds to start under TCG) and prints the raw response.
func httpGetCommand(host string, port int) string {
	// An IPv6 address is bracketed ([fd00::1]:80): quoted, or the shell would take it for a glob.
	return fmt.Sprintf(`printf 'GET / HTTP/1.0\r\nHost: web\r\n\r\n' | socat -t 10 - TCP:%s,connect-timeout=5`, shell.Quote(net.JoinHostPort(host, strconv.Itoa(port))))
}

// servedBy checks a raw response: status 200 and a page naming one of the web pods.
func servedBy(raw string, pods []string) (string, error) {
	code, body, err := parseHTTPResponse(raw)
	if err != nil {
		return "", err
	}
	page := strings.TrimSpace(body)
	if code != 200 {
		return "", fmt.Errorf("HTTP %d: %s", code, firstLineOf(page))
	}
	if !slices.Contains(pods, page) {
		return "", fmt.Errorf("HTTP 200 from %q, which is not a web pod (%s)", firstLineOf(page), strings.Join(pods, ", "))
	}
	return page, nil
}

// answersFrom polls until a GET of host:port from node n is served by a web pod.
func (c *cluster) answersFrom(ctx context.Context, n *node, host string, port int, pods []string) (string, error) {
	var by string
	_, err := poll(ctx, 3*time.Second, func(ctx context.Context) (bool, string, error) {
		out, err := sh(ctx, n, httpGetCommand(host, port))
		if err != nil {
			return false, err.Error(), nil
		}
		if by, err = servedBy(out, pods); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	if err != nil {
		return "", fmt.Errorf("http://%s from %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), n.hostname, err)
	}
	return by, nil
}

// serviceAnswers: the web pods are all up and the Service answers from the master.
func (c *cluster) serviceAnswers(ctx context.Context) (string, error) {
	pods, _, err := c.webPods(ctx)
	if err != nil {
		return "", fmt.Errorf("web pods: %w", err)
	}
	by, err := c.answersFrom(ctx, c.master(), c.webIP, 80, pods)
	if err != nil {
		return "", err
	}
	return "Service web answers from " + c.master().hostname + " (served by " + by + ")", nil
}

func (c *cluster) stepService(ctx context.Context) (string, error) {
	minions := c.minionNames()
	client := c.minions()[len(minions)-1]
	if err := c.apply(ctx, webYAML(c.busybox, len(minions))); err != nil {
		return "", err
	}
	// The Services are made the way a user makes them: kubectl expose (selector, ports and
	// protocol from the Deployment).
	for _, args := range [][]string{
		{"expose", "deployment", webName, "--port", "80", "--target-port", strconv.Itoa(webPort)},
		{"expose", "deployment", webName, "--name", webNodePort, "--type", "NodePort", "--port", "80", "--target-port", strconv.Itoa(webPort)},
	} {
		if out, err := c.kubectl.run(ctx, "", args...); err != nil && !strings.Contains(out+err.Error(), "AlreadyExists") {
			return "", fmt.Errorf("kubectl %s: %s", strings.Join(args, " "), firstLineOf(err.Error()))
		}
	}
	if err := c.apply(ctx, podYAML(clientPodName, c.busybox, client.hostname, []string{"sleep", "86400"})); err != nil {
		return "", err
	}
	pods, placement, err := c.webPods(ctx)
	if err != nil {
		return "", fmt.Errorf("Deployment web: %w", err)
	}
	ip, err := c.kubectl.run(ctx, "", "get", "service", webName, "-o", "jsonpath={.spec.clusterIP}")
	if err != nil || net.ParseIP(strings.TrimSpace(ip)) == nil {
		return "", fmt.Errorf("Service web has no ClusterIP (%q): %v", ip, err)
	}
	c.webIP = strings.TrimSpace(ip)
	np, err := c.kubectl.run(ctx, "", "get", "service", webNodePort, "-o", "jsonpath={.spec.ports[0].nodePort}")
	if c.nodePort, _ = strconv.Atoi(strings.TrimSpace(np)); err != nil || c.nodePort == 0 {
		return "", fmt.Errorf("Service %s has no node port (%q): %v", webNodePort, np, err)
	}
	var fromNodes []string
	for _, n := range c.nodes {
		by, err := c.answersFrom(ctx, n, c.webIP, 80, pods)
		if err != nil {
			return "", err
		}
		fromNodes = append(fromNodes, n.hostname+"<-"+by)
	}
	if _, err := c.waitPod(ctx, clientPodName); err != nil {
		return "", err
	}
	// busybox's wget is useless here: Debian's static busybox crashes (SIGSEGV) in glibc's
	// lookups inside a container without glibc's files, even for an IP address. nc does
	// no lookup for an address, so the request is sent raw, as from the nodes.
	var fromPod string
	_, err = poll(ctx, 3*time.Second, func(ctx context.Context) (bool, string, error) {
		req := fmt.Sprintf(`printf 'GET / HTTP/1.0\r\nHost: web\r\n\r\n' | nc -w 5 %s 80`, shell.Quote(c.webIP))
		out, err := c.kubectl.run(ctx, "", "exec", clientPodName, "--", "sh", "-c", req)
		if err != nil {
			return false, "http://" + c.webIP + " from " + clientPodName + ": " + firstLineOf(err.Error()), nil
		}
		by, err := servedBy(out, pods)
		if err != nil {
			return false, "http://" + c.webIP + " from " + clientPodName + ": " + err.Error(), nil
		}
		fromPod = by
		return true, "", nil
	})
	if err != nil {
		return "", fmt.Errorf("Service web (%s) from pod %s on %s: %w", c.webIP, clientPodName, client.hostname, err)
	}
	var fromNodePort []string
	for _, m := range c.minions() {
		by, err := c.answersFrom(ctx, c.master(), c.ip(m), c.nodePort, pods)
		if err != nil {
			return "", fmt.Errorf("NodePort: %w", err)
		}
		fromNodePort = append(fromNodePort, c.ip(m)+"<-"+by)
	}
	return fmt.Sprintf("%s; Service web %s:80 answers from %s; from pod %s on %s (%s); NodePort %d from %s: %s",
		placement, c.webIP, strings.Join(fromNodes, ", "), clientPodName, client.hostname, fromPod,
		c.nodePort, c.master().hostname, strings.Join(fromNodePort, ", ")), nil
}

// stepDNS asks CoreDNS from the client pod. busybox 1.35's nslookup applies the search list
// only to a name without a dot, so "kubernetes.default" would be asked as it is and fail:
// the short name "web" proves the search list, the other names are given in full.
func (c *cluster) stepDNS(ctx context.Context) (string, error) {
	dnsIP, err := c.kubectl.run(ctx, "", "get", "service", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil || net.ParseIP(strings.TrimSpace(dnsIP)) == nil {
		return "", fmt.Errorf("Service kube-system/kube-dns has no ClusterIP (%q): %v", dnsIP, err)
	}
	dnsIP = strings.TrimSpace(dnsIP)
	kubeIP, err := c.kubectl.run(ctx, "", "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil || net.ParseIP(strings.TrimSpace(kubeIP)) == nil {
		return "", fmt.Errorf("Service kubernetes has no ClusterIP (%q): %v", kubeIP, err)
	}
	kubeIP = strings.TrimSpace(kubeIP)
	resolv, err := c.kubectl.run(ctx, "", "exec", clientPodName, "--", "cat", "/etc/resolv.conf")
	if err != nil {
		return "", fmt.Errorf("reading /etc/resolv.conf in %s: %s", clientPodName, firstLineOf(err.Error()))
	}
	if !regexp.MustCompile(`(?m)^nameserver\s+`+regexp.QuoteMeta(dnsIP)+`\s*$`).MatchString(resolv) ||
		!regexp.MustCompile(`(?m)^search\s.*\bdefault\.svc\.cluster\.local\b`).MatchString(resolv) {
		return "", fmt.Errorf("%s's /etc/resolv.conf does not name kube-dns %s with the cluster search list: %q", clientPodName, dnsIP, resolv)
	}
	var answers []string
	for _, q := range []struct{ name, want string }{
		{webName, c.webIP},
		{webName + ".default.svc.cluster.local", c.webIP},
		{"kubernetes.default.svc.cluster.local", kubeIP},
	} {
		_, err := poll(ctx, 3*time.Second, func(ctx context.Context) (bool, string, error) {
			// nslookup may exit non-zero for the AAAA half; the A answer decides.
			out, err := c.kubectl.run(ctx, "", "exec", clientPodName, "--", "nslookup", q.name)
			a := parseNslookup(out)
			got := fmt.Sprintf("server %s answered %s", orNone(a.Server), orNone(strings.Join(a.Addresses, ",")))
			if len(a.Addresses) == 0 && err != nil {
				got += " (" + firstLineOf(err.Error()) + ")"
			}
			server, _, _ := strings.Cut(a.Server, ":")
			server, _, _ = strings.Cut(server, "#")
			return server == dnsIP && slices.Contains(a.Addresses, q.want), got, nil
		})
		if err != nil {
			return "", fmt.Errorf("nslookup %s in %s (want %s from %s): %w", q.name, clientPodName, q.want, dnsIP, err)
		}
		answers = append(answers, q.name+" = "+q.want)
	}
	return fmt.Sprintf("kube-dns %s: %s; search list in %s's resolv.conf", dnsIP, strings.Join(answers, ", "), clientPodName), nil
}

func (c *cluster) stepReplace(ctx context.Context) (string, error) {
	var pods k8sList[k8sPod]
	if err := c.getJSON(ctx, &pods, "get", "pods", "-l", "app="+webName); err != nil {
		return "", err
	}
	if len(pods.Items) == 0 {
		return "", errors.New("no web pod to delete")
	}
	victim := pods.Items[0]
	if _, err := c.kubectl.run(ctx, "", "delete", "pod", victim.Metadata.Name, "--wait=false"); err != nil {
		return "", fmt.Errorf("kubectl delete pod %s: %s", victim.Metadata.Name, firstLineOf(err.Error()))
	}
	// The replacement can only go where the deleted pod was (one per minion), and only once
	// that pod is gone: terminating pods still count for anti-affinity.
	_, placement, err := c.webPods(ctx, victim.Metadata.Name)
	if err != nil {
		return "", fmt.Errorf("after deleting %s: %w", victim.Metadata.Name, err)
	}
	answer, err := c.serviceAnswers(ctx)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("deleted %s on %s; now %s; %s", victim.Metadata.Name, victim.Spec.NodeName, placement, answer), nil
}

// bootID is the node's current boot ID as its kubelet reported it.
func (c *cluster) bootID(ctx context.Context, name string) (string, error) {
	var n k8sNode
	if err := c.getJSON(ctx, &n, "get", "node", name); err != nil {
		return "", err
	}
	return n.Status.NodeInfo.BootID, nil
}

// restart powers the guest off over SSH, waits for QEMU to exit, and starts it again on the
// same disk, firmware variables, seed or Ignition config and MAC; then logs in again.
func (c *cluster) restart(ctx context.Context, n *node) (string, error) {
	start := time.Now()
	// --no-block: the command returns before sshd goes down, so the session ends cleanly.
	// What counts is QEMU exiting; the command's error only explains when it does not.
	_, offErr := sh(ctx, n, "systemctl poweroff --no-block")
	n.session.Close()
	n.session = nil
	select {
	case <-n.machine.Done():
	case <-ctx.Done():
		return "", fmt.Errorf("%s did not power off: QEMU still runs %s after systemctl poweroff (%v)", n.hostname, time.Since(start).Round(time.Second), offErr)
	}
	down := time.Since(start)
	// The VM must outlive this step's deadline: it is started with the run's context.
	if err := n.machine.Restart(c.vmCtx); err != nil {
		return "", fmt.Errorf("starting %s again: %w", n.hostname, err)
	}
	up := time.Now()
	if err := n.waitBoot(ctx); err != nil {
		return "", fmt.Errorf("%s after its restart: %w", n.hostname, err)
	}
	if err := n.login(ctx); err != nil {
		return "", fmt.Errorf("%s after its restart: %w", n.hostname, err)
	}
	return fmt.Sprintf("%s off in %s, SSH again %s after start", n.hostname, down.Round(time.Second), time.Since(up).Round(time.Second)), nil
}

// rebooted polls until the node is Ready with a boot ID other than before.
func (c *cluster) rebooted(ctx context.Context, name, before string) error {
	_, err := poll(ctx, 5*time.Second, func(ctx context.Context) (bool, string, error) {
		var n k8sNode
		if err := c.getJSON(ctx, &n, "get", "node", name); err != nil {
			return false, err.Error(), nil
		}
		r := condition(n.Status.Conditions, "Ready")
		got := fmt.Sprintf("%s Ready=%s, boot ID %s", name, r.Status, orNone(n.Status.NodeInfo.BootID))
		return r.Status == "True" && n.Status.NodeInfo.BootID != before, got, nil
	})
	if err != nil {
		return fmt.Errorf("%s back Ready after its restart (boot ID other than %s): %w", name, before, err)
	}
	return nil
}

func (c *cluster) stepRebootMinion(ctx context.Context) (string, error) {
	n := c.minions()[0]
	before, err := c.bootID(ctx, n.hostname)
	if err != nil {
		return "", err
	}
	restarted, err := c.restart(ctx, n)
	if err != nil {
		return "", err
	}
	t := time.Now()
	if err := c.rebooted(ctx, n.hostname, before); err != nil {
		return "", err
	}
	ready := time.Since(t).Round(time.Second)
	answer, err := c.serviceAnswers(ctx)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; Ready again under its name %s later (new boot ID); %s", restarted, ready, answer), nil
}

func (c *cluster) stepRebootMaster(ctx context.Context) (string, error) {
	m := c.master()
	before, err := c.bootID(ctx, m.hostname)
	if err != nil {
		return "", err
	}
	restarted, err := c.restart(ctx, m)
	if err != nil {
		return "", err
	}
	t := time.Now()
	if _, err := poll(ctx, 5*time.Second, func(ctx context.Context) (bool, string, error) {
		out, err := c.kubectl.run(ctx, "", "get", "--raw", "/readyz")
		if err != nil {
			return false, firstLineOf(err.Error()), nil
		}
		return strings.TrimSpace(out) == "ok", "readyz: " + firstLineOf(out), nil
	}); err != nil {
		return "", fmt.Errorf("API server after the master's restart: %w", err)
	}
	api := time.Since(t).Round(time.Second)
	if err := c.rebooted(ctx, m.hostname, before); err != nil {
		return "", err
	}
	nodes, err := c.nodesReady(ctx)
	if err != nil {
		return "", fmt.Errorf("nodes after the master's restart: %w", err)
	}
	answer, err := c.serviceAnswers(ctx)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; API ready %s later; %s; %s", restarted, api, nodes, answer), nil
}
