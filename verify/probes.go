package verify

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
)

// Spec is what one booted node must show: it comes from the image's manifest and the
// user-data given to the node, never from a list kept here. Probes adds kubebake's invariants
// (recipes' rulebook) on top, whatever the Spec says.
type Spec struct {
	// Role is the role this node was given; Roles are every role's units, by role.
	Role  string
	Roles map[string][]string
	// UserData is "cloud-init" or "ignition".
	UserData string
	// Relaxed are the secure defaults the recipe relaxed (security.relax).
	Relaxed []string
	// LoneMinion: a node of a joining role (minion or a custom role) with no master to join;
	// its join (and the kubelet waiting for it) may be retrying, never failed.
	LoneMinion bool

	Binaries []Binary
	// Images are the container images the image bakes: each must be in containerd under its
	// name and digest where the role imports them (kubebake-images.service).
	Images   []Image
	Packages []Package
	Sysctls  map[string]string
	Modules  []string
	// Runtime is containerd or docker; StorageDriver its storage as the recipe says. The
	// storage check expects overlay (recipes.StorageDriverFor) whatever StorageDriver says.
	Runtime       string
	StorageDriver string
	// CRI is the kubelet's CRI server (recipes.CRIOf): containerd's own, or cri-dockerd.
	CRI        string
	CNIPlugins []string
	HostTools  []string

	// UserDataPaths are the files the user-data wrote; Secrets are strings from the user-data
	// (token, CA key) that must appear nowhere else on disk or in the journal.
	UserDataPaths []string
	Secrets       []string
}

// Binary is a file the image carries whose content is pinned by the lock.
type Binary struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	SHA256  string `json:"sha256"`
	Version string `json:"version,omitempty"`
	// VersionArgs, when set, print the binary's version ("--version"); the output must
	// contain Version.
	VersionArgs string `json:"versionArgs,omitempty"`
}

// Image is a baked container image as the lock pins it.
type Image struct {
	Name   string `json:"name"` // hello (the lock's image/hello)
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

// Package is a Debian package at its locked version.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// criRuntime is the runtime behind the kubelet's CRI: docker behind cri-dockerd, else
// containerd (docker beside the kubelet runs on containerd's CRI).
func (s Spec) criRuntime() string {
	if s.Runtime == recipes.RuntimeDocker && s.CRI == recipes.CRIServerDockerd {
		return recipes.RuntimeDocker
	}
	return recipes.RuntimeContainerd
}

// runsRuntime reports whether the node's role starts the container runtime (a master whose
// control plane runs as plain services does not): only then can the daemon be asked.
func (s Spec) runsRuntime() bool {
	unit := "containerd.service"
	if s.criRuntime() == recipes.RuntimeDocker {
		unit = "docker.service"
	}
	inSomeRole := false
	for r, us := range s.Roles {
		if slices.Contains(us, unit) {
			inSomeRole = true
			if r == s.Role {
				return true
			}
		}
	}
	return !inSomeRole // a shared runtime runs everywhere
}

// importsImages reports whether the node's role imports the baked images into containerd
// (kubebake-images.service runs wherever a kubelet on containerd needs them).
func (s Spec) importsImages() bool {
	return s.criRuntime() == recipes.RuntimeContainerd && slices.Contains(s.Roles[s.Role], recipes.ImagesUnit)
}

// runsKubelet reports whether the node's role starts the kubelet.
func (s Spec) runsKubelet() bool { return slices.Contains(s.Roles[s.Role], "kubelet.service") }

// sandboxedUnits are the image's units (of any role) that roles.Sandbox confines.
func (s Spec) sandboxedUnits() []string {
	var out []string
	for _, u := range roles.SandboxedUnits() {
		for _, us := range s.Roles {
			if slices.Contains(us, u) {
				out = append(out, u)
				break
			}
		}
	}
	return out
}

// The pitfall checks hold kubebake's invariants themselves, from the rulebook in recipes, and
// never take the recipe's word for them: a recipe (or a manifest) that wrongly says
// ip_forward "0", leaves out br_netfilter or asks for devicemapper still gets the check that
// the node forwards, loads the module and stores images on overlay. The recipe's own settings
// add checks; where one names the same probe as an invariant, the invariant wins.

// invariantSysctls are the sysctls every node must have: recipes.RequiredSysctls at "1", and
// recipes.NodeKernelSysctls less those the recipe relaxes (security.relax).
func (s Spec) invariantSysctls() map[string]string {
	m := map[string]string{}
	for k := range recipes.RequiredSysctls {
		m[k] = "1"
	}
	for k, rule := range s.recipeRelaxing().NodeSysctlRules() {
		m[k] = rule.Value
	}
	return m
}

// recipeRelaxing is a recipe that relaxes what the image's recipe relaxed, for recipes'
// rules that depend on it.
func (s Spec) recipeRelaxing() *recipes.Recipe {
	return &recipes.Recipe{Security: &recipes.Security{Relax: s.Relaxed}}
}

// relaxed reports whether the image's recipe relaxed the named secure default.
func (s Spec) relaxed(name string) bool { return slices.Contains(s.Relaxed, name) }

// nodeSysctls are the recipe's sysctls with the invariants over them.
func (s Spec) nodeSysctls() map[string]string {
	m := maps.Clone(s.Sysctls)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, s.invariantSysctls())
	return m
}

