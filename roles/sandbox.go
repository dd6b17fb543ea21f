package roles

import (
	"fmt"
	"slices"
	"strings"
)

// The control plane's services run under a systemd sandbox: none of them needs to write the
// system, load modules, change kernel settings, gain privileges or keep capabilities, so a
// flaw in one of them cannot do those things either. etcd also runs as its own user (etcd,
// from sysusers.d) and receives its keys as systemd credentials, so its data is not root's.
// verify reads the settings back from systemd (security/sandbox/<unit>).

// Setting is one systemd [Service] setting, as written in the drop-in and as `systemctl
// show` prints it back.
type Setting struct{ Key, Value string }

// SandboxDropInName is the drop-in each sandboxed unit gets beside its role drop-in.
const SandboxDropInName = "20-sandbox.conf"

// EtcdUser owns etcd's data; EtcdSysusersPath declares it (systemd-sysusers creates it at
// first boot, and kubebake-master-pki makes sure of it before etcd starts).
const (
	EtcdUser         = "etcd"
	EtcdSysusersPath = "/usr/lib/sysusers.d/kubebake-etcd.conf"
)

// sandbox holds for every control-plane service.
var sandbox = []Setting{
	{"NoNewPrivileges", "yes"},
	{"CapabilityBoundingSet", ""},
	{"AmbientCapabilities", ""},
	{"ProtectSystem", "strict"},
	{"ProtectHome", "yes"},
	{"PrivateTmp", "yes"},
	{"PrivateDevices", "yes"},
	{"ProtectKernelTunables", "yes"},
	{"ProtectKernelModules", "yes"},
	{"ProtectKernelLogs", "yes"},
	{"ProtectControlGroups", "yes"},
	{"ProtectClock", "yes"},
	{"ProtectHostname", "yes"},
	{"RestrictSUIDSGID", "yes"},
	{"RestrictRealtime", "yes"},
	{"LockPersonality", "yes"},
	{"MemoryDenyWriteExecute", "yes"},
	{"UMask", "0077"},
}

// sandboxExtra are a unit's own settings on top of sandbox: where it may write.
var sandboxExtra = map[string][]Setting{
	// The audit log is the API server's one write outside /tmp.
	"kube-apiserver.service":          {{"LogsDirectory", "kubernetes/audit"}, {"LogsDirectoryMode", "0700"}},
	"kube-controller-manager.service": nil,
	"kube-scheduler.service":          nil,
	// etcd's data directory (StateDirectory=etcd in the unit) is its one write.
	"etcd.service": {{"User", EtcdUser}, {"Group", EtcdUser}},
}

// SandboxedUnits are the units that get a sandbox drop-in, sorted.
func SandboxedUnits() []string {
	units := make([]string, 0, len(sandboxExtra))
	for u := range sandboxExtra {
		units = append(units, u)
	}
	slices.Sort(units)
	return units
}

// Sandbox are the settings of a sandboxed unit (nil for another).
func Sandbox(unit string) []Setting {
	extra, ok := sandboxExtra[unit]
	if !ok {
		return nil
	}
	return append(slices.Clone(sandbox), extra...)
}

// SandboxDropInPath is where a unit's sandbox drop-in goes.
func SandboxDropInPath(unit string) string {
	return UnitDir + "/" + unit + ".d/" + SandboxDropInName
}

func sandboxDropIn(unit string) []byte {
	var b strings.Builder
	b.WriteString("# kubebake node layer: the service's sandbox (roles/sandbox.go); verify reads it back.\n[Service]\n")
	for _, s := range Sandbox(unit) {
		fmt.Fprintf(&b, "%s=%s\n", s.Key, s.Value)
	}
	return []byte(b.String())
}

const etcdSysusers = `# kubebake node layer: etcd runs as its own user and owns its data (/var/lib/etcd).
u etcd - "etcd, the Kubernetes control plane's store" /var/lib/etcd -
`
