package ignition

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// rootFS maps the config's absolute paths into a root folder. Symlinks met on the way are
// followed inside the root, never out of it, as they would resolve on the booted node.
type rootFS struct{ root string }

// host is the host path of an absolute, clean path inside the root, with no symlink resolution.
func (r rootFS) host(p string) string {
	if r.root == "/" {
		return p
	}
	return filepath.Join(r.root, p)
}

// resolve maps p into the root, following symlinks in every component but the last (the node
// itself is not followed, as Ignition does not follow it either).
func (r rootFS) resolve(p string) (string, error) {
	dir, base := path.Split(path.Clean(p))
	if base == "" {
		return r.root, nil
	}
	d, err := r.resolveAll(dir)
	if err != nil {
		return "", err
	}
	return path.Join(d, base), nil
}

// resolveAll follows every symlink in p, keeping inside the root; it returns a clean path
// relative to the root (absolute, "/"-rooted), which need not exist.
func (r rootFS) resolveAll(p string) (string, error) {
	todo := splitPath(p)
	cur := "/"
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		st, err := os.Lstat(r.host(next))
		if errors.Is(err, fs.ErrNotExist) {
			cur = next
			continue
		}
		if err != nil {
			return "", err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		links++
		if links > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(r.host(next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = "/"
		}
		todo = append(splitPath(target), todo...)
	}
	return cur, nil
}

func splitPath(p string) []string { return strings.Split(p, "/") }

// lstat looks at the node at p (its parents resolved, the node itself not followed).
func (r rootFS) lstat(p string) (string, fs.FileInfo, error) {
	rp, err := r.resolve(p)
	if err != nil {
		return "", nil, err
	}
	st, err := os.Lstat(r.host(rp))
	return rp, st, err
}

// passwdEntry is one line of /etc/passwd.
type passwdEntry struct {
	Name     string
	UID, GID int
	Home     string
}

// groupEntry is one line of /etc/group.
type groupEntry struct {
	Name string
	GID  int
}

func (r rootFS) readPasswd() (map[string]passwdEntry, error) {
	out := map[string]passwdEntry{}
	err := r.readColonFile("/etc/passwd", func(f []string) {
		if len(f) < 7 {
			return
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 == nil && err2 == nil {
			out[f[0]] = passwdEntry{Name: f[0], UID: uid, GID: gid, Home: f[5]}
		}
	})
	return out, err
}

func (r rootFS) readGroup() (map[string]groupEntry, error) {
	out := map[string]groupEntry{}
	err := r.readColonFile("/etc/group", func(f []string) {
		if len(f) < 3 {
			return
		}
		if gid, err := strconv.Atoi(f[2]); err == nil {
			out[f[0]] = groupEntry{Name: f[0], GID: gid}
		}
	})
	return out, err
}

func (r rootFS) readColonFile(p string, line func([]string)) error {
	rp, err := r.resolveAll(p)
	if err != nil {
		return err
	}
	f, err := os.Open(r.host(rp))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		t := sc.Text()
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		line(strings.Split(t, ":"))
	}
	return sc.Err()
}