// nodeModules are the recipe's modules, then the required ones it lacks.
func (s Spec) nodeModules() []string {
	return union(s.Modules, sortedKeys(recipes.RequiredModules))
}

// nodeCNIPlugins are the required plugins, then the recipe's others.
func (s Spec) nodeCNIPlugins() []string { return union(recipes.RequiredCNIPlugins, s.CNIPlugins) }

// nodeHostTools are the required host tools, then any others the spec names.
func (s Spec) nodeHostTools() []string {
	return union(sortedKeys(recipes.RequiredHostTools), s.HostTools)
}

// Check refuses a Spec with a value no shell can receive (a NUL byte): the probes' scripts
// carry the Spec's values, each quoted with package shell, which panics on one. The Spec comes
// from the image's manifest and the user-data, so verify checks it before calling Probes.
func (s Spec) Check() error {
	type value struct{ what, v string }
	vals := []value{{"role", s.Role}, {"runtime", s.Runtime}, {"storage driver", s.StorageDriver}}
	for r, us := range s.Roles {
		vals = append(vals, value{"role", r})
		for _, u := range us {
			vals = append(vals, value{"unit", u})
		}
	}
	for _, b := range s.Binaries {
		vals = append(vals, value{"binary", b.Name}, value{"binary path", b.Path}, value{"binary sha256", b.SHA256},
			value{"binary version", b.Version}, value{"binary version arguments", b.VersionArgs})
	}
	for _, p := range s.Packages {
		vals = append(vals, value{"package", p.Name}, value{"package version", p.Version})
	}
	for _, img := range s.Images {
		vals = append(vals, value{"image", img.Name}, value{"image reference", img.Ref}, value{"image digest", img.Digest})
	}
	for k, v := range s.Sysctls {
		vals = append(vals, value{"sysctl", k}, value{"sysctl value", v})
	}
	for what, list := range map[string][]string{"module": s.Modules, "CNI plugin": s.CNIPlugins, "host tool": s.HostTools, "user-data path": s.UserDataPaths} {
		for _, v := range list {
			vals = append(vals, value{what, v})
		}
	}
	for _, v := range vals {
		if err := shell.Check(v.v); err != nil {
			return fmt.Errorf("%s %q: %w", v.what, v.v, err)
		}
	}
	for _, sec := range s.Secrets {
		if err := shell.Check(sec); err != nil {
			return fmt.Errorf("a user-data secret: %w", err) // never quoted
		}
	}
	return nil
}

