//go:build ignore

// This file is not part of kubebake's build (see package gomain): the gomod source writes it,
// without the line above, into a module that requires github.com/coredns/coredns at the
// locked version, and builds it there.

// Command coredns is CoreDNS with the plugins a cluster DNS needs and no others: CoreDNS's own
// main imports every plugin (a 112 MB binary); plugins are chosen at compile time by
// importing them, as CoreDNS documents for embedding hosts. Flags, Corefile and -version are
// CoreDNS's (coremain.Run).
package main

import (
	"fmt"
	"os"
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// Each import registers one plugin. bind matters on a node: CoreDNS on the host network
	// must not take port 53 on every address (systemd-resolved has 127.0.0.53:53).
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics" // "prometheus": kubeadm's Corefile serves :9153
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami" // CoreDNS's default Corefile (no -conf) uses it
)

// plugins are the directives of the imported plugins. (Some of them link others in, such as
// dnstap or transfer, which register themselves but stay unusable: not in the directives.)
var plugins = []string{
	"bind", "cache", "errors", "forward", "health", "kubernetes", "loadbalance", "log", "loop", "prometheus", "ready", "reload", "whoami",
}

func main() {
	// The order plugins run in is CoreDNS's (core/dnsserver.Directives), not the Corefile's:
	// keep that order, limited to the plugins built in, so that a Corefile naming another
	// plugin fails at startup with "unknown directive".
	var directives []string
	for _, d := range dnsserver.Directives {
		if slices.Contains(plugins, d) {
			directives = append(directives, d)
		}
	}
	if len(directives) != len(plugins) {
		fmt.Fprintf(os.Stderr, "coredns: this CoreDNS version does not order every built-in plugin (have %v, ordered %v)\n", plugins, directives)
		os.Exit(1)
	}
	if err := dnsserver.SetDirectives(directives); err != nil {
		fmt.Fprintln(os.Stderr, "coredns:", err)
		os.Exit(1)
	}
	coremain.Run()
}
