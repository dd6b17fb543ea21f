package roles

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/kubebake/kubebake/recipes"
)

// Unit names kubebake itself defines (not role units).
const (
	RolesTarget   = "kubebake-roles.target"
	IgnitionUnit  = "kubebake-ignition.service"
	MasterPKIUnit = "kubebake-master-pki.service"
	// SSHKeygenUnit makes the SSH host keys the image leaves out when cloud-init did not
	// (a boot configured by Ignition alone); Debian's ssh.service does not make them.
	SSHKeygenUnit = "kubebake-ssh-keygen.service"
	// GrowRootUnit grows the root partition to the disk when cloud-init did not.
	GrowRootUnit = "kubebake-growroot.service"
	// NodeEnvUnit works out the node's address and kubelet flags; ImagesUnit imports the
	// baked container images into containerd.
	NodeEnvUnit = "kubebake-node-env.service"
	ImagesUnit  = "kubebake-images.service"
	// FlannelUnit is the pod network agent, in the catalog when the recipe has a podNetwork.
	FlannelUnit    = recipes.FlannelUnit
	UnitDir        = "/usr/lib/systemd/system"
	EnableDir      = "/etc/systemd/system"
	RoleDropInName = "10-role.conf"
)

// Unit is one systemd unit of the node layer and what starts it.
type Unit struct {
	Name string `json:"name"`
	// Roles whose marker lets the unit start (its role drop-in); empty for shared units.
	// A unit gets the roles that list it and the roles of every unit that needs it (a
	// dependency such as kubebake-master-pki.service runs wherever its dependents may).
	Roles []string `json:"roles,omitempty"`
	// Foreign units come from a Debian package (containerd.service): the layer carries only
	// their role drop-in and enablement link.
	Foreign bool `json:"foreign,omitempty"`
	// Enabled units are pulled in at boot by a link in the layer: role units by
	// kubebake-roles.target, shared units by multi-user.target.
	Enabled bool `json:"enabled"`
	// Listed is true for units a recipe role names (as opposed to dependencies).
	Listed bool `json:"listed,omitempty"`
}

// DropInPath is the role drop-in of a unit.
func DropInPath(unit string) string { return UnitDir + "/" + unit + ".d/" + RoleDropInName }

// unitDef is one unit kubebake knows how to run.
type unitDef struct {
	name    string
	foreign bool
	// runtime limits the unit to one container runtime ("" for any).
	runtime string
	// bins are the node binaries (lock artifact names) its ExecStart needs.
	bins []string
	// needs are units that must run on the same node (Requires= or Wants= in the unit).
	needs []string
	// listable units may appear in a recipe role; others are dependencies or shared.
	listable bool
}

// catalog is every unit the layer may hold for a runtime, and with a pod network agent or
// not. roles in a recipe may list the listable ones (recipes.KnownUnits is the same set, for
// lint).
func catalog(runtime string, podNetwork bool) []unitDef {
	defs := []unitDef{
		{name: "etcd.service", bins: []string{"etcd"}, needs: []string{MasterPKIUnit}, listable: true},
		{name: "kube-apiserver.service", bins: []string{"kube-apiserver"}, needs: []string{MasterPKIUnit, "etcd.service"}, listable: true},
		{name: "kube-controller-manager.service", bins: []string{"kube-controller-manager"}, needs: []string{MasterPKIUnit}, listable: true},
		{name: "kube-scheduler.service", bins: []string{"kube-scheduler"}, needs: []string{MasterPKIUnit}, listable: true},
		{name: "kubebake-master-bootstrap.service", bins: []string{"kubeadm", "kubectl"}, needs: []string{MasterPKIUnit, "kube-apiserver.service"}, listable: true},
		{name: MasterPKIUnit, bins: []string{"kubeadm"}},
		{name: "kubelet.service", bins: []string{"kubelet"}, needs: kubeletNeeds(runtime), listable: true},
		{name: "kube-proxy.service", bins: []string{"kube-proxy"}, needs: []string{"kubelet.service"}, listable: true},
		{name: "kubebake-minion-join.service", listable: true},
		{name: FlannelUnit, bins: []string{"flanneld"}, needs: []string{"kubelet.service", NodeEnvUnit}, listable: true},
		{name: NodeEnvUnit},
		{name: ImagesUnit, runtime: recipes.RuntimeContainerd, needs: []string{"containerd.service"}},
		{name: "containerd.service", foreign: true, runtime: recipes.RuntimeContainerd, listable: true},
		{name: "docker.service", foreign: true, runtime: recipes.RuntimeDocker, listable: true},
		{name: "cri-docker.service", runtime: recipes.RuntimeDocker, bins: []string{"cri-dockerd"}, needs: []string{"docker.service"}, listable: true},
		{name: IgnitionUnit},
		{name: RolesTarget},
		{name: SSHKeygenUnit},
		{name: GrowRootUnit},
	}
	var out []unitDef
	for _, d := range defs {
		if d.name == FlannelUnit && !podNetwork {
			continue
		}
		if d.runtime == "" || d.runtime == runtime {
			out = append(out, d)
		}
	}
	return out
}