// Probes turns a Spec into the node's checks, in report order. Every value of the Spec goes
// into the scripts through package shell; a Spec that Check refuses makes Probes panic.
func Probes(s Spec) []Probe {
	var ps []Probe
	ps = append(ps, markerProbe(s))
	switch s.UserData {
	case UserDataCloudInit:
		ps = append(ps, cloudInitProbe())
	case UserDataIgnition:
		ps = append(ps, ignitionProbe())
	}
	for _, b := range s.Binaries {
		ps = append(ps, binaryProbes(b)...)
	}
	if len(s.Packages) > 0 {
		ps = append(ps, packagesProbe(s.Packages))
	}
	sysctls := s.nodeSysctls()
	for _, k := range sortedKeys(sysctls) {
		ps = append(ps, sysctlProbe(k, sysctls[k]))
	}
	for _, name := range sortedKeys(recipes.NodeInterfaceSysctls) {
		ps = append(ps, interfaceSysctlProbe(name, recipes.NodeInterfaceSysctls[name].Value))
	}
	for _, m := range s.nodeModules() {
		ps = append(ps, moduleProbes(m)...)
	}
	if s.Runtime != "" {
		// Overlay storage whatever the spec's StorageDriver says (never devicemapper/loopback),
		// of the runtime the kubelet's CRI uses; docker beside containerd has checks of its own.
		ps = append(ps, storageProbe(s.criRuntime(), recipes.StorageDriverFor(s.criRuntime()), s.runsRuntime()))
	}
	if s.runsDocker() {
		ps = append(ps, s.dockerProbes()...)
	}
	if s.importsImages() {
		for _, img := range s.Images {
			ps = append(ps, imageProbe(img))
		}
	}
	for _, p := range s.nodeCNIPlugins() {
		ps = append(ps, cniProbe(p))
	}
	for _, t := range s.nodeHostTools() {
		ps = append(ps, toolProbe(t))
	}
	ps = append(ps, unitProbes(s)...)
	ps = append(ps, failedUnitsProbe())
	if s.Role == RoleMaster {
		ps = append(ps, readyzProbe(), auditLogProbe(), secretsEncryptedProbe(), apiAccessProbe(s.relaxed(recipes.RelaxPodSecurity)))
	}
	for _, u := range s.sandboxedUnits() {
		if s.relaxed(recipes.RelaxSandbox) {
			break
		}
		ps = append(ps, sandboxProbe(u, roles.Sandbox(u)))
		if u == "etcd.service" && slices.Contains(s.Roles[s.Role], u) {
			ps = append(ps, etcdUserProbe())
		}
	}
	if !s.LoneMinion && s.runsKubelet() {
		// A lone minion has no cluster CA and no master to sign its serving certificate.
		ps = append(ps, kubeletTLSProbe())
	}
	ps = append(ps, listenPortsProbe(s.Role), secretFileModesProbe(s.runsKubelet()))
	ps = append(ps, machineIDProbe(), hostKeysProbe(), sshdProbe(), secretsProbe(s), bootTimeProbe())
	return ps
}

// Well-known roles and user-data kinds.
const (
	RoleMaster = "master"
	RoleMinion = "minion"

	UserDataCloudInit = "cloud-init"
	UserDataIgnition  = "ignition"
)

func markerProbe(s Spec) Probe {
	roles := sortedKeys(s.Roles)
	if !slices.Contains(roles, s.Role) {
		roles = append(roles, s.Role)
	}
	var sb strings.Builder
	for _, r := range roles {
		// printf, not echo: echo may read backslashes in the name as escapes.
		fmt.Fprintf(&sb, "if [ -e %s ]; then printf '%%s=present\\n' %[2]s; else printf '%%s=absent\\n' %[2]s; fi\n", shell.Quote(recipes.MarkerPath(r)), shell.Quote(r))
	}
	return Probe{
		Name:     "role/marker",
		Expected: recipes.MarkerPath(s.Role) + " only",
		Script:   sb.String(),
		Eval: func(o Output) (string, bool) {
			kv := o.KV()
			var present []string
			for _, r := range roles {
				if kv[r] == "present" {
					present = append(present, "kubernetes-"+r)
				}
			}
			if len(present) == 0 {
				return "no role marker", false
			}
			return strings.Join(present, ", "), len(present) == 1 && present[0] == "kubernetes-"+s.Role
		},
	}
}

// cloudInitProbe reads cloud-init's result file rather than running `cloud-init status`:
// a Python start costs ~10 s under TCG.
func cloudInitProbe() Probe {
	return Probe{
		Name:     "userdata/cloud-init",
		Expected: "finished with no errors (NoCloud seed)",
		Script:   "cat /run/cloud-init/result.json 2>/dev/null || echo '{\"missing\": true}'",
		Units:    []string{"cloud-init-local.service", "cloud-init.service", "cloud-config.service", "cloud-final.service"},
		Eval: func(o Output) (string, bool) {
			var res struct {
				Missing bool `json:"missing"`
				V1      struct {
					Datasource string `json:"datasource"`
					Errors     []any  `json:"errors"`
				} `json:"v1"`
			}
			if err := json.Unmarshal([]byte(o.Text), &res); err != nil {
				return "unreadable /run/cloud-init/result.json: " + firstLineOf(o.Text), false
			}
			if res.Missing {
				return "not finished (no /run/cloud-init/result.json)", false
			}
			if len(res.V1.Errors) > 0 {
				var errs []string
				for _, e := range res.V1.Errors {
					errs = append(errs, strings.Join(strings.Fields(fmt.Sprint(e)), " "))
				}
				return "errors: " + strings.Join(errs, "; "), false
			}
			return "done, " + orNone(res.V1.Datasource), true
		},
	}
}

