package artifacts

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubebake/kubebake/artifacts/gomain"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// TestGoModProvidedMains builds kubebake's flanneld and coredns against the flannel and
// CoreDNS versions the embedded debian-12 recipe's tracks resolve to, from the module proxy,
// runs both, and rebuilds them in a fresh work folder to compare the sha256 (and with the
// committed lock when it was made with this toolchain). Skipped under -short.
func TestGoModProvidedMains(t *testing.T) {
	needGoBuild(t, 40*time.Minute)
	ctx := context.Background()
	r, err := recipes.Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	var inputs []recipes.Input
	for _, in := range r.Inputs() {
		if in.Main != "" {
			inputs = append(inputs, in)
		}
	}
	if len(inputs) != 2 {
		t.Fatalf("debian-12 has %d inputs from kubebake's mains, want flanneld and coredns", len(inputs))
	}

	s1 := newGoModSource(openTestCache(t))
	start := time.Now()
	locked, err := s1.Resolve(ctx, inputs, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first build: %v", time.Since(start).Round(time.Second))
	byName := map[string]recipes.LockedArtifact{}
	for _, a := range locked {
		byName[a.Name] = a
		t.Logf("%-9s %-9s %10d bytes (%.1f MiB)  sha256 %s", a.Name, a.Version, a.Size, float64(a.Size)/(1<<20), a.SHA256)
		if a.Package != "" || a.Main != a.Name || a.MainSHA256 != gomain.SHA256(a.Name) || !strings.HasPrefix(a.ModuleSum, "h1:") {
			t.Errorf("%s: locked %+v", a.Name, a)
		}
	}
	if a := byName["flanneld"]; a.Module != "github.com/flannel-io/flannel@v0.28.10" {
		t.Errorf("flanneld module %s", a.Module)
	}
	if a := byName["coredns"]; a.Module != "github.com/coredns/coredns@v1.15.0" || a.Size > 80<<20 {
		t.Errorf("coredns module %s, %d bytes (CoreDNS's own main with every plugin is 112 MB)", a.Module, a.Size)
	}
	paths, err := s1.Fetch(ctx, locked)
	if err != nil {
		t.Fatal(err)
	}
	flanneld := executable(t, paths["flanneld"], "flanneld")
	coredns := executable(t, paths["coredns"], "coredns")

	t.Run("flanneld", func(t *testing.T) { checkFlanneld(t, flanneld) })
	t.Run("flanneld ready", func(t *testing.T) { checkFlanneldReady(t, flanneld) })
	t.Run("coredns", func(t *testing.T) { checkCoreDNS(t, coredns) })

	// go mod tidy took every requirement from the module's own go.mod: nothing was looked up
	// as "latest" on the proxy, which would make a later rebuild differ.
	for _, a := range locked {
		mod, ver, _ := strings.Cut(a.Module, "@")
		checkTidyFromTarget(t, s1, mod, ver)
	}

	// Reproducible: a fresh artifact cache (a new work folder, go mod tidy and go build again;
	// the Go build cache is shared) must give the same bytes, and Fetch checks them.
	s2 := newGoModSource(openTestCache(t))
	start = time.Now()
	if _, err := s2.Fetch(ctx, locked); err != nil {
		t.Fatalf("second build differs: %v", err)
	}
	t.Logf("second build in a fresh work folder: %v, same sha256", time.Since(start).Round(time.Second))

	// And the bytes the committed lock pins, when it was made with this toolchain.
	committed, err := recipes.ReadRecipeLock(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range committed.Artifacts {
		a, ok := byName[p.Name]
		switch {
		case !ok:
		case p.Toolchain != a.Toolchain:
			t.Logf("%s: locked with %s, built with %s: sha256 not compared", a.Name, p.Toolchain, a.Toolchain)
		case p != a:
			t.Errorf("%s: built %+v\nthe committed lock pins %+v", a.Name, a, p)
		}
		delete(byName, p.Name)
	}
	for name := range byName {
		t.Errorf("%s is not in the committed lock; run kubebake lock recipes/debian-12.yaml", name)
	}
}

func checkFlanneld(t *testing.T, bin string) {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || string(out) != "v0.28.10\n" {
		t.Errorf("flanneld --version: %q (%v), want v0.28.10", out, err)
	}

	// Refusals name the fix.
	for _, c := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{nil, nil, 2, "--kube-subnet-mgr is required"},
		{[]string{"--kube-subnet-mgr", "--net-config-path", "/nonexistent"}, nil, 1, "NODE_NAME is not set"},
		{[]string{"--kube-subnet-mgr", "--net-config-path", "/nonexistent"}, []string{"NODE_NAME=n1"}, 1, "network configuration: stat /nonexistent"},
		{[]string{"--kube-subnet-mgr", "--healthz", "8471"}, nil, 2, "--healthz=\"8471\": want host:port"},
	} {
		cmd := exec.Command(bin, c.args...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, c.env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != c.code || !strings.Contains(string(out), c.want) {
			t.Errorf("flanneld %v: exit %v, want %d and %q in:\n%s", c.args, err, c.code, c.want, out)
		}
	}

	// Waiting for an API server that does not answer: /healthz answers, /readyz says not yet,
	// and SIGTERM stops it cleanly (exit 0).
	dir := t.TempDir()
	netConf := filepath.Join(dir, "net-conf.json")
	os.WriteFile(netConf, []byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`), 0o644)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://%s", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, closedPort(t, "tcp"))), 0o600)
	healthz := closedPort(t, "tcp")
	cmd := exec.Command(bin, "--kube-subnet-mgr", "--kubeconfig-file", kubeconfig, "--net-config-path", netConf,
		"--subnet-file", filepath.Join(dir, "subnet.env"), "--healthz", healthz)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "NODE_NAME=n1"}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, waitErr := waitInBackground(cmd)
	defer stopProcess(cmd, exited)
	body, code := waitHTTP(t, "http://"+healthz+"/healthz", exited)
	if code != http.StatusOK || body != "flanneld is running\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if body, code := waitHTTP(t, "http://"+healthz+"/readyz", exited); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready") {
		t.Errorf("/readyz before a pod range: %d %q", code, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if err := *waitErr; err != nil || !strings.Contains(logs.String(), "flanneld stopped cleanly") {
			t.Errorf("after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Errorf("flanneld still runs a minute after SIGTERM:\n%s", logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "subnet.env")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("subnet file written without a pod range: %v", err)
	}
}

func checkCoreDNS(t *testing.T, bin string) {
	out, err := exec.Command(bin, "-version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "CoreDNS-1.15.0\nlinux/amd64, go") {
		t.Errorf("coredns -version: %q (%v)", out, err)
	}
	t.Logf("coredns -version: %s", bytes.ReplaceAll(bytes.TrimSpace(out), []byte("\n"), []byte("; ")))

	// The plugins of the main, and what they link in themselves (debug, dnstap, metadata,
	// transfer), which register but are not in the directive list.
	out, err = exec.Command(bin, "-plugins").CombinedOutput()
	if err != nil {
		t.Fatalf("coredns -plugins: %v\n%s", err, out)
	}
	dnsPlugins := strings.Fields(string(out)) // one per line
	slices.Sort(dnsPlugins)
	want := []string{"bind", "cache", "debug", "dnstap", "errors", "forward", "health", "kubernetes", "loadbalance", "log", "loop", "metadata", "prometheus", "ready", "reload", "transfer", "whoami"}
	if !slices.Equal(dnsPlugins, want) {
		t.Errorf("coredns -plugins: %v, want %v", dnsPlugins, want)
	}

	// A Corefile with a plugin that is not built in, or linked in but not a directive, fails
	// at startup, naming it.
	dir := t.TempDir()
	corefile := filepath.Join(dir, "Corefile")
	for _, p := range []string{"rewrite name foo bar", "dnstap /tmp/dnstap.sock"} {
		os.WriteFile(corefile, []byte(".:"+portOf(closedPort(t, "udp"))+" {\n  bind 127.0.0.1\n  "+p+"\n}\n"), 0o644)
		out, err = exec.Command(bin, "-conf", corefile).CombinedOutput()
		if name, _, _ := strings.Cut(p, " "); err == nil || !strings.Contains(string(out), "Unknown directive '"+name+"'") {
			t.Errorf("a Corefile with %s: %v\n%s", name, err, out)
		}
	}

	// It answers queries (whoami on 127.0.0.1 tells the client its address), health and
	// metrics.
	addr, health, metrics := closedPort(t, "udp"), closedPort(t, "tcp"), closedPort(t, "tcp")
	os.WriteFile(corefile, []byte(".:"+portOf(addr)+" {\n  bind 127.0.0.1\n  errors\n  health "+health+"\n  prometheus "+metrics+"\n  whoami\n}\n"), 0o644)
	cmd := exec.Command(bin, "-conf", corefile)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, _ := waitInBackground(cmd)
	defer stopProcess(cmd, exited)
	resp, err := queryUntilAnswered(addr, "kubebake.test.")
	if err != nil {
		t.Fatalf("no answer from coredns on %s: %v\n%s", addr, err, logs.String())
	}
	if resp[3]&0x0f != 0 || binary.BigEndian.Uint16(resp[10:12]) == 0 || !bytes.Contains(resp, []byte{127, 0, 0, 1}) {
		t.Errorf("whoami answer: rcode %d, %d extra records, %x", resp[3]&0x0f, binary.BigEndian.Uint16(resp[10:12]), resp)
	}
	if body, code := waitHTTP(t, "http://"+health+"/health", exited); code != http.StatusOK || body != "OK" {
		t.Errorf("/health: %d %q", code, body)
	}
	if body, code := waitHTTP(t, "http://"+metrics+"/metrics", exited); code != http.StatusOK || !strings.Contains(body, `coredns_build_info{goversion="go`) {
		t.Errorf("/metrics: %d %.300q", code, body)
	}
}

// checkTidyFromTarget checks that every module the tidied build module requires is required
// at the same version by the target module's own go.mod.
func checkTidyFromTarget(t *testing.T, s *GoModSource, module, version string) {
	t.Helper()
	work, err := s.cache.Scratch(filepath.Join("gomod", module+"@"+version))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(work, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	built, err := parseGoMod("build go.mod", data)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.download(context.Background(), module, version)
	if err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(info.GoMod)
	if err != nil {
		t.Fatal(err)
	}
	target, err := parseGoMod(module+" go.mod", data)
	if err != nil {
		t.Fatal(err)
	}
	for mod, v := range built.Require {
		if mod != module && target.Require[mod] != v {
			t.Errorf("the build of %s@%s requires %s %s, its go.mod %q: go mod tidy looked it up", module, version, mod, v, target.Require[mod])
		}
	}
	t.Logf("%s@%s: the build module requires %d modules, all from its go.mod", module, version, len(built.Require))
}

// closedPort returns a 127.0.0.1 address with a port that was free a moment ago.
func closedPort(t *testing.T, network string) string {
	t.Helper()
	var addr string
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr().String()
		c.Close()
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		l.Close()
	}
	return addr
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// waitInBackground waits for a started command; exited is closed when it has exited, and
// *err is then Wait's result.
func waitInBackground(cmd *exec.Cmd) (exited chan struct{}, err *error) {
	exited, err = make(chan struct{}), new(error)
	go func() {
		*err = cmd.Wait()
		close(exited)
	}()
	return exited, err
}

// stopProcess kills a command that has not exited and waits for it.
func stopProcess(cmd *exec.Cmd, exited chan struct{}) {
	select {
	case <-exited:
	default:
		cmd.Process.Kill()
		<-exited
	}
}

// waitHTTP GETs url until it answers (or the process exits, or a minute passes).
func waitHTTP(t *testing.T, url string, exited <-chan struct{}) (string, int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(body), resp.StatusCode
		}
		select {
		case <-exited:
			t.Fatalf("the process exited while waiting for %s", url)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// queryUntilAnswered sends an A query for name to a DNS server over UDP until it answers
// (it may still be starting), for at most a minute, and returns the response.
func queryUntilAnswered(addr, name string) ([]byte, error) {
	q := []byte{0x4b, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0} // id "KB", RD, one question
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		q = append(append(q, byte(len(label))), label...)
	}
	q = append(q, 0, 0, 1, 0, 1) // root, type A, class IN
	var lastErr error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 1500)
		n := 0
		if _, err = c.Write(q); err == nil {
			n, err = c.Read(buf)
		}
		c.Close()
		if err == nil && n >= 12 && buf[0] == q[0] && buf[1] == q[1] && buf[2]&0x80 != 0 {
			return buf[:n], nil
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	return nil, fmt.Errorf("no answer within a minute: %v", lastErr)
}

// checkFlanneldReady runs flanneld in a network namespace of its own (a veth pair with
// 192.0.2.10 as the node's address; nothing leaves the namespace) against a fake API server
// holding one Node with spec.podCIDR, and checks what a systemd unit relies on: the node's
// lease annotations and network condition are patched, the subnet file is written, READY=1
// comes on $NOTIFY_SOCKET, /readyz answers 200, and SIGTERM stops it cleanly. Its iptables
// rules go to the namespace's own tables.
func checkFlanneldReady(t *testing.T, bin string) {
	testenv.NeedRoot(t) // for a network namespace
	// util-linux, iproute2, iptables
	testenv.NeedTools(t, "unshare", "nsenter", "ip", "iptables")
	dir := t.TempDir()
	api := &fakeNodeAPI{t: t, node: "n1", podCIDR: "10.244.1.0/24", annotations: map[string]string{}}
	netConf := filepath.Join(dir, "net-conf.json")
	os.WriteFile(netConf, []byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}`), 0o644)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:6443"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600)
	notifyPath := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	subnetFile := filepath.Join(dir, "subnet.env")

	setup := `set -e
ip link set lo up
ip link add kb-flannel0 type veth peer name kb-flannel1
ip addr add 192.0.2.10/24 dev kb-flannel0
ip link set kb-flannel0 up
ip link set kb-flannel1 up
exec "$@"`
	cmd := exec.Command("unshare", "--net", "sh", "-c", setup, "sh", bin, "--kube-subnet-mgr", "--kubeconfig-file", kubeconfig,
		"--net-config-path", netConf, "--subnet-file", subnetFile, "--iface", "kb-flannel0", "--ip-masq", "--healthz", "127.0.0.1:8471")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NODE_NAME=n1", "NOTIFY_SOCKET=" + notifyPath}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, waitErr := waitInBackground(cmd)
	defer func() {
		stopProcess(cmd, exited)
		if t.Failed() {
			t.Logf("flanneld's log:\n%s", logs.String())
		}
	}()

	// The API server listens inside flanneld's namespace, once lo is up there.
	var ln net.Listener
	for deadline := time.Now().Add(time.Minute); ; {
		err = inNetns(cmd.Process.Pid, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:6443"); return err })
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listener in flanneld's network namespace: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv := &http.Server{Handler: api}
	go srv.Serve(ln)
	defer srv.Close()

	// READY=1 on the notify socket.
	notified := make(chan string, 1)
	go func() {
		notify.SetReadDeadline(time.Now().Add(3 * time.Minute))
		buf := make([]byte, 4096)
		n, err := notify.Read(buf)
		if err != nil {
			notified <- err.Error()
		}
		notified <- string(buf[:n])
	}()
	select {
	case msg := <-notified:
		if msg != "READY=1" {
			t.Fatalf("notify socket: %q", msg)
		}
	case <-exited:
		t.Fatalf("flanneld exited before READY=1: %v", *waitErr)
	}
	data, err := os.ReadFile(subnetFile)
	if want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"; err != nil || string(data) != want {
		t.Errorf("subnet file: %q %v, want %q", data, err, want)
	}
	if got := api.annotation("flannel.alpha.coreos.com/backend-type"); got != "host-gw" {
		t.Errorf("backend-type annotation %q", got)
	}
	if got := api.annotation("flannel.alpha.coreos.com/public-ip"); got != "192.0.2.10" {
		t.Errorf("public-ip annotation %q", got)
	}
	for deadline := time.Now().Add(time.Minute); !api.networkAvailable(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("the node's NetworkUnavailable condition was never set to False")
			break
		}
	}
	var readyz string
	err = inNetns(cmd.Process.Pid, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:8471", 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "GET /readyz HTTP/1.0\r\n\r\n")
		b, err := io.ReadAll(c)
		readyz = string(b)
		return err
	})
	if err != nil || !strings.HasPrefix(readyz, "HTTP/1.0 200 OK") || !strings.HasSuffix(readyz, "flanneld is ready\n") {
		t.Errorf("/readyz when ready: %v\n%s", err, readyz)
	}
	// --ip-masq: the masquerade rules are in the namespace's nat table.
	out, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", cmd.Process.Pid), "iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-j MASQUERADE") || !strings.Contains(string(out), "10.244.0.0/16") {
		t.Errorf("masquerade rules in flanneld's namespace: %v\n%s", err, out)
	}
	t.Logf("ready: %q; node annotations %v", data, api.annotationsCopy())

	// Still running; SIGTERM stops it cleanly.
	select {
	case <-exited:
		t.Fatalf("flanneld exited after READY=1: %v", *waitErr)
	case <-time.After(2 * time.Second):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if err := *waitErr; err != nil || !strings.Contains(logs.String(), "flanneld stopped cleanly") {
			t.Errorf("after SIGTERM: %v", err)
		}
	case <-time.After(time.Minute):
		t.Error("flanneld still runs a minute after SIGTERM")
	}
}

// inNetns runs fn on an OS thread that is in the network namespace of process pid: sockets
// fn creates belong to that namespace. The thread returns to this process's namespace, or is
// discarded when it cannot.
func inNetns(pid int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no UnlockOSThread on failure: the thread then dies with us
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if same, _ := sameFile(self, target); same {
			errc <- errors.New("the process has not entered its namespace yet")
			runtime.UnlockOSThread()
			return
		}
		if err := setns(target); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := setns(self); err != nil {
			errc <- fmt.Errorf("returning to our network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func setns(f *os.File) error {
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", f.Name(), err)
	}
	return nil
}

func sameFile(a, b *os.File) (bool, error) {
	sa, err := a.Stat()
	if err != nil {
		return false, err
	}
	sb, err := b.Stat()
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}

// fakeNodeAPI is the part of the Kubernetes API flannel's kube subnet manager uses, for one
// Node: list and watch nodes, get it, and patch its annotations and status.
type fakeNodeAPI struct {
	t             *testing.T
	node, podCIDR string

	mu           sync.Mutex
	annotations  map[string]string
	netAvailable bool
}

func (f *fakeNodeAPI) annotation(k string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.annotations[k]
}

func (f *fakeNodeAPI) annotationsCopy() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.annotations)
}

func (f *fakeNodeAPI) networkAvailable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.netAvailable
}

func (f *fakeNodeAPI) nodeObject() map[string]any {
	ann := maps.Clone(f.annotations)
	return map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": f.node, "resourceVersion": "1", "annotations": ann},
		"spec":     map[string]any{"podCIDR": f.podCIDR, "podCIDRs": []string{f.podCIDR}},
		"status":   map[string]any{"addresses": []any{map[string]string{"type": "InternalIP", "address": "192.0.2.10"}}},
	}
}

func (f *fakeNodeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	nodePath := "/api/v1/nodes/" + f.node
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/nodes" && r.URL.Query().Get("watch") == "true":
		// Nothing ever changes: hold the watch open until the client goes.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		f.mu.Unlock()
		<-r.Context().Done()
		f.mu.Lock()
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/nodes":
		reply(map[string]any{"apiVersion": "v1", "kind": "NodeList", "metadata": map[string]any{"resourceVersion": "1"}, "items": []any{f.nodeObject()}})
	case r.Method == http.MethodGet && r.URL.Path == nodePath:
		reply(f.nodeObject())
	case r.Method == http.MethodPatch && (r.URL.Path == nodePath || r.URL.Path == nodePath+"/status"):
		var patch struct {
			Metadata struct{ Annotations map[string]string }
			Status   struct {
				Conditions []struct{ Type, Status string }
			}
		}
		if err := json.NewDecoder(r.Body).Decode(&patch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for k, v := range patch.Metadata.Annotations {
			f.annotations[k] = v
		}
		for _, c := range patch.Status.Conditions {
			if c.Type == "NetworkUnavailable" {
				f.netAvailable = c.Status == "False"
			}
		}
		reply(f.nodeObject())
	default:
		f.t.Logf("fake API server: %s %s: not served", r.Method, r.URL)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]any{"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})
	}
}