// kubeletNeeds: the join (or the master's own credentials), the node's address, the CRI, and
// under containerd the baked images.
func kubeletNeeds(runtime string) []string {
	needs := []string{"kubebake-minion-join.service", NodeEnvUnit, runtimeService(runtime)}
	if runtime == recipes.RuntimeContainerd {
		needs = append(needs, ImagesUnit)
	}
	return needs
}

func runtimeService(runtime string) string {
	if runtime == recipes.RuntimeDocker {
		return "cri-docker.service"
	}
	return "containerd.service"
}

var roleNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// unitPlan is the validated role assignment of a recipe.
type unitPlan struct {
	defs  map[string]unitDef
	units []Unit // sorted by name
}

func (p *unitPlan) unit(name string) (Unit, bool) {
	for _, u := range p.units {
		if u.Name == name {
			return u, true
		}
	}
	return Unit{}, false
}

// Units are the systemd units a recipe's layer holds, sorted by name, with the roles that
// start each. Errors name the recipe field at fault.
func Units(r *recipes.Recipe) ([]Unit, error) {
	p, err := planUnits(r)
	if err != nil {
		return nil, err
	}
	return p.units, nil
}

// LookupRole returns the recipe's role called name, or an error listing the roles there are.
func LookupRole(r *recipes.Recipe, name string) (recipes.Role, error) {
	var names []string
	for _, role := range r.Roles {
		if role.Name == name {
			return role, nil
		}
		names = append(names, role.Name)
	}
	return recipes.Role{}, fmt.Errorf("recipe %s has no role %q; its roles (field roles) are: %s", recipeName(r), name, strings.Join(names, ", "))
}