func ignitionProbe() Probe {
	return Probe{
		Name:     "userdata/ignition",
		Expected: "kubebake-ignition.service ran and succeeded",
		Script:   "systemctl show -p ActiveState -p SubState -p Result -p ExecMainStatus -p ConditionResult kubebake-ignition.service; test -e /var/lib/kubebake/ignition.done && echo stamp=yes || echo stamp=no",
		Units:    []string{"kubebake-ignition.service"},
		Eval: func(o Output) (string, bool) {
			kv := o.KV()
			got := fmt.Sprintf("%s/%s result=%s status=%s stamp=%s", kv["ActiveState"], kv["SubState"], kv["Result"], kv["ExecMainStatus"], kv["stamp"])
			ok := kv["Result"] == "success" && kv["ExecMainStatus"] == "0" && kv["ConditionResult"] == "yes" &&
				(kv["ActiveState"] == "active" || kv["ActiveState"] == "inactive") && kv["stamp"] == "yes"
			return got, ok
		},
	}
}

func binaryProbes(b Binary) []Probe {
	ps := []Probe{{
		Static:   true,
		Name:     "binary/" + b.Name + "/sha256",
		Expected: b.SHA256,
		Script:   "sha256sum " + shell.Quote(b.Path),
		Eval: func(o Output) (string, bool) {
			if o.Exit != 0 {
				return "missing: " + firstLineOf(o.Text), false
			}
			f := strings.Fields(o.Text)
			if len(f) == 0 {
				return "no output", false
			}
			return f[0], strings.EqualFold(f[0], b.SHA256)
		},
	}}
	if b.Version != "" && b.VersionArgs != "" {
		want := strings.TrimPrefix(b.Version, "v")
		ps = append(ps, Probe{
			Static:   true,
			Name:     "binary/" + b.Name + "/version",
			Expected: b.Version,
			Script:   shell.Join(append([]string{"timeout", "300", b.Path}, strings.Fields(b.VersionArgs)...)...),
			Eval: func(o Output) (string, bool) {
				got := firstLineOf(o.Text)
				if o.Exit == 124 {
					return "timed out after 300s (guest too slow or binary hangs)", false
				}
				if o.Exit != 0 {
					return fmt.Sprintf("exit %d: %s", o.Exit, got), false
				}
				return got, versionIn(o.Text, want)
			},
		})
	}
	return ps
}

// versionIn reports whether text carries version want as a whole token (1.35.4 is not found
// in 1.35.40).
func versionIn(text, want string) bool {
	re := regexp.MustCompile(`(^|[^0-9.])v?` + regexp.QuoteMeta(want) + `($|[^0-9.])`)
	return re.MatchString(text)
}

func packagesProbe(pkgs []Package) Probe {
	names := make([]string, 0, len(pkgs))
	for _, p := range pkgs {
		names = append(names, shell.Quote(p.Name))
	}
	return Probe{
		Static:   true,
		Name:     "packages/versions",
		Expected: fmt.Sprintf("%d packages at their locked versions", len(pkgs)),
		Script:   "dpkg-query -W -f '${Package}=${Version} ${db:Status-Status}\\n' " + strings.Join(names, " ") + " 2>&1",
		Eval: func(o Output) (string, bool) {
			got := map[string]string{}
			for _, l := range o.Lines() {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					continue
				}
				ver, status, _ := strings.Cut(v, " ")
				if status != "installed" {
					ver = "not installed"
				}
				got[k] = ver
			}
			var bad []string
			for _, p := range pkgs {
				if g := got[p.Name]; g != p.Version {
					if g == "" {
						g = "missing"
					}
					bad = append(bad, fmt.Sprintf("%s %s (want %s)", p.Name, g, p.Version))
				}
			}
			if len(bad) > 0 {
				return strings.Join(bad, "; "), false
			}
			return fmt.Sprintf("%d packages match", len(pkgs)), true
		},
	}
}

// sysctlDirs are where systemd-sysctl reads drop-ins, in precedence order.
var sysctlDirs = []string{"/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d"}

