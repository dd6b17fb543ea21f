//go:build ignore

// This file is not part of kubebake's build (see package gomain): the gomod source writes it,
// without the line above, into a module that requires github.com/flannel-io/flannel at the
// locked version, and builds it there.

// Command flanneld is flannel's node agent as kubebake ships it: the kube subnet manager
// (each node's pod range comes from its Node object's spec.podCIDR) with the host-gw and vxlan
// backends. It is wired the way flannel's own main.go wires those parts, without the etcd
// subnet manager and the cloud backends, whose SDKs the Go module proxy does not serve.
//
// It writes the subnet file (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ)
// that the flannel CNI plugin reads, tells systemd it is ready (Type=notify), and keeps the
// routes to the other nodes' pod ranges up to date until SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/flannel-io/flannel/pkg/backend"
	"github.com/flannel-io/flannel/pkg/ip"
	"github.com/flannel-io/flannel/pkg/ipmatch"
	"github.com/flannel-io/flannel/pkg/subnet"
	"github.com/flannel-io/flannel/pkg/subnet/kube"
	"github.com/flannel-io/flannel/pkg/trafficmngr"
	"github.com/flannel-io/flannel/pkg/trafficmngr/iptables"
	"github.com/flannel-io/flannel/pkg/trafficmngr/nftables"
	"github.com/flannel-io/flannel/pkg/version"
	"github.com/joho/godotenv"
	"k8s.io/klog/v2"

	// The backends register themselves when imported; these two are the ones kubebake builds.
	_ "github.com/flannel-io/flannel/pkg/backend/hostgw"
	_ "github.com/flannel-io/flannel/pkg/backend/vxlan"
)

// backends are the backend types registered above, for error messages.
var backends = []string{"host-gw", "vxlan"}

// options are the command line flags.
type options struct {
	kubeSubnetMgr  bool
	kubeAPIURL     string
	kubeconfigFile string
	ifaces         stringList
	publicIP       string
	ipMasq         bool
	netConfPath    string
	subnetFile     string
	healthz        string
	resyncSeconds  int
	forwardRules   bool
	version        bool
}

// stringList is a flag that may be given several times (--iface eth1 --iface 10.0.2.15).
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// annotationPrefix is flannel's default: other flannel builds in the cluster read the same
// node annotations.
const annotationPrefix = "flannel.alpha.coreos.com"

func main() {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return // the flag package printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "flanneld:", err)
		os.Exit(2)
	}
	if opts.version {
		fmt.Println(version.Version)
		return
	}
	if err := run(opts); err != nil {
		klog.Errorf("flanneld: %v", err)
		klog.Flush()
		os.Exit(1)
	}
	klog.Info("flanneld stopped cleanly")
	klog.Flush()
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("flanneld", flag.ContinueOnError)
	fs.BoolVar(&o.kubeSubnetMgr, "kube-subnet-mgr", false, "take this node's pod range from its Node object (required: the only subnet manager in this build)")
	fs.StringVar(&o.kubeAPIURL, "kube-api-url", "", "API server URL (default: the kubeconfig's)")
	fs.StringVar(&o.kubeconfigFile, "kubeconfig-file", "", "kubeconfig of this node's credentials")
	fs.Var(&o.ifaces, "iface", "interface (IP or name) for traffic between nodes; may be repeated, the first that exists wins (default: the interface of the default route)")
	fs.StringVar(&o.publicIP, "public-ip", "", "IP address other nodes reach this node at (default: the interface's)")
	fs.BoolVar(&o.ipMasq, "ip-masq", false, "masquerade traffic from pods to destinations outside the pod network")
	fs.StringVar(&o.netConfPath, "net-config-path", "/etc/kube-flannel/net-conf.json", "flannel network configuration (Network, Backend)")
	fs.StringVar(&o.subnetFile, "subnet-file", "/run/flannel/subnet.env", "where to write this node's subnet for the flannel CNI plugin")
	fs.StringVar(&o.healthz, "healthz", "", "host:port to serve /healthz and /readyz on (default: off)")
	fs.IntVar(&o.resyncSeconds, "iptables-resync", 5, "seconds between checks of the masquerade and forward rules")
	fs.BoolVar(&o.forwardRules, "iptables-forward-rules", true, "accept forwarded pod traffic in the FORWARD chain")
	fs.BoolVar(&o.version, "version", false, "print the flannel version and exit")
	// klog's verbosity (-v) is the one logging flag worth having: logs go to stderr (journald).
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlags.Lookup("v").Value, "v", "log verbosity")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: every setting is a --flag", fs.Args())
	}
	if o.version {
		return o, nil
	}
	if !o.kubeSubnetMgr {
		return nil, errors.New("--kube-subnet-mgr is required: this build has no etcd subnet manager")
	}
	if o.resyncSeconds < 1 {
		return nil, fmt.Errorf("--iptables-resync=%d: want at least 1 second", o.resyncSeconds)
	}
	if o.healthz != "" {
		if _, _, err := net.SplitHostPort(o.healthz); err != nil {
			return nil, fmt.Errorf("--healthz=%q: want host:port such as 127.0.0.1:8471: %v", o.healthz, err)
		}
	}
	return o, nil
}

