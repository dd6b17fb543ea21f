package roles

import (
	"fmt"
	"github.com/kubebake/kubebake/manifest"
	"sort"
	"strings"

	"github.com/kubebake/kubebake/recipes"
)

// Unit names kubebake itself defines (not role units); the unit catalog is recipes.Units.
const (
	RolesTarget   = recipes.RolesTarget
	IgnitionUnit  = recipes.IgnitionUnit
	MasterPKIUnit = recipes.MasterPKIUnit
	// SSHKeygenUnit makes the SSH host keys the image leaves out when cloud-init did not
	// (a boot configured by Ignition alone); Debian's ssh.service does not make them.
	SSHKeygenUnit = recipes.SSHKeygenUnit
	// GrowRootUnit grows the root partition to the disk when cloud-init did not.
	GrowRootUnit = recipes.GrowRootUnit
	// NodeEnvUnit works out the node's address and kubelet flags; ImagesUnit imports the
	// baked container images into containerd.
	NodeEnvUnit = recipes.NodeEnvUnit
	ImagesUnit  = recipes.ImagesUnit
	// FlannelUnit is the pod network agent, in the catalog when the recipe has a podNetwork.
	FlannelUnit    = recipes.FlannelUnit
	UnitDir        = "/usr/lib/systemd/system"
	EnableDir      = "/etc/systemd/system"
	RoleDropInName = "10-role.conf"
)

// Unit is one systemd unit of the node layer and what starts it. It is the manifest's type:
// the manifest lists the layer's units as they are.
type Unit = manifest.Unit

// DropInPath is the role drop-in of a unit.
func DropInPath(unit string) string { return UnitDir + "/" + unit + ".d/" + RoleDropInName }

// unitPlan is the validated role assignment of a recipe.
type unitPlan struct {
	defs  map[string]recipes.UnitDef
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
	if rt := r.Runtime.Name; rt != "" && rt != recipes.RuntimeContainerd && rt != recipes.RuntimeDocker {
		return nil, fieldErr(r, "runtime.name", fmt.Sprintf("unknown runtime %q; use containerd or docker", rt))
	}
	setup := recipes.SetupOf(r.Runtime)
	defs := map[string]recipes.UnitDef{}
	var listable []string
	for _, d := range recipes.Units(setup, r.PodNetwork != nil) {
		defs[d.Name] = d
		if d.Listable {
			listable = append(listable, d.Name)
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
		if err := recipes.CheckRoleName(role.Name); err != nil {
			return nil, fieldErr(r, field, fmt.Sprintf("%v (it names the marker %s)", err, recipes.MarkerPath("<role>")))
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
			if !ok || !d.Listable {
				return nil, fieldErr(r, field, unknownUnitMsg(name, setup, listable))
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
			for _, need := range d.Needs {
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
		u := Unit{Name: name, Foreign: d.Foreign, Listed: len(listedBy[name]) > 0}
		for role := range roles[name] {
			u.Roles = append(u.Roles, role)
		}
		sort.Slice(u.Roles, func(i, j int) bool { return roleIndex(r, u.Roles[i]) < roleIndex(r, u.Roles[j]) })
		switch {
		case u.Listed:
			u.Enabled = true
		case name == RolesTarget || name == IgnitionUnit || name == SSHKeygenUnit || name == GrowRootUnit:
			u.Enabled = true
		case name == recipes.DockerImagesUnit && len(u.Roles) > 0:
			// Nothing else pulls it in: docker.service is Debian's.
			u.Enabled = true
		}
		if d.Foreign && len(u.Roles) == 0 {
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

func unknownUnitMsg(name, setup string, listable []string) string {
	if others := recipes.SetupsOfUnit(name); len(others) > 0 {
		return fmt.Sprintf("unit %s belongs to runtime %s, but this recipe's runtime is %s", name, strings.Join(others, " or "), recipes.DescribeSetup(setup))
	}
	msg := fmt.Sprintf("unknown unit %q; a role may list: %s", name, strings.Join(listable, ", "))
	if err := recipes.CheckUnitName(name); err != nil {
		msg = err.Error() + "; a role may list: " + strings.Join(listable, ", ")
	}
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
