package ignition

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/vincent-petithory/dataurl"
)

// maxFileSize bounds one decoded file; a first-boot config has no business with more.
const maxFileSize = 64 << 20

// SystemdUnitDir is where units from the config are written, as Ignition does.
const SystemdUnitDir = "/etc/systemd/system"

// unitSearchPath is where an enabled unit without contents is looked for, in systemd's order.
var unitSearchPath = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

type nodeKind int

const (
	kindDir nodeKind = iota
	kindFile
	kindSymlink
	kindHardlink
)

func (k nodeKind) String() string {
	return [...]string{"directory", "file", "symlink", "hard link"}[k]
}

// owner is a node's user and group as the config gives them: an id or a name (resolved when
// applied, after the config's users and groups exist).
type owner struct {
	uid, gid     *int
	uname, gname *string
}

func ownerOf(n types.Node) owner {
	return owner{uid: n.User.ID, gid: n.Group.ID, uname: n.User.Name, gname: n.Group.Name}
}

type nodeOp struct {
	kind      nodeKind
	path      string // in the config (absolute, clean)
	mode      *fs.FileMode
	owner     owner
	overwrite bool
	// files
	contents    []byte // nil: no contents.source
	hasContents bool
	appends     [][]byte
	keepMode    bool // no mode given and an existing file is kept: keep its mode
	// links
	target string
}

type unitOp struct {
	name     string
	contents *string
	dropins  []types.Dropin
	mask     *bool
	enabled  *bool
	// unitFile is the unit's file on the node (for enablement links); install its [Install].
	unitFile string
	install  installInfo
}

type installInfo struct {
	wantedBy, requiredBy, alias []string
}

type userOp struct {
	u      types.PasswdUser
	exists bool
}

// Plan is a checked config, ready to apply under a root.
type Plan struct {
	root   rootFS
	groups []types.PasswdGroup
	users  []userOp
	nodes  []nodeOp
	units  []unitOp
}

// Summary counts what the plan does, for logs and dry runs.
func (p *Plan) Summary() string {
	var d, f, l int
	for _, n := range p.nodes {
		switch n.kind {
		case kindDir:
			d++
		case kindFile:
			f++
		default:
			l++
		}
	}
	return fmt.Sprintf("%d groups, %d users, %d directories, %d files, %d links, %d units", len(p.groups), len(p.users), d, f, l, len(p.units))
}

// Paths lists every node the plan writes (not units or users), in apply order.
func (p *Plan) Paths() []string {
	out := make([]string, len(p.nodes))
	for i, n := range p.nodes {
		out[i] = n.path
	}
	return out
}