func sysctlProbe(key, want string) Probe {
	slash := strings.ReplaceAll(key, ".", "/")
	re := `^[[:space:]]*-?(` + regexp.QuoteMeta(key) + `|` + regexp.QuoteMeta(slash) + `)[[:space:]]*=`
	return Probe{
		Name:     "sysctl/" + key,
		Expected: normalizeSpace(want) + " (from /usr/lib/sysctl.d)",
		Script: fmt.Sprintf("printf 'runtime=%%s\\n' \"$(sysctl -n %s 2>&1 | tr '\\t' ' ')\"\ngrep -HE %s %s /etc/sysctl.conf 2>/dev/null | sed 's/^/def=/'\ntrue",
			shell.Quote(key), shell.Quote(re), strings.Join(globs(sysctlDirs, "*.conf"), " ")),
		Units: []string{"systemd-sysctl.service"},
		Eval: func(o Output) (string, bool) {
			var runtime string
			var defs []string // "file=value"
			for _, l := range o.Lines() {
				if v, ok := strings.CutPrefix(l, "runtime="); ok {
					runtime = normalizeSpace(v)
				}
				if v, ok := strings.CutPrefix(l, "def="); ok {
					file, rest, _ := strings.Cut(v, ":")
					_, val, _ := strings.Cut(rest, "=")
					defs = append(defs, file+"="+normalizeSpace(val))
				}
			}
			w := normalizeSpace(want)
			var fromUsr string
			for _, d := range defs {
				f, v, _ := strings.Cut(d, "=")
				if strings.HasPrefix(f, "/usr/lib/sysctl.d/") && v == w {
					fromUsr = f
				}
			}
			got := orNone(runtime)
			if fromUsr != "" {
				got += " (from " + fromUsr + ")"
			} else {
				got += " (not set to " + w + " in /usr/lib/sysctl.d)"
			}
			return got, runtime == w && fromUsr != ""
		},
	}
}

// interfaceSysctlProbe checks net.ipv4.conf.<interface>.NAME on every interface the node has
// when the checks run (the pod bridge and veths included), and that the setting comes from
// the node layer's glob line in /usr/lib/sysctl.d.
func interfaceSysctlProbe(name, want string) Probe {
	glob := recipes.InterfaceSysctlGlob(name)
	re := `^[[:space:]]*-?` + regexp.QuoteMeta(glob) + `[[:space:]]*=`
	return Probe{
		Name:     "sysctl/" + glob,
		Expected: want + " on every interface (from /usr/lib/sysctl.d)",
		Script: fmt.Sprintf("for f in /proc/sys/net/ipv4/conf/*/%s; do d=${f%%/*}; printf 'if_%%s=%%s\n' \"${d##*/}\" \"$(cat \"$f\")\"; done\ngrep -lE %s /usr/lib/sysctl.d/*.conf 2>/dev/null | sed 's/^/def=/'\ntrue",
			shell.Quote(name), shell.Quote(re)),
		Units: []string{"systemd-sysctl.service"},
		Eval:  func(o Output) (string, bool) { return judgeInterfaceSysctl(o.Lines(), want) },
	}
}

// judgeInterfaceSysctl reads interfaceSysctlProbe's "if_NAME=VALUE" and "def=FILE" lines.
func judgeInterfaceSysctl(lines []string, want string) (string, bool) {
	var bad, seen []string
	def := ""
	for _, l := range lines {
		if f, ok := strings.CutPrefix(l, "def="); ok {
			def = f
			continue
		}
		kv, ok := strings.CutPrefix(l, "if_")
		if !ok {
			continue
		}
		iface, v, _ := strings.Cut(kv, "=")
		seen = append(seen, iface)
		if strings.TrimSpace(v) != want {
			bad = append(bad, iface+"="+orNone(strings.TrimSpace(v)))
		}
	}
	switch {
	case len(seen) == 0:
		return "no interface read", false
	case len(bad) > 0:
		return "not " + want + " on " + strings.Join(bad, ", "), false
	case def == "":
		return want + " on " + strings.Join(seen, ", ") + ", but not set in /usr/lib/sysctl.d", false
	}
	return fmt.Sprintf("%s on %s (from %s)", want, strings.Join(seen, ", "), def), true
}

func bootTimeProbe() Probe {
	return Probe{
		Name:     "info/first-boot-time",
		Expected: "reported",
		// systemd-analyze answers only once no start job is left: a lone minion's join waits
		// forever, so fall back to when multi-user.target was reached.
		Script: `systemd-analyze 2>/dev/null | head -n 1 | grep . ||
echo "multi-user.target reached $(systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target | awk '{printf "%.1fs", $1/1e6}') after kernel start (boot still has jobs waiting)"`,
		Info: true,
		Eval: func(o Output) (string, bool) {
			return firstLineOf(o.Text), true
		},
	}
}

func firstLineOf(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 200 {
				l = l[:197] + "..."
			}
			return l
		}
	}
	return "(no output)"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func normalizeSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

func globs(dirs []string, pat string) []string {
	out := make([]string, len(dirs))
	for i, d := range dirs {
		out[i] = d + "/" + pat
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func union(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range append(slices.Clone(a), b...) {
		if x != "" && !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