func planUnits(r *recipes.Recipe) (*unitPlan, error) {
	runtime := r.Runtime.Name
	if runtime == "" {
		runtime = recipes.RuntimeContainerd
	}
	if runtime != recipes.RuntimeContainerd && runtime != recipes.RuntimeDocker {
		return nil, fieldErr(r, "runtime.name", fmt.Sprintf("unknown runtime %q; use containerd or docker", runtime))
	}
	defs := map[string]unitDef{}
	var listable []string
	for _, d := range catalog(runtime, r.PodNetwork != nil) {
		defs[d.name] = d
		if d.listable {
			listable = append(listable, d.name)
		}
	}
	sort.Strings(listable)

	if len(r.Roles) == 0 {
		return nil, fieldErr(r, "roles", "no roles: a node image needs at least one role (master, minion)")
	}
	listedBy := map[string][]string{} // unit -> roles listing it
	seenRole := map[string]bool{}
	for i, role := range r.Roles {
		field := fmt.Sprintf("roles[%d].name", i)
		if !roleNameRE.MatchString(role.Name) {
			return nil, fieldErr(r, field, fmt.Sprintf("role name %q is not a valid marker file name; use lowercase letters, digits and '-' (marker %s)", role.Name, recipes.MarkerPath("<name>")))
		}
		if seenRole[role.Name] {
			return nil, fieldErr(r, field, fmt.Sprintf("role %q is defined twice", role.Name))
		}
		seenRole[role.Name] = true
		if len(role.Units) == 0 {
			return nil, fieldErr(r, fmt.Sprintf("roles[%d].units", i), fmt.Sprintf("role %q has no units", role.Name))
		}
		seenUnit := map[string]bool{}
		for j, name := range role.Units {
			field := fmt.Sprintf("roles[%d].units[%d]", i, j)
			d, ok := defs[name]
			if !ok || !d.listable {
				return nil, fieldErr(r, field, unknownUnitMsg(name, runtime, listable))
			}
			if seenUnit[name] {
				return nil, fieldErr(r, field, fmt.Sprintf("unit %s is listed twice in role %q", name, role.Name))
			}
			seenUnit[name] = true
			listedBy[name] = append(listedBy[name], role.Name)
		}
	}

	// Effective roles: a unit runs on the roles that list it and on those of every unit that
	// needs it, to a fixed point (the dependency graph is small and acyclic).
	roles := map[string]map[string]bool{}
	for u, rs := range listedBy {
		roles[u] = map[string]bool{}
		for _, r := range rs {
			roles[u][r] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for name, d := range defs {
			for _, need := range d.needs {
				for role := range roles[name] {
					if roles[need] == nil {
						roles[need] = map[string]bool{}
					}
					if !roles[need][role] {
						roles[need][role] = true
						changed = true
					}
				}
			}
		}
	}

	p := &unitPlan{defs: defs}
	for name, d := range defs {
		u := Unit{Name: name, Foreign: d.foreign, Listed: len(listedBy[name]) > 0}
		for role := range roles[name] {
			u.Roles = append(u.Roles, role)
		}
		sort.Slice(u.Roles, func(i, j int) bool { return roleIndex(r, u.Roles[i]) < roleIndex(r, u.Roles[j]) })
		switch {
		case u.Listed:
			u.Enabled = true
		case name == RolesTarget || name == IgnitionUnit || name == SSHKeygenUnit || name == GrowRootUnit:
			u.Enabled = true
		}
		if d.foreign && len(u.Roles) == 0 {
			continue // a Debian unit no role uses: the layer has nothing to say about it
		}
		p.units = append(p.units, u)
	}
	sort.Slice(p.units, func(i, j int) bool { return p.units[i].Name < p.units[j].Name })
	return p, nil
}

func roleIndex(r *recipes.Recipe, name string) int {
	for i, role := range r.Roles {
		if role.Name == name {
			return i
		}
	}
	return len(r.Roles)
}

func unknownUnitMsg(name, runtime string, listable []string) string {
	for _, other := range []string{recipes.RuntimeContainerd, recipes.RuntimeDocker} {
		if other == runtime {
			continue
		}
		for _, d := range catalog(other, true) {
			if d.name == name && d.runtime == other {
				return fmt.Sprintf("unit %s belongs to runtime %s, but runtime.name is %s", name, other, runtime)
			}
		}
	}
	msg := fmt.Sprintf("unknown unit %q; a role may list: %s", name, strings.Join(listable, ", "))
	if !strings.Contains(name, ".") {
		for _, l := range listable {
			if l == name+".service" {
				msg = fmt.Sprintf("unknown unit %q; did you mean %q?", name, l)
			}
		}
	}
	return msg
}

func recipeName(r *recipes.Recipe) string {
	if r.Name != "" {
		return r.Name
	}
	return "(unnamed)"
}

// fieldErr is an error about one recipe field: file:line:col when the recipe came from YAML.
func fieldErr(r *recipes.Recipe, field, msg string) error {
	where := "recipe " + recipeName(r)
	if r.File != "" {
		where = r.File
		if p := r.Positions.Of(field); !p.IsZero() {
			where += ":" + p.String()
		}
	}
	return fmt.Errorf("%s: %s: %s", where, field, msg)
}