// run does what flannel's main does for the kube subnet manager; it returns when ctx is
// cancelled by SIGTERM or SIGINT, after every goroutine it started has stopped.
func run(opts *options) error {
	// The kube subnet manager annotates this node's Node object; without NODE_NAME it would
	// look for a pod it does not run in.
	if os.Getenv("NODE_NAME") == "" {
		return errors.New("NODE_NAME is not set: set it to this node's Kubernetes node name (the name kubelet registered)")
	}
	if _, err := os.Stat(opts.netConfPath); err != nil {
		return fmt.Errorf("network configuration: %v; write it (for example {\"Network\": \"10.244.0.0/16\", \"Backend\": {\"Type\": \"host-gw\"}}) or point --net-config-path at it", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // on an error return, stop what was started before waiting for it

	var ready atomic.Bool
	if opts.healthz != "" {
		if err := serveHealthz(ctx, &wg, opts.healthz, &ready); err != nil {
			return err
		}
	}

	klog.Infof("flanneld %s: waiting for this node's pod range from the API server", version.Version)
	sm, err := kube.NewSubnetManager(ctx, opts.kubeAPIURL, opts.kubeconfigFile, annotationPrefix, opts.netConfPath, true)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting
		}
		return fmt.Errorf("kube subnet manager: %w", err)
	}
	config, err := networkConfig(ctx, sm)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	stack, err := ipmatch.GetIPFamily(config.EnableIPv4, config.EnableIPv6)
	if err != nil {
		return fmt.Errorf("%s: %w", opts.netConfPath, err)
	}
	if err := checkBridgeNetfilter(config); err != nil {
		return err
	}

	extIface, err := externalInterface(ctx, sm, opts, stack)
	if err != nil {
		return err
	}
	be, err := backend.NewManager(ctx, sm, extIface).GetBackend(config.BackendType)
	if err != nil {
		return fmt.Errorf("backend %q from %s: %w (this flanneld has %s)", config.BackendType, opts.netConfPath, err, strings.Join(backends, ", "))
	}
	bn, err := be.RegisterNetwork(ctx, &wg, config)
	if err != nil {
		return fmt.Errorf("registering the %s network: %w", config.BackendType, err)
	}

	// Remove the rules of the packet filter this configuration does not use (a restart with
	// another EnableNFTables setting), then program the one it uses. Without an iptables
	// command no earlier run can have left iptables rules.
	if _, err := exec.LookPath("iptables"); err == nil || !config.EnableNFTables {
		if err := newTrafficManager(!config.EnableNFTables).CleanUp(ctx); err != nil {
			return fmt.Errorf("cleaning up unused packet filter rules: %w", err)
		}
	}
	tm := newTrafficManager(config.EnableNFTables)
	if err := tm.Init(ctx); err != nil {
		return fmt.Errorf("packet filter: %w", err)
	}
	if opts.ipMasq {
		// The previous subnet file says which old rules to replace after a lease change.
		prevNetwork, prevSubnet := readIP4(opts.subnetFile, "FLANNEL_NETWORK"), readIP4(opts.subnetFile, "FLANNEL_SUBNET")
		prevNetwork6, prevSubnet6 := readIP6(opts.subnetFile, "FLANNEL_IPV6_NETWORK"), readIP6(opts.subnetFile, "FLANNEL_IPV6_SUBNET")
		if err := tm.SetupAndEnsureMasqRules(ctx, config.Network, prevSubnet, prevNetwork,
			config.IPv6Network, prevSubnet6, prevNetwork6, bn.Lease(), opts.resyncSeconds, false); err != nil {
			return fmt.Errorf("masquerade rules: %w", err)
		}
	}
	if opts.forwardRules {
		tm.SetupAndEnsureForwardRules(ctx, config.Network, config.IPv6Network, opts.resyncSeconds)
	}

	lease := bn.Lease()
	if err := sm.HandleSubnetFile(opts.subnetFile, config, opts.ipMasq, lease.Subnet, lease.IPv6Subnet, bn.MTU()); err != nil {
		return fmt.Errorf("writing %s: %w", opts.subnetFile, err)
	}
	klog.Infof("wrote %s: subnet %s, MTU %d, backend %s", opts.subnetFile, lease.Subnet, bn.MTU(), config.BackendType)
	ready.Store(true)

	wg.Add(1)
	go func() {
		defer wg.Done()
		bn.Run(ctx) // keeps the routes to the other nodes' ranges until ctx ends
	}()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		klog.Warningf("telling systemd flanneld is ready: %v", err)
	}
	// Marks the node's network available (NodeNetworkUnavailable=False).
	if err := sm.CompleteLease(ctx, lease, &wg); err != nil && ctx.Err() == nil {
		klog.Errorf("completing the lease: %v", err)
	}
	<-ctx.Done()
	klog.Info("stopping")
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	return nil
}

