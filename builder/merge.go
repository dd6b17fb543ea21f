package builder

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/kubebake/kubebake/roles"
)

// The merge step: one tar stream rewrite that turns the rootfs tarball and the node layer
// into the root filesystem's tarball. No mount, no chroot; deterministic: rootfs entries keep
// mmdebstrap's order, layer entries follow in the layer's order, every mtime is clamped to
// SOURCE_DATE_EPOCH and access/change times are dropped.

// relPath is a tar name without "./", leading or trailing slashes: "etc/fstab"; "" is the root.
func relPath(name string) string {
	name = strings.TrimPrefix(name, "./")
	name = strings.Trim(name, "/")
	if name == "." {
		return ""
	}
	return path.Clean("/" + name)[1:]
}

// tarName is how the merged tar names rel (mmdebstrap's style): "./etc/fstab", "./etc/".
func tarName(rel string, dir bool) string {
	if rel == "" {
		return "./"
	}
	if dir {
		return "./" + rel + "/"
	}
	return "./" + rel
}

// LayerFile is one regular file of the node layer as it went into the image.
type LayerFile struct {
	Path   string      `json:"path"` // absolute: /usr/bin/kubelet
	Mode   os.FileMode `json:"mode"`
	Size   int64       `json:"size"`
	SHA256 string      `json:"sha256"`
}

// layerEntry is one node layer entry as the merge sees it.
type layerEntry struct {
	typ     byte   // tar type
	mode    int64  // permission bits
	uid     int    // owner
	gid     int    // group
	rel     string // as the layer names it
	target  string // resolved through the rootfs's directory symlinks
	emitted bool
}