var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,31}$`)

// NewPlan checks cfg against the root folder and returns what applying it would do. Every
// error is found here, before anything is written: unsupported sections, undecodable or
// mismatching contents, nodes that would need overwriting without overwrite, unknown owners,
// groups and unit files.
func NewPlan(cfg Config, root string) (*Plan, error) {
	if err := CheckSupported(cfg); err != nil {
		return nil, err
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("root %s is not a directory", root)
	}
	p := &Plan{root: rootFS{root: root}}
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

	passwd, err := p.root.readPasswd()
	if err != nil {
		return nil, fmt.Errorf("reading the root's /etc/passwd: %w", err)
	}
	group, err := p.root.readGroup()
	if err != nil {
		return nil, fmt.Errorf("reading the root's /etc/group: %w", err)
	}
	users := map[string]bool{}
	groups := map[string]bool{}
	for n := range passwd {
		users[n] = true
	}
	for n := range group {
		groups[n] = true
	}

	// passwd
	for i, g := range cfg.Passwd.Groups {
		if !nameRE.MatchString(g.Name) {
			bad("passwd.groups.%d: %q is not a valid group name", i, g.Name)
			continue
		}
		p.groups = append(p.groups, g)
		groups[g.Name] = true
	}
	for i, u := range cfg.Passwd.Users {
		if !nameRE.MatchString(u.Name) {
			bad("passwd.users.%d: %q is not a valid user name", i, u.Name)
			continue
		}
		users[u.Name] = true
		if u.NoUserGroup == nil || !*u.NoUserGroup {
			groups[u.Name] = true // useradd's user group
		}
	}
	for i, u := range cfg.Passwd.Users {
		if !nameRE.MatchString(u.Name) {
			continue
		}
		if u.PrimaryGroup != nil && !groups[*u.PrimaryGroup] {
			bad("passwd.users.%d (%s): primaryGroup %q does not exist on the node nor in passwd.groups", i, u.Name, *u.PrimaryGroup)
		}
		for _, g := range u.Groups {
			if !groups[string(g)] {
				bad("passwd.users.%d (%s): group %q does not exist on the node nor in passwd.groups", i, u.Name, g)
			}
		}
		for _, k := range u.SSHAuthorizedKeys {
			if strings.ContainsAny(string(k), "\n\r") {
				bad("passwd.users.%d (%s): an SSH key spans several lines", i, u.Name)
			}
		}
		for _, s := range []*string{u.Shell, u.HomeDir, u.Gecos} {
			if s != nil && strings.ContainsAny(*s, ":\n") {
				bad("passwd.users.%d (%s): shell, homeDir and gecos cannot contain ':' or newlines", i, u.Name)
			}
		}
		if u.PasswordHash != nil && strings.ContainsAny(*u.PasswordHash, ":\n") {
			bad("passwd.users.%d (%s): passwordHash cannot contain ':' or newlines", i, u.Name)
		}
		_, exists := passwd[u.Name]
		p.users = append(p.users, userOp{u: u, exists: exists})
	}
	checkOwner := func(what string, o owner) {
		if o.uname != nil && !users[*o.uname] {
			bad("%s: user %q does not exist on the node nor in passwd.users", what, *o.uname)
		}
		if o.gname != nil && !groups[*o.gname] {
			bad("%s: group %q does not exist on the node nor in passwd.groups", what, *o.gname)
		}
	}

	// storage
	planned := map[string]nodeKind{}
	for i, d := range cfg.Storage.Directories {
		what := fmt.Sprintf("storage.directories.%d (%s)", i, d.Path)
		n := nodeOp{kind: kindDir, path: path.Clean(d.Path), owner: ownerOf(d.Node), overwrite: isTrue(d.Overwrite), mode: dirMode(d.Mode)}
		checkOwner(what, n.owner)
		if err := p.checkExisting(&n, planned); err != nil {
			bad("%s: %v", what, err)
		}
		planned[n.path] = kindDir
		p.nodes = append(p.nodes, n)
	}
	for i, f := range cfg.Storage.Files {
		what := fmt.Sprintf("storage.files.%d (%s)", i, f.Path)
		n := nodeOp{kind: kindFile, path: path.Clean(f.Path), owner: ownerOf(f.Node), overwrite: isTrue(f.Overwrite)}
		if f.Mode != nil {
			m := fileMode(*f.Mode)
			n.mode = &m
		}
		checkOwner(what, n.owner)
		if f.Contents.Source != nil {
			data, err := decodeResource(f.Contents)
			if err != nil {
				bad("%s contents: %v", what, err)
			}
			n.contents, n.hasContents = data, true
		}
		for j, a := range f.Append {
			data, err := decodeResource(a)
			if err != nil {
				bad("%s append.%d: %v", what, j, err)
			}
			n.appends = append(n.appends, data)
		}
		if err := p.checkExisting(&n, planned); err != nil {
			bad("%s: %v", what, err)
		}
		planned[n.path] = kindFile
		p.nodes = append(p.nodes, n)
	}
	var hardlinks []nodeOp
	for i, l := range cfg.Storage.Links {
		what := fmt.Sprintf("storage.links.%d (%s)", i, l.Path)
		n := nodeOp{kind: kindSymlink, path: path.Clean(l.Path), owner: ownerOf(l.Node), overwrite: isTrue(l.Overwrite)}
		if l.Target == nil || *l.Target == "" {
			bad("%s: no target", what)
			continue
		}
		n.target = *l.Target
		checkOwner(what, n.owner)
		if isTrue(l.Hard) {
			n.kind = kindHardlink
			n.target = path.Clean(n.target)
			if !path.IsAbs(n.target) {
				bad("%s: a hard link target must be an absolute path", what)
			} else if k, ok := planned[n.target]; ok && k != kindFile {
				bad("%s: hard link target %s is a %s in this config, not a file", what, n.target, k)
			} else if !ok {
				if _, st, err := p.root.lstat(n.target); err != nil {
					bad("%s: hard link target %s does not exist on the node nor in this config", what, n.target)
				} else if st.IsDir() {
					bad("%s: hard link target %s is a directory", what, n.target)
				}
			}
		}
		if err := p.checkExisting(&n, planned); err != nil {
			bad("%s: %v", what, err)
		}
		planned[n.path] = n.kind
		if n.kind == kindHardlink {
			hardlinks = append(hardlinks, n)
		} else {
			p.nodes = append(p.nodes, n)
		}
	}
	// Shallow paths first, so that a folder exists (with its mode and owner) before what goes
	// in it; hard links last, as Ignition does, so their targets exist.
	sort.SliceStable(p.nodes, func(i, j int) bool { return depth(p.nodes[i].path) < depth(p.nodes[j].path) })
	p.nodes = append(p.nodes, hardlinks...)
	for _, n := range p.nodes {
		for d := path.Dir(n.path); d != "/"; d = path.Dir(d) {
			if k, ok := planned[d]; ok && k != kindDir {
				bad("%s: its parent %s is a %s in this config", n.path, d, k)
			}
		}
	}

	// systemd
	unitWrites := map[string]string{} // path -> the unit that writes it
	for i, u := range cfg.Systemd.Units {
		what := fmt.Sprintf("systemd.units.%d (%s)", i, u.Name)
		op := unitOp{name: u.Name, contents: u.Contents, dropins: u.Dropins, mask: u.Mask, enabled: u.Enabled}
		if strings.ContainsAny(u.Name, "/\\") || u.Name == "" || strings.HasPrefix(u.Name, ".") {
			bad("%s: not a unit name", what)
			continue
		}
		for _, d := range u.Dropins {
			if strings.ContainsAny(d.Name, "/\\") || !strings.HasSuffix(d.Name, ".conf") {
				bad("%s: drop-in %q must be a file name ending in .conf", what, d.Name)
			}
		}
		if p := unitFilePath(u.Name); hasKey(planned, p) {
			bad("%s: %s is also in storage", what, p)
		}
		if u.Enabled != nil && *u.Enabled {
			if isTrue(u.Mask) {
				bad("%s: a unit cannot be both masked and enabled", what)
			}
			if err := p.planEnable(&op); err != nil {
				bad("%s: %v", what, err)
				op.install = installInfo{} // no links from a refused [Install] in the checks below
			}
		}
		// Nothing else in the config writes where the unit's file, drop-ins and links go.
		for _, w := range op.writes() {
			if other, ok := unitWrites[w]; ok {
				bad("%s: %s is also written for unit %s", what, w, other)
			} else if w != unitFilePath(u.Name) && hasKey(planned, w) {
				bad("%s: %s is also in storage", what, w)
			}
			unitWrites[w] = u.Name
		}
		p.units = append(p.units, op)
	}
	// ... nor puts a file or a link where a unit's writes, or a storage node, need a folder.
	for _, u := range p.units {
		for _, w := range u.writes() {
			for d := path.Dir(w); d != "/"; d = path.Dir(d) {
				if k, ok := planned[d]; ok && k != kindDir {
					bad("unit %s: %s goes in %s, which is a %s in this config", u.name, w, d, k)
					break
				}
				if other, ok := unitWrites[d]; ok {
					bad("unit %s: %s goes in %s, which unit %s writes", u.name, w, d, other)
					break
				}
			}
		}
	}
	for _, n := range p.nodes {
		for d := path.Dir(n.path); d != "/"; d = path.Dir(d) {
			if other, ok := unitWrites[d]; ok {
				bad("%s: its parent %s is written for unit %s", n.path, d, other)
				break
			}
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("the Ignition config cannot be applied (nothing was changed):\n  %s", strings.Join(problems, "\n  "))
	}
	return p, nil
}

func hasKey(m map[string]nodeKind, k string) bool { _, ok := m[k]; return ok }

// unitFilePath is where a unit's file from the config, or its mask, is written.
func unitFilePath(name string) string { return path.Join(SystemdUnitDir, name) }

// dropinPath is where a unit's drop-in is written.
func dropinPath(unit, name string) string { return path.Join(SystemdUnitDir, unit+".d", name) }

// enableLink is one symlink that enables a unit; target is the WantedBy=/RequiredBy= target
// it goes into, "" for an Alias=.
type enableLink struct{ path, target string }

// enableLinks are the links enabling u, in the order Apply makes them: one in each WantedBy=
// target's .wants folder, one in each RequiredBy= target's .requires folder, one per Alias=.
func (u unitOp) enableLinks() []enableLink {
	var out []enableLink
	for _, t := range u.install.wantedBy {
		out = append(out, enableLink{path.Join(SystemdUnitDir, t+".wants", u.name), t})
	}
	for _, t := range u.install.requiredBy {
		out = append(out, enableLink{path.Join(SystemdUnitDir, t+".requires", u.name), t})
	}
	for _, a := range u.install.alias {
		out = append(out, enableLink{path.Join(SystemdUnitDir, a), ""})
	}
	return out
}

// writes lists the paths in the root that Apply writes, replaces or removes for the config's
// storage nodes and units: nodes, unit files and masks, drop-ins and enablement links. Not
// listed: what groupadd, useradd and the SSH key step write (the passwd files and home
// folders) and the removal of a disabled unit's links, which is the unit's name in each
// existing /etc/systemd/system/*.wants and *.requires folder.
func (p *Plan) writes() []string {
	out := p.Paths()
	for _, u := range p.units {
		out = append(out, u.writes()...)
	}
	return out
}

// writes lists what Apply writes, replaces or removes for u (see Plan.writes), each path
// once (WantedBy=a a links once).
func (u unitOp) writes() []string {
	var out []string
	if u.mask != nil || u.contents != nil {
		out = append(out, unitFilePath(u.name))
	}
	for _, d := range u.dropins {
		if d.Contents != nil {
			out = append(out, dropinPath(u.name, d.Name))
		}
	}
	if isTrue(u.enabled) {
		for _, l := range u.enableLinks() {
			if !slices.Contains(out, l.path) {
				out = append(out, l.path)
			}
		}
	}
	return out
}

func depth(p string) int { return strings.Count(p, "/") }

func isTrue(b *bool) bool { return b != nil && *b }

func fileMode(m int) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func dirMode(m *int) *fs.FileMode {
	if m == nil {
		return nil
	}
	mode := fileMode(*m)
	return &mode
}

// checkExisting applies Ignition's overwrite rules to what is at the node's path now.
func (p *Plan) checkExisting(n *nodeOp, planned map[string]nodeKind) error {
	if !path.IsAbs(n.path) || n.path == "/" {
		return fmt.Errorf("path must be absolute and not /")
	}
	if k, ok := planned[n.path]; ok {
		return fmt.Errorf("the config already has a %s at this path", k)
	}
	if err := p.checkParents(n.path); err != nil {
		return err
	}
	rp, st, err := p.root.lstat(n.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if n.overwrite {
		return nil
	}
	switch n.kind {
	case kindDir:
		if !st.IsDir() {
			return fmt.Errorf("a non-directory exists there and overwrite is false")
		}
	case kindFile:
		switch {
		case !st.Mode().IsRegular():
			return fmt.Errorf("a non-regular file exists there and overwrite is false")
		case n.hasContents:
			return fmt.Errorf("a file exists there and overwrite is false")
		case n.mode == nil:
			n.keepMode = true
		}
	case kindSymlink:
		if st.Mode()&fs.ModeSymlink == 0 {
			return fmt.Errorf("a non-symlink exists there and overwrite is false")
		}
		target, err := os.Readlink(p.root.host(rp))
		if err != nil {
			return err
		}
		if path.Clean(target) != path.Clean(n.target) {
			return fmt.Errorf("a symlink to %s exists there (not %s) and overwrite is false", target, n.target)
		}
	case kindHardlink:
		_, tst, err := p.root.lstat(n.target)
		if err != nil || !os.SameFile(st, tst) {
			return fmt.Errorf("a file exists there that is not the link target and overwrite is false")
		}
	}
	return nil
}

// checkParents refuses a path whose existing parents are not directories.
func (p *Plan) checkParents(pth string) error {
	for d := path.Dir(pth); d != "/"; d = path.Dir(d) {
		rd, err := p.root.resolveAll(d)
		if err != nil {
			return err
		}
		st, err := os.Stat(p.root.host(rd))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("its parent %s exists and is not a directory", d)
		}
	}
	return nil
}

// decodeResource decodes an inline data: URL, gunzips it when compression is gzip, and checks
// verification.hash against the decoded bytes.
func decodeResource(r types.Resource) ([]byte, error) {
	if r.Source == nil {
		return nil, nil
	}
	if err := checkSource(*r.Source); err != nil {
		return nil, err
	}
	du, err := dataurl.DecodeString(*r.Source)
	if err != nil {
		return nil, fmt.Errorf("the data: URL does not decode: %v", err)
	}
	data := du.Data
	if r.Compression != nil && *r.Compression != "" {
		if *r.Compression != "gzip" {
			return nil, fmt.Errorf("compression %q is not supported (gzip or none)", *r.Compression)
		}
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("gzip contents: %v", err)
		}
		data, err = io.ReadAll(io.LimitReader(zr, maxFileSize+1))
		if err != nil {
			return nil, fmt.Errorf("gzip contents: %v", err)
		}
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("contents are larger than %d MiB", maxFileSize>>20)
	}
	if r.Verification.Hash != nil {
		if err := verifyHash(*r.Verification.Hash, data); err != nil {
			return nil, err
		}
	}
	return data, nil
}

func verifyHash(spec string, data []byte) error {
	algo, want, ok := strings.Cut(spec, "-")
	if !ok {
		return fmt.Errorf("verification.hash %q is not <type>-<hex>", spec)
	}
	var h hash.Hash
	switch algo {
	case "sha512":
		h = sha512.New()
	case "sha256":
		h = sha256.New()
	default:
		return fmt.Errorf("verification.hash type %q is not sha512 or sha256", algo)
	}
	h.Write(data)
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, want) {
		return fmt.Errorf("verification.hash mismatch: contents hash to %s-%s", algo, got)
	}
	return nil
}

// planEnable finds the unit's [Install] section: in the config's contents, else in the unit
// file on the node.
func (p *Plan) planEnable(op *unitOp) error {
	contents := op.contents
	op.unitFile = path.Join(SystemdUnitDir, op.name)
	if contents == nil {
		names := []string{op.name}
		if tmpl, ok := templateName(op.name); ok {
			names = append(names, tmpl)
		}
	search:
		for _, name := range names {
			for _, dir := range unitSearchPath {
				rp, err := p.root.resolveAll(path.Join(dir, name))
				if err != nil {
					continue
				}
				data, err := os.ReadFile(p.root.host(rp))
				if err != nil {
					continue
				}
				s := string(data)
				contents = &s
				op.unitFile = path.Join(dir, name)
				break search
			}
		}
		if contents == nil {
			return fmt.Errorf("enabled, but the config has no contents for it and no unit file %s exists on the node (looked in %s)", op.name, strings.Join(unitSearchPath, ", "))
		}
	}
	opts, err := unit.DeserializeOptions(strings.NewReader(*contents))
	if err != nil {
		return fmt.Errorf("the unit does not parse: %v", err)
	}
	for _, o := range opts {
		if o.Section != "Install" {
			continue
		}
		vals := strings.Fields(o.Value)
		switch o.Name {
		case "WantedBy":
			op.install.wantedBy = append(op.install.wantedBy, vals...)
		case "RequiredBy":
			op.install.requiredBy = append(op.install.requiredBy, vals...)
		case "Alias":
			op.install.alias = append(op.install.alias, vals...)
		}
	}
	all := slices.Concat(op.install.wantedBy, op.install.requiredBy, op.install.alias)
	if len(all) == 0 {
		return fmt.Errorf("enabled, but the unit has no [Install] WantedBy=, RequiredBy= or Alias=: there is nothing to enable")
	}
	for _, t := range all {
		// "." and ".." have no "/" but are paths all the same: Alias=.. would replace
		// /etc/systemd with a link, Alias=. /etc/systemd/system.
		if strings.ContainsAny(t, "/\\%") || t == "" || t == "." || t == ".." {
			return fmt.Errorf("[Install] names %q, which kubebake-ignition cannot link (no specifiers or paths)", t)
		}
	}
	for _, a := range op.install.alias {
		if a == op.name {
			return fmt.Errorf("[Install] Alias=%s is the unit's own name: the alias link would replace the unit file", a)
		}
		if path.Ext(a) != path.Ext(op.name) {
			return fmt.Errorf("[Install] Alias=%s is not a %s unit name: an alias has the unit's type (systemd refuses it too)", a, path.Ext(op.name))
		}
	}
	return nil
}

// templateName maps foo@bar.service to foo@.service.
func templateName(name string) (string, bool) {
	at := strings.Index(name, "@")
	dot := strings.LastIndex(name, ".")
	if at < 0 || dot < at || at+1 == dot {
		return "", false
	}
	return name[:at+1] + name[dot:], true
}
