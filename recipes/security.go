package recipes

import "slices"

// Security relaxes the image's secure defaults by name, where an operator has a reason (a
// CNI that needs reverse-path filtering off, privileged DaemonSets in namespaces nobody
// labels, ...). Each default holds unless listed; lint warns about each one listed, with
// what it gives up, and verify expects the relaxed setting instead of the default.
type Security struct {
	Relax []string `yaml:"relax,omitempty" json:"relax,omitempty"`
}

// Relaxation is one secure default a recipe may give up.
type Relaxation struct {
	// Default is what the image does unless relaxed; GivesUp is what relaxing costs.
	Default, GivesUp string
	// Sysctls are the NodeKernelSysctls the relaxation frees: the node layer stops setting
	// them, and the recipe may set them itself.
	Sysctls []string
}

// Names of the relaxations.
const (
	RelaxPodSecurity = "pod-security-baseline"
	RelaxSandbox     = "control-plane-sandbox"
	RelaxRPFilter    = "reverse-path-filter"
	RelaxProfiling   = "profiling"
)

// Relaxations are every secure default a recipe may relax, by name.
var Relaxations = map[string]Relaxation{
	RelaxPodSecurity: {
		Default: "a namespace without pod-security labels enforces the baseline Pod Security Standard",
		GivesUp: "anyone who may create a pod in an unlabelled namespace may run it privileged, with the node's namespaces and host paths: root on the node",
	},
	RelaxSandbox: {
		Default: "etcd, kube-apiserver, kube-controller-manager and kube-scheduler run under a systemd sandbox; etcd as its own user",
		GivesUp: "a flaw in a control-plane service runs with root's full powers: it may write the system, load kernel modules and change kernel settings; etcd's data is root's",
	},
	RelaxRPFilter: {
		Default: "reverse-path filtering (net.ipv4.conf.all.rp_filter = 2) drops packets whose source no route leads back to",
		GivesUp: "spoofed source addresses reach the node and its pods; set net.ipv4.conf.all.rp_filter in sysctls if your CNI documents a value",
		Sysctls: []string{"net.ipv4.conf.all.rp_filter"},
	},
	RelaxProfiling: {
		Default: "profiling (/debug/pprof) is off in kube-apiserver, kube-controller-manager and kube-scheduler",
		GivesUp: "authenticated users with access to /debug/pprof can read the services' internals and make them spend CPU",
	},
}

// Relaxed reports whether the recipe relaxes the named default.
func (r *Recipe) Relaxed(name string) bool {
	return r != nil && r.Security != nil && slices.Contains(r.Security.Relax, name)
}

// NodeSysctlRules are NodeKernelSysctls less those the recipe's relaxations free.
func (r *Recipe) NodeSysctlRules() map[string]SysctlRule {
	rules := make(map[string]SysctlRule, len(NodeKernelSysctls))
	for k, v := range NodeKernelSysctls {
		rules[k] = v
	}
	if r == nil || r.Security == nil {
		return rules
	}
	for _, name := range r.Security.Relax {
		for _, k := range Relaxations[name].Sysctls {
			delete(rules, k)
		}
	}
	return rules
}
