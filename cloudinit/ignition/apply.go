package ignition

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/ignition/v2/config/v3_6/types"

	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/run"
)

// ApplyResult says what Apply changed that a running systemd must hear about.
type ApplyResult struct {
	// UnitsChanged is set when unit files, drop-ins, masks or enablement links changed.
	UnitsChanged bool
	// Targets got new Wants=/Requires= links (a running system should start them again).
	Targets []string
	// Enabled lists the units enabled.
	Enabled []string
	// Hostname is the first line of /etc/hostname when the config wrote that file: the
	// running system must take the name too, since systemd read the file long before.
	Hostname string
}

// Apply carries out the plan: groups, users, then storage nodes (shallow first, each file
// written atomically), then systemd units and their enablement. It logs paths, never contents.
func (p *Plan) Apply(ctx context.Context, log *slog.Logger) (*ApplyResult, error) {
	if log == nil {
		log = slog.Default()
	}
	res := &ApplyResult{}
	for _, g := range p.groups {
		if err := p.applyGroup(ctx, log, g); err != nil {
			return res, err
		}
	}
	for _, u := range p.users {
		if err := p.applyUser(ctx, log, u); err != nil {
			return res, err
		}
	}
	passwd, err := p.root.readPasswd()
	if err != nil {
		return res, err
	}
	group, err := p.root.readGroup()
	if err != nil {
		return res, err
	}
	for _, n := range p.nodes {
		uid, gid, err := resolveOwner(n.owner, passwd, group)
		if err != nil {
			return res, fmt.Errorf("%s: %w", n.path, err)
		}
		if err := p.applyNode(log, n, uid, gid); err != nil {
			return res, fmt.Errorf("%s %s: %w", n.kind, n.path, err)
		}
		if n.path == hostnamePath && n.kind == kindFile {
			data, err := os.ReadFile(p.root.host(hostnamePath))
			if err != nil {
				return res, err
			}
			res.Hostname, _, _ = strings.Cut(strings.TrimSpace(string(data)), "\n")
		}
	}
	for _, u := range p.units {
		if err := p.applyUnit(log, u, res); err != nil {
			return res, fmt.Errorf("unit %s: %w", u.name, err)
		}
	}
	slices.Sort(res.Targets)
	res.Targets = slices.Compact(res.Targets)
	return res, nil
}

func resolveOwner(o owner, passwd map[string]passwdEntry, group map[string]groupEntry) (int, int, error) {
	uid, gid := 0, 0
	switch {
	case o.uid != nil:
		uid = *o.uid
	case o.uname != nil:
		e, ok := passwd[*o.uname]
		if !ok {
			return 0, 0, fmt.Errorf("user %q does not exist", *o.uname)
		}
		uid = e.UID
	}
	switch {
	case o.gid != nil:
		gid = *o.gid
	case o.gname != nil:
		e, ok := group[*o.gname]
		if !ok {
			return 0, 0, fmt.Errorf("group %q does not exist", *o.gname)
		}
		gid = e.GID
	}
	return uid, gid, nil
}

// mkdirParents makes the missing parents of p (a root path) with mode 0755, owned by root.
func (p *Plan) mkdirParents(pth string) error {
	dir, err := p.root.resolveAll(path.Dir(pth))
	if err != nil {
		return err
	}
	return os.MkdirAll(p.root.host(dir), 0o755)
}

