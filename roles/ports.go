package roles

import (
	"fmt"
	"slices"

	"github.com/kubebake/kubebake/recipes"
)

// SuperAdminKubeconfig is kubeadm's break-glass kubeconfig (group system:masters, past any
// RBAC rule). The master holds it only until its first bootstrap has bound admin.conf's
// group to cluster-admin; kubebake-master-bootstrap deletes it then.
const SuperAdminKubeconfig = "/etc/kubernetes/super-admin.conf"

// Port is a socket a node listens on at an address other than loopback.
type Port struct {
	Proto string // "tcp" or "udp", as ss prints it
	Port  int
	Owner string // what listens, for the docs and the check's report
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Proto, p.Port) }

// nodePorts are what every node of the image listens on off loopback; everything else
// (etcd, the controller manager, the scheduler, kubelet healthz, kube-proxy's health and
// metrics, containerd's stream server, the DNS stub) binds to loopback. docs/security.md
// keeps the same table.
var nodePorts = []Port{
	{"tcp", 22, "sshd (keys only)"},
	{"tcp", 10250, "kubelet API (client certificates; serving certificate from the cluster CA)"},
	{"udp", 68, "DHCP client (systemd-networkd), on the leased address"},
	{"udp", 8472, "flannel VXLAN, pod traffic between nodes (a kernel socket: ss does not list it)"},
}

// masterPorts are the master's on top of nodePorts.
var masterPorts = []Port{
	{"tcp", 6443, "kube-apiserver"},
}

// ListeningPorts are the sockets a node of this role may listen on at an address other than
// loopback (verify's security/listen-ports).
func ListeningPorts(role string) []Port {
	ports := slices.Clone(nodePorts)
	if role == recipes.RoleMaster {
		ports = append(ports, masterPorts...)
	}
	return ports
}