// indexLayer lists the layer's entries without reading any content.
func indexLayer(layer *roles.Layer) ([]*layerEntry, error) {
	var entries []*layerEntry
	seen := map[string]bool{}
	for _, f := range layer.Files {
		rel := relPath(f.Path)
		if rel == "" {
			continue // the root directory belongs to the rootfs
		}
		if seen[rel] {
			return nil, fmt.Errorf("node layer: %s appears twice", f.Path)
		}
		seen[rel] = true
		e := &layerEntry{rel: rel, mode: int64(f.Mode.Perm()), uid: f.UID, gid: f.GID}
		switch f.Type {
		case roles.TypeFile:
			e.typ = tar.TypeReg
		case roles.TypeDir:
			e.typ = tar.TypeDir
		case roles.TypeSymlink:
			e.typ = tar.TypeSymlink
		default:
			return nil, fmt.Errorf("node layer: %s: unknown type %q", f.Path, f.Type)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// rootfsScan is what a first, header-only pass over the rootfs tar learns.
type rootfsScan struct {
	symlinks map[string]string // rel -> link target as stored
	types    map[string]byte   // rel -> tar type
}

func scanRootfs(rootfsTar string) (*rootfsScan, error) {
	f, err := os.Open(rootfsTar)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &rootfsScan{symlinks: map[string]string{}, types: map[string]byte{}}
	tr := tar.NewReader(f) // *os.File seeks over file bodies
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("rootfs tarball %s: %w", rootfsTar, err)
		}
		rel := relPath(hdr.Name)
		s.types[rel] = hdr.Typeflag
		if hdr.Typeflag == tar.TypeSymlink {
			s.symlinks[rel] = hdr.Linkname
		}
	}
}

// resolveDirs rewrites rel so that none of its parent directories is a symlink in the rootfs:
// with merged /usr, a layer file "lib/systemd/system/x" lands in "usr/lib/systemd/system/x".
// The last component is left alone (a layer entry replaces a symlink, it does not follow it).
func (s *rootfsScan) resolveDirs(rel string) (string, error) {
	parts := strings.Split(rel, "/")
	for hops := 0; hops < 40; hops++ {
		changed := false
		for i := 1; i < len(parts); i++ {
			prefix := strings.Join(parts[:i], "/")
			target, ok := s.symlinks[prefix]
			if !ok {
				continue
			}
			var base string
			if strings.HasPrefix(target, "/") {
				base = relPath(target)
			} else {
				base = relPath(path.Join(path.Dir("/"+prefix), target))
			}
			rest := strings.Join(parts[i:], "/")
			joined := rest
			if base != "" {
				joined = base + "/" + rest
			}
			parts = strings.Split(joined, "/")
			changed = true
			break
		}
		if !changed {
			return strings.Join(parts, "/"), nil
		}
	}
	return "", fmt.Errorf("/%s: too many levels of symbolic links in the rootfs", rel)
}

// ExtraFile is a file the build appends after the layer (manifest, SBOM) or writes over a
// rootfs file (fstab).
type ExtraFile struct {
	Path    string // absolute
	Mode    os.FileMode
	Content []byte
}

// MergeInfo is what the merge learnt from the streams, for the ESP, manifest and SBOM.
type MergeInfo struct {
	DpkgStatus []byte
	Kernels    []string // kernel versions with both /boot/vmlinuz-V and /boot/initrd.img-V
	// Extracted holds the rootfs files the build asked for (kernels, initrds, bootloader),
	// by absolute path, as paths of extracted copies.
	Extracted  map[string]string
	LayerFiles []LayerFile
	Dropped    []string // paths removed by hygiene (for the log)
	Entries    int
}

// mergeOptions configures mergeTar.
type mergeOptions struct {
	RootfsTar string
	// Layer is written with Layer.WriteTar(Open, Epoch) and merged as it streams.
	Layer *roles.Layer
	Open  roles.OpenFunc
	Out   io.Writer
	Epoch int64
	// Replace gives the content of files that replace rootfs files (etc/fstab).
	Replace []ExtraFile
	// Extract says which rootfs files to copy out (by absolute path) into ExtractDir.
	Extract    func(abs string) bool
	ExtractDir string
	// Extras is called after the layer and returns files to append (manifest, SBOM).
	Extras func(*MergeInfo) ([]ExtraFile, error)
}

// hygiene decides what happens to a rootfs entry: drop it, replace its content (a non-nil
// content), or keep it as it is. body reads the entry's content when a rule needs it.
func hygiene(rel string, hdr *tar.Header, body func() ([]byte, error)) (drop bool, content []byte, err error) {
	isDir := hdr.Typeflag == tar.TypeDir
	under := func(dir string) bool { return strings.HasPrefix(rel, dir+"/") }
	base := path.Base(rel)
	switch {
	// Per-instance identity: regenerated at first boot.
	case rel == "etc/machine-id":
		return false, []byte{}, nil
	case rel == "var/lib/dbus/machine-id":
		return hdr.Typeflag != tar.TypeSymlink, nil, nil
	case strings.HasPrefix(rel, "etc/ssh/ssh_host_"):
		return true, nil, nil
	case rel == "var/lib/systemd/random-seed", rel == "var/lib/systemd/credential.secret":
		return true, nil, nil
	// cloud-init instance state: an image must look like it never booted.
	case under("var/lib/cloud"):
		return true, nil, nil
	// Logs, apt lists and caches, temporary files.
	case under("var/log"):
		// Log files go; the folders (journal/, with its group and setgid bit) and symlinks
		// stay so that services find what their packages set up.
		return hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeLink, nil, nil
	case under("var/lib/apt/lists"), under("var/cache/apt"):
		return !isDir, nil, nil
	// apt credentials (a mirror's login): the build's only, never a node's. The folder stays.
	case rel == "etc/apt/auth.conf", under("etc/apt/auth.conf.d"):
		return !isDir, nil, nil
	case under("var/cache/debconf") && strings.HasSuffix(base, "-old"):
		return true, nil, nil
	case under("tmp"), under("var/tmp"):
		return true, nil, nil
	// Backups of the account databases may hold old password hashes.
	case rel == "etc/shadow-", rel == "etc/gshadow-", rel == "etc/passwd-", rel == "etc/group-":
		return true, nil, nil
	case rel == "root/.bash_history", rel == "root/.lesshst", rel == "root/.viminfo":
		return true, nil, nil
	// The build host leaks into these through mmdebstrap.
	case rel == "etc/hostname" && hdr.Typeflag == tar.TypeReg:
		return false, []byte("localhost\n"), nil
	case rel == "etc/resolv.conf" && hdr.Typeflag == tar.TypeReg:
		return false, []byte{}, nil
	case rel == "etc/shadow" && hdr.Typeflag == tar.TypeReg:
		b, err := body()
		if err != nil {
			return false, nil, err
		}
		return false, lockPasswords(b), nil
	}
	return false, nil, nil
}

// lockPasswords sets every empty or hashed password field in a shadow file to "*" unless it
// is already locked ("!..." or "*..."): nobody logs in with a password baked into an image.
func lockPasswords(shadow []byte) []byte {
	lines := strings.SplitAfter(string(shadow), "\n")
	for i, line := range lines {
		body := strings.TrimRight(line, "\n")
		f := strings.Split(body, ":")
		if len(f) < 2 {
			continue
		}
		if !strings.HasPrefix(f[1], "!") && !strings.HasPrefix(f[1], "*") {
			f[1] = "*"
			lines[i] = strings.Join(f, ":") + line[len(body):]
		}
	}
	return []byte(strings.Join(lines, ""))
}

// errTarConflict is returned for layer entries that cannot replace rootfs entries.
var errTarConflict = errors.New("conflict between the node layer and the rootfs")

// mergeTar writes the merged tarball to o.Out.
func mergeTar(o mergeOptions) (*MergeInfo, error) {
	scan, err := scanRootfs(o.RootfsTar)
	if err != nil {
		return nil, err
	}
	layer, err := indexLayer(o.Layer)
	if err != nil {
		return nil, err
	}
	info := &MergeInfo{Extracted: map[string]string{}}
	byTarget := map[string]*layerEntry{}
	for _, e := range layer {
		isDir := e.typ == tar.TypeDir
		t, err := scan.resolveDirs(e.rel)
		if err == nil && isDir && scan.types[t] == tar.TypeSymlink {
			// A layer directory the rootfs has as a symlink to a directory (/lib with merged
			// /usr): the layer means the directory it points to.
			t, err = scan.resolveDirs(e.rel + "/_")
			t = strings.TrimSuffix(t, "/_")
		}
		if err != nil {
			return nil, fmt.Errorf("node layer: %w", err)
		}
		e.target = t
		if prev, dup := byTarget[t]; dup {
			if isDir && prev.typ == tar.TypeDir {
				e.emitted = true // the same directory reached twice: the first one counts
				continue
			}
			return nil, fmt.Errorf("node layer: /%s and /%s are the same file in the rootfs (/%s)", prev.rel, e.rel, t)
		}
		byTarget[t] = e
		if typ, ok := scan.types[t]; ok {
			if (typ == tar.TypeDir) != isDir {
				return nil, fmt.Errorf("%w: the layer has /%s as a %s, the rootfs as a %s", errTarConflict, e.rel, typeName(e.typ), typeName(typ))
			}
		}
	}
	replace := map[string]ExtraFile{}
	for _, x := range o.Replace {
		replace[relPath(x.Path)] = x
	}
	epoch := time.Unix(o.Epoch, 0).UTC()
	tw := tar.NewWriter(o.Out)
	write := func(hdr *tar.Header, body io.Reader) error {
		normalizeHeader(hdr, epoch)
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing %s: %w", hdr.Name, err)
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				return fmt.Errorf("writing %s: %w", hdr.Name, err)
			}
		}
		info.Entries++
		return nil
	}

	rf, err := os.Open(o.RootfsTar)
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	tr := tar.NewReader(rf)
	dropped := map[string]bool{}
	kernels, initrds := map[string]bool{}, map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("rootfs tarball %s: %w", o.RootfsTar, err)
		}
		rel := relPath(hdr.Name)
		if hdr.Typeflag == tar.TypeLink {
			if t := relPath(hdr.Linkname); dropped[t] || byTarget[t] != nil {
				return nil, fmt.Errorf("%w: /%s is a hard link to /%s, which the layer or hygiene replaces", errTarConflict, rel, t)
			}
		}
		var cached []byte
		readBody := func() ([]byte, error) {
			if cached == nil {
				b, err := io.ReadAll(tr)
				if err != nil {
					return nil, err
				}
				cached = b
			}
			return cached, nil
		}
		// The layer wins over the rootfs: a directory keeps its place with the layer's
		// owner and mode, anything else is written with the layer.
		if e := byTarget[rel]; e != nil {
			if e.typ == tar.TypeDir {
				h := &tar.Header{Typeflag: tar.TypeDir, Name: tarName(rel, true), Mode: e.mode, Uid: e.uid, Gid: e.gid}
				if err := write(h, nil); err != nil {
					return nil, err
				}
				e.emitted = true
			}
			dropped[rel] = true
			continue
		}
		if x, ok := replace[rel]; ok {
			delete(replace, rel)
			h := &tar.Header{Typeflag: tar.TypeReg, Name: tarName(rel, false), Mode: int64(x.Mode.Perm()), Size: int64(len(x.Content)), Uid: 0, Gid: 0, Uname: "root", Gname: "root"}
			if err := write(h, bytes.NewReader(x.Content)); err != nil {
				return nil, err
			}
			continue
		}
		drop, content, err := hygiene(rel, hdr, readBody)
		if err != nil {
			return nil, fmt.Errorf("rootfs /%s: %w", rel, err)
		}
		if drop {
			dropped[rel] = true
			info.Dropped = append(info.Dropped, "/"+rel)
			continue
		}
		abs := "/" + rel
		if hdr.Typeflag == tar.TypeReg && content == nil {
			if rel == "var/lib/dpkg/status" {
				b, err := readBody()
				if err != nil {
					return nil, err
				}
				info.DpkgStatus = b
			}
			if o.Extract != nil && o.Extract(abs) {
				b, err := readBody()
				if err != nil {
					return nil, err
				}
				dst := path.Join(o.ExtractDir, strings.ReplaceAll(rel, "/", "_"))
				if err := os.WriteFile(dst, b, 0o644); err != nil {
					return nil, err
				}
				info.Extracted[abs] = dst
			}
			if v, ok := strings.CutPrefix(rel, "boot/vmlinuz-"); ok {
				kernels[v] = true
			}
			if v, ok := strings.CutPrefix(rel, "boot/initrd.img-"); ok {
				initrds[v] = true
			}
		}
		var body io.Reader
		switch {
		case content != nil:
			hdr.Size = int64(len(content))
			body = bytes.NewReader(content)
		case cached != nil:
			body = bytes.NewReader(cached)
		case hdr.Typeflag == tar.TypeReg:
			body = tr
		}
		if err := write(hdr, body); err != nil {
			return nil, err
		}
	}
	for v := range kernels {
		if initrds[v] {
			info.Kernels = append(info.Kernels, v)
		}
	}
	sort.Strings(info.Kernels)
	for rel := range replace {
		return nil, fmt.Errorf("rootfs has no /%s to replace", rel)
	}
	if info.LayerFiles, err = appendLayer(o.Layer, o.Open, o.Epoch, byTarget, write); err != nil {
		return nil, err
	}
	if o.Extras != nil {
		extras, err := o.Extras(info)
		if err != nil {
			return nil, err
		}
		made := map[string]bool{}
		for _, x := range extras {
			rel := relPath(x.Path)
			if _, ok := scan.types[rel]; ok || byTarget[rel] != nil {
				return nil, fmt.Errorf("%w: the build adds %s, which already exists", errTarConflict, x.Path)
			}
			// Parent directories the rootfs and the layer lack (0755 root:root).
			var missing []string
			for d := path.Dir(rel); d != "." && d != ""; d = path.Dir(d) {
				if _, ok := scan.types[d]; ok || byTarget[d] != nil || made[d] {
					break
				}
				missing = append(missing, d)
			}
			for i := len(missing) - 1; i >= 0; i-- {
				made[missing[i]] = true
				h := &tar.Header{Typeflag: tar.TypeDir, Name: tarName(missing[i], true), Mode: 0o755, Uname: "root", Gname: "root"}
				if err := write(h, nil); err != nil {
					return nil, err
				}
			}
			h := &tar.Header{Typeflag: tar.TypeReg, Name: tarName(rel, false), Mode: int64(x.Mode.Perm()), Size: int64(len(x.Content)), Uname: "root", Gname: "root"}
			if err := write(h, bytes.NewReader(x.Content)); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return info, nil
}

// appendLayer streams the layer (Layer.WriteTar) and writes its entries that the rootfs pass
// has not written, in the layer's order, hashing every regular file on the way.
func appendLayer(layer *roles.Layer, open roles.OpenFunc, epoch int64, byTarget map[string]*layerEntry, write func(*tar.Header, io.Reader) error) ([]LayerFile, error) {
	byRel := map[string]*layerEntry{}
	for _, e := range byTarget {
		byRel[e.rel] = e
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(layer.WriteTar(pw, open, time.Unix(epoch, 0))) }()
	defer pr.Close() // stops WriteTar if this returns early
	var files []LayerFile
	tr := tar.NewReader(pr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		rel := relPath(hdr.Name)
		e := byRel[rel]
		var body io.Reader
		var h hash.Hash
		if hdr.Typeflag == tar.TypeReg {
			h = sha256.New()
			body = io.TeeReader(tr, h)
		}
		if e != nil && !e.emitted {
			hc := *hdr
			hc.Name = tarName(e.target, hdr.Typeflag == tar.TypeDir)
			if err := write(&hc, body); err != nil {
				return nil, err
			}
			e.emitted = true
		} else if body != nil {
			if _, err := io.Copy(io.Discard, body); err != nil {
				return nil, err
			}
		}
		if h != nil {
			files = append(files, LayerFile{Path: "/" + rel, Mode: hdr.FileInfo().Mode().Perm(), Size: hdr.Size, SHA256: hex.EncodeToString(h.Sum(nil))})
		}
	}
}

// normalizeHeader clamps mtime to the epoch, drops atime/ctime and picks a format that keeps
// extended attributes (file capabilities) and long names.
func normalizeHeader(h *tar.Header, epoch time.Time) {
	if h.ModTime.After(epoch) || h.ModTime.IsZero() {
		h.ModTime = epoch
	}
	h.ModTime = h.ModTime.Truncate(time.Second)
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	// Drop PAX time records that would override the above.
	for _, k := range []string{"atime", "ctime", "mtime"} {
		delete(h.PAXRecords, k)
	}
	if len(h.PAXRecords) > 0 || len(h.Xattrs) > 0 { //nolint:staticcheck // Xattrs is how archive/tar still reports SCHILY.xattr
		h.Format = tar.FormatPAX
	} else {
		h.Format = tar.FormatUnknown
	}
}

func typeName(t byte) string {
	switch t {
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeReg:
		return "file"
	case tar.TypeLink:
		return "hard link"
	default:
		return fmt.Sprintf("type %q", t)
	}
}