func (p *Plan) applyNode(log *slog.Logger, n nodeOp, uid, gid int) error {
	if err := p.mkdirParents(n.path); err != nil {
		return err
	}
	rp, st, err := p.root.lstat(n.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	host := p.root.host(rp)
	exists := err == nil
	// overwrite: a node of another kind goes first (files and links are replaced by rename).
	if exists && n.overwrite {
		replaceable := (n.kind == kindFile || n.kind == kindSymlink || n.kind == kindHardlink) && !st.IsDir()
		if n.kind == kindDir || !replaceable {
			if err := os.RemoveAll(host); err != nil {
				return err
			}
			exists = false
		}
	}
	switch n.kind {
	case kindDir:
		mode := fs.FileMode(0o755)
		if n.mode != nil {
			mode = *n.mode
		} else if exists {
			mode = st.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		}
		if !exists {
			if err := os.Mkdir(host, 0o700); err != nil {
				return err
			}
		}
		if err := os.Lchown(host, uid, gid); err != nil {
			return err
		}
		log.Info("directory", "path", n.path, "mode", fmt.Sprintf("%04o", mode.Perm()))
		return os.Chmod(host, mode)

	case kindFile:
		var data []byte
		switch {
		case n.hasContents:
			data = slices.Clone(n.contents)
		case exists:
			old, err := os.ReadFile(host)
			if err != nil {
				return err
			}
			data = old
		}
		for _, a := range n.appends {
			data = append(data, a...)
		}
		mode := fs.FileMode(0o644)
		if n.mode != nil {
			mode = *n.mode
		} else if n.keepMode && exists {
			mode = st.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		}
		f, err := atomicfile.Create(host, mode.Perm())
		if err != nil {
			return err
		}
		defer f.Abort()
		if _, err := f.Write(data); err != nil {
			return err
		}
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
		if err := f.Chmod(mode); err != nil { // after chown, which clears setuid bits
			return err
		}
		log.Info("file", "path", n.path, "mode", fmt.Sprintf("%04o", mode.Perm()), "bytes", len(data), "append", len(n.appends) > 0)
		return f.Commit()

	case kindSymlink:
		if exists && st.Mode()&fs.ModeSymlink != 0 && !n.overwrite {
			log.Info("symlink exists", "path", n.path, "target", n.target)
			return os.Lchown(host, uid, gid)
		}
		log.Info("symlink", "path", n.path, "target", n.target)
		return replaceWith(host, uid, gid, func(tmp string) error { return os.Symlink(n.target, tmp) })

	case kindHardlink:
		rt, err := p.root.resolveAll(n.target)
		if err != nil {
			return err
		}
		if exists && !n.overwrite {
			log.Info("hard link exists", "path", n.path, "target", n.target)
			return nil
		}
		log.Info("hard link", "path", n.path, "target", n.target)
		return replaceWith(host, -1, -1, func(tmp string) error { return os.Link(p.root.host(rt), tmp) })
	}
	return nil
}

// replaceWith makes a node with make at a temporary name beside host and renames it over host.
func replaceWith(host string, uid, gid int, make func(tmp string) error) error {
	tmp := filepath.Join(filepath.Dir(host), "."+filepath.Base(host)+".kubebake-tmp")
	os.Remove(tmp)
	if err := make(tmp); err != nil {
		return err
	}
	if uid >= 0 {
		if err := os.Lchown(tmp, uid, gid); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, host); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeRootFile writes a root-owned file atomically, making its parents.
func (p *Plan) writeRootFile(pth string, data []byte, mode fs.FileMode) error {
	if err := p.mkdirParents(pth); err != nil {
		return err
	}
	rp, err := p.root.resolve(pth)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(p.root.host(rp), data, mode)
}

func (p *Plan) symlink(pth, target string) error {
	if err := p.mkdirParents(pth); err != nil {
		return err
	}
	rp, err := p.root.resolve(pth)
	if err != nil {
		return err
	}
	host := p.root.host(rp)
	if st, err := os.Lstat(host); err == nil && st.IsDir() {
		if err := os.RemoveAll(host); err != nil {
			return err
		}
	}
	return replaceWith(host, -1, -1, func(tmp string) error { return os.Symlink(target, tmp) })
}

func (p *Plan) applyUnit(log *slog.Logger, u unitOp, res *ApplyResult) error {
	unitPath := unitFilePath(u.name)
	if isTrue(u.mask) {
		log.Info("unit masked", "unit", u.name)
		if err := p.symlink(unitPath, "/dev/null"); err != nil {
			return err
		}
		res.UnitsChanged = true
	} else if u.mask != nil {
		// mask: false removes a mask.
		rp, err := p.root.resolve(unitPath)
		if err != nil {
			return err
		}
		if t, err := os.Readlink(p.root.host(rp)); err == nil && t == "/dev/null" {
			if err := os.Remove(p.root.host(rp)); err != nil {
				return err
			}
			log.Info("unit unmasked", "unit", u.name)
			res.UnitsChanged = true
		}
	}
	if u.contents != nil {
		log.Info("unit", "unit", u.name, "path", unitPath)
		if err := p.writeRootFile(unitPath, []byte(*u.contents), 0o644); err != nil {
			return err
		}
		res.UnitsChanged = true
	}
	for _, d := range u.dropins {
		if d.Contents == nil {
			continue
		}
		dp := dropinPath(u.name, d.Name)
		log.Info("unit drop-in", "unit", u.name, "path", dp)
		if err := p.writeRootFile(dp, []byte(*d.Contents), 0o644); err != nil {
			return err
		}
		res.UnitsChanged = true
	}
	switch {
	case isTrue(u.enabled):
		for _, l := range u.enableLinks() {
			if err := p.symlink(l.path, u.unitFile); err != nil {
				return err
			}
			if l.target != "" {
				res.Targets = append(res.Targets, l.target)
			}
		}
		log.Info("unit enabled", "unit", u.name, "wantedBy", strings.Join(u.install.wantedBy, " "), "requiredBy", strings.Join(u.install.requiredBy, " "))
		res.Enabled = append(res.Enabled, u.name)
		res.UnitsChanged = true
	case u.enabled != nil:
		// enabled: false removes the unit's .wants/.requires links under /etc.
		rd, err := p.root.resolveAll(SystemdUnitDir)
		if err != nil {
			return err
		}
		for _, pat := range []string{"*.wants", "*.requires"} {
			dirs, _ := filepath.Glob(filepath.Join(p.root.host(rd), pat))
			for _, d := range dirs {
				l := filepath.Join(d, u.name)
				if st, err := os.Lstat(l); err == nil && st.Mode()&fs.ModeSymlink != 0 {
					if err := os.Remove(l); err != nil {
						return err
					}
					log.Info("unit disabled", "unit", u.name, "link", strings.TrimPrefix(l, p.root.host(rd)))
					res.UnitsChanged = true
				}
			}
		}
	}
	return nil
}

// rootArgs is useradd's --root for a root other than /.
func (p *Plan) rootArgs() []string {
	if p.root.root == "/" {
		return nil
	}
	return []string{"--root", p.root.root}
}

func (p *Plan) applyGroup(ctx context.Context, log *slog.Logger, g types.PasswdGroup) error {
	group, err := p.root.readGroup()
	if err != nil {
		return err
	}
	if _, ok := group[g.Name]; ok {
		log.Info("group exists", "group", g.Name)
		return nil
	}
	args := p.rootArgs()
	if g.Gid != nil {
		args = append(args, "--gid", strconv.Itoa(*g.Gid))
	}
	if isTrue(g.System) {
		args = append(args, "--system")
	}
	args = append(args, g.Name)
	log.Info("group add", "group", g.Name)
	if err := run.Command("groupadd", args...).Run(ctx); err != nil {
		return fmt.Errorf("creating group %s: %w", g.Name, err)
	}
	if g.PasswordHash != nil {
		c := run.Command("chgpasswd", append(p.rootArgs(), "--encrypted")...)
		c.Stdin = strings.NewReader(g.Name + ":" + *g.PasswordHash + "\n")
		if err := c.Run(ctx); err != nil {
			return fmt.Errorf("setting the password of group %s: %w", g.Name, err)
		}
	}
	return nil
}

func (p *Plan) applyUser(ctx context.Context, log *slog.Logger, op userOp) error {
	u := op.u
	args := p.rootArgs()
	str := func(flag string, s *string) {
		if s != nil {
			args = append(args, flag, *s)
		}
	}
	if u.UID != nil {
		args = append(args, "--uid", strconv.Itoa(*u.UID))
	}
	str("--comment", u.Gecos)
	str("--gid", u.PrimaryGroup)
	str("--shell", u.Shell)
	if len(u.Groups) > 0 {
		gs := make([]string, len(u.Groups))
		for i, g := range u.Groups {
			gs[i] = string(g)
		}
		args = append(args, "--groups", strings.Join(gs, ","))
	}
	if op.exists {
		str("--home", u.HomeDir)
		if len(args) > len(p.rootArgs()) {
			log.Info("user modify", "user", u.Name)
			if err := run.Command("usermod", append(args, u.Name)...).Run(ctx); err != nil {
				return fmt.Errorf("modifying user %s: %w", u.Name, err)
			}
		} else {
			log.Info("user exists", "user", u.Name)
		}
	} else {
		str("--home-dir", u.HomeDir)
		if isTrue(u.NoCreateHome) {
			args = append(args, "--no-create-home")
		} else {
			args = append(args, "--create-home")
		}
		if isTrue(u.NoUserGroup) {
			args = append(args, "--no-user-group")
		} else if u.PrimaryGroup == nil {
			args = append(args, "--user-group")
		}
		if isTrue(u.System) {
			args = append(args, "--system")
		}
		if isTrue(u.NoLogInit) {
			args = append(args, "--no-log-init")
		}
		log.Info("user add", "user", u.Name)
		if err := run.Command("useradd", append(args, u.Name)...).Run(ctx); err != nil {
			return fmt.Errorf("creating user %s: %w", u.Name, err)
		}
	}
	if u.PasswordHash != nil {
		// The hash goes through stdin: never on a command line, which is logged and visible in ps.
		c := run.Command("chpasswd", append(p.rootArgs(), "--encrypted")...)
		c.Stdin = strings.NewReader(u.Name + ":" + *u.PasswordHash + "\n")
		log.Info("user password", "user", u.Name)
		if err := c.Run(ctx); err != nil {
			return fmt.Errorf("setting the password of user %s: %w", u.Name, err)
		}
	}
	if len(u.SSHAuthorizedKeys) > 0 {
		if err := p.addSSHKeys(log, u); err != nil {
			return fmt.Errorf("SSH keys of user %s: %w", u.Name, err)
		}
	}
	return nil
}

// addSSHKeys appends the keys that are not there yet to ~/.ssh/authorized_keys (0600, the
// user's), making ~/.ssh (0700) if needed.
func (p *Plan) addSSHKeys(log *slog.Logger, u types.PasswdUser) error {
	passwd, err := p.root.readPasswd()
	if err != nil {
		return err
	}
	e, ok := passwd[u.Name]
	if !ok {
		return fmt.Errorf("user %s is not in /etc/passwd", u.Name)
	}
	if e.Home == "" || !path.IsAbs(e.Home) {
		return fmt.Errorf("home folder %q is not an absolute path", e.Home)
	}
	sshDir := path.Join(e.Home, ".ssh")
	if err := p.mkdirParents(path.Join(sshDir, "x")); err != nil {
		return err
	}
	rd, err := p.root.resolveAll(sshDir)
	if err != nil {
		return err
	}
	if err := os.Chmod(p.root.host(rd), 0o700); err != nil {
		return err
	}
	if err := os.Lchown(p.root.host(rd), e.UID, e.GID); err != nil {
		return err
	}
	akHost := filepath.Join(p.root.host(rd), "authorized_keys")
	old, err := os.ReadFile(akHost)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(old), "\n") {
		have[strings.TrimSpace(l)] = true
	}
	data := old
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	added := 0
	for _, k := range u.SSHAuthorizedKeys {
		if k := strings.TrimSpace(string(k)); k != "" && !have[k] {
			data = append(data, k+"\n"...)
			have[k] = true
			added++
		}
	}
	f, err := atomicfile.Create(akHost, 0o600)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chown(e.UID, e.GID); err != nil {
		return err
	}
	log.Info("ssh keys", "user", u.Name, "path", path.Join(sshDir, "authorized_keys"), "added", added)
	return f.Commit()
}