// networkConfig asks the subnet manager for the network configuration until it has one; it
// returns nil, nil when ctx ends first.
func networkConfig(ctx context.Context, sm subnet.Manager) (*subnet.Config, error) {
	for {
		config, err := sm.GetNetworkConfig(ctx)
		if err == nil && config != nil {
			klog.Infof("network %s, backend %s", config.Network, config.BackendType)
			return config, nil
		}
		klog.Warningf("no network configuration yet: %v", err)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Second):
		}
	}
}

// checkBridgeNetfilter refuses to start without br_netfilter when iptables is in use, as
// flannel does: without it pod traffic on a node bypasses the Service rules.
func checkBridgeNetfilter(config *subnet.Config) error {
	if runtime.GOOS != "linux" || config.EnableNFTables {
		return nil
	}
	for _, c := range []struct {
		on   bool
		path string
	}{
		{config.EnableIPv4, "/proc/sys/net/bridge/bridge-nf-call-iptables"},
		{config.EnableIPv6, "/proc/sys/net/bridge/bridge-nf-call-ip6tables"},
	} {
		if _, err := os.Stat(c.path); c.on && errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s is missing: load the br_netfilter kernel module", c.path)
		}
	}
	return nil
}

// externalInterface picks the interface for traffic between nodes: the first --iface that
// exists, else the one --public-ip (or the default route) is on. A public IP stored in the
// node's annotations by an earlier run wins over --public-ip, as in flannel.
func externalInterface(ctx context.Context, sm subnet.Manager, opts *options, stack int) (*backend.ExternalInterface, error) {
	publicIP, publicIP6 := opts.publicIP, ""
	if stored, stored6 := sm.GetStoredPublicIP(ctx); stored != "" || stored6 != "" {
		if stored != "" {
			publicIP = stored
		}
		publicIP6 = stored6
	}
	pub := ipmatch.PublicIPOpts{PublicIP: publicIP, PublicIPv6: publicIP6}
	if len(opts.ifaces) == 0 {
		iface, err := ipmatch.LookupExtIface(publicIP, "", "", stack, pub)
		if err != nil {
			return nil, fmt.Errorf("no interface for traffic between nodes: %w; name one with --iface", err)
		}
		return iface, nil
	}
	var errs []string
	for _, name := range opts.ifaces {
		iface, err := ipmatch.LookupExtIface(name, "", "", stack, pub)
		if err == nil && iface != nil {
			return iface, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", name, err))
	}
	return nil, fmt.Errorf("none of the --iface interfaces is usable (%s); check the names or addresses", strings.Join(errs, "; "))
}

// serveHealthz serves /healthz (the process runs) and /readyz (the subnet file is written)
// until ctx ends.
func serveHealthz(ctx context.Context, wg *sync.WaitGroup, addr string, ready *atomic.Bool) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "flanneld is running")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "flanneld is not ready yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "flanneld is ready")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--healthz: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.Errorf("healthz server: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.Infof("serving /healthz and /readyz on %s", addr)
	return nil
}

func newTrafficManager(useNFTables bool) trafficmngr.TrafficManager {
	if useNFTables {
		return &nftables.NFTablesManager{}
	}
	return &iptables.IPTablesManager{}
}

// readIP4 reads one IPv4 CIDR from an existing subnet file; the zero value when absent.
func readIP4(path, key string) ip.IP4Net {
	if v := readSubnetFile(path, key); v != "" {
		if _, n, err := net.ParseCIDR(v); err == nil {
			return ip.FromIPNet(n)
		}
	}
	return ip.IP4Net{}
}

// readIP6 reads one IPv6 CIDR from an existing subnet file; the zero value when absent.
func readIP6(path, key string) ip.IP6Net {
	if v := readSubnetFile(path, key); v != "" {
		if _, n, err := net.ParseCIDR(v); err == nil {
			return ip.FromIP6Net(n)
		}
	}
	return ip.IP6Net{IP: (*ip.IP6)(big.NewInt(0))}
}

func readSubnetFile(path, key string) string {
	vals, err := godotenv.Read(path)
	if err != nil {
		return "" // the first start: no file yet
	}
	return vals[key]
}
