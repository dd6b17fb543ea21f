// Package roles renders the node layer: every file kubebake adds to a node image on top of the
// distribution's packages (binaries, systemd units and role drop-ins, runtime and network
// configuration, sysctl.d, modules-load.d, scripts), as one ordered value computed from a
// recipe and its lock. The image builder, the Packer provisioner and Ignition all apply this
// one value; nothing else keeps a list of node files.
//
// The contract the layer implements (role markers, cluster.env, unit names) is
// docs/node-contract.md.
package roles

import (
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/kubebake/kubebake/recipes"
)

// FileType is the kind of a layer entry.
type FileType string

// Layer entry kinds.
const (
	TypeFile    FileType = "file"
	TypeDir     FileType = "dir"
	TypeSymlink FileType = "symlink"
)

// File is one entry of the node layer.
type File struct {
	// Path is absolute and clean ("/usr/bin/kubelet").
	Path string   `json:"path"`
	Type FileType `json:"type"`
	// Mode holds permission bits only (0755); the type is in Type.
	Mode fs.FileMode `json:"mode"`
	UID  int         `json:"uid"`
	GID  int         `json:"gid"`
	// Content is the file's bytes, for files rendered by kubebake. Empty for artifacts.
	Content []byte `json:"content,omitempty"`
	// Artifact names the lock artifact whose blob is the content ("kubelet", "cni/bridge",
	// "kubebake-ignition").
	Artifact string `json:"artifact,omitempty"`
	// SHA256 is the hex sha256 of the content: from the lock for artifacts (empty when the
	// layer is rendered without a lock), computed for rendered files.
	SHA256 string `json:"sha256,omitempty"`
	// Size is the content length: from the lock for lock artifacts, 0 when unknown.
	Size int64 `json:"size"`
	// Target is a symlink's target.
	Target string `json:"target,omitempty"`
}

// Layer is the node layer: files sorted by path, every parent directory listed before its
// children.
type Layer struct {
	Files []File `json:"files"`
}

// IgnitionArtifact is the first-boot Ignition applier (cloudinit/ignition), installed as
// IgnitionPath. The lock pins it like any binary (built from kubebake's own source).
const (
	IgnitionArtifact = recipes.ApplierArtifact
	IgnitionPath     = "/usr/lib/kubebake/kubebake-ignition"
)

// File returns the entry at path.
func (l *Layer) File(path string) (File, bool) {
	i := sort.Search(len(l.Files), func(i int) bool { return l.Files[i].Path >= path })
	if i < len(l.Files) && l.Files[i].Path == path {
		return l.Files[i], true
	}
	return File{}, false
}

// Artifacts are the artifact names the layer's files need, sorted, each once.
func (l *Layer) Artifacts() []string {
	seen := map[string]bool{}
	var names []string
	for _, f := range l.Files {
		if f.Artifact != "" && !seen[f.Artifact] {
			seen[f.Artifact] = true
			names = append(names, f.Artifact)
		}
	}
	sort.Strings(names)
	return names
}

// builder collects layer entries while rendering; build sorts them and adds parents.
type builder struct {
	files map[string]File
	err   error
}

func newBuilder() *builder { return &builder{files: map[string]File{}} }

func (b *builder) add(f File) {
	if b.err != nil {
		return
	}
	if !strings.HasPrefix(f.Path, "/") || cleanPath(f.Path) != f.Path || f.Path == "/" {
		b.err = fmt.Errorf("layer path %q is not absolute and clean", f.Path)
		return
	}
	if old, ok := b.files[f.Path]; ok {
		if old.Type == TypeDir && f.Type == TypeDir && old.Mode == f.Mode {
			return
		}
		b.err = fmt.Errorf("layer path %s is rendered twice", f.Path)
		return
	}
	b.files[f.Path] = f
}

func (b *builder) file(path string, mode fs.FileMode, content []byte) {
	b.add(File{Path: path, Type: TypeFile, Mode: mode, Content: content, SHA256: sha256Hex(content), Size: int64(len(content))})
}

func (b *builder) dir(path string, mode fs.FileMode) {
	b.add(File{Path: path, Type: TypeDir, Mode: mode})
}

func (b *builder) symlink(path, target string) {
	b.add(File{Path: path, Type: TypeSymlink, Mode: 0o777, Target: target})
}

// build adds every missing parent directory (0755 root:root) and sorts the entries by path.
func (b *builder) build() (*Layer, error) {
	if b.err != nil {
		return nil, b.err
	}
	for p := range b.files {
		for d := parentDir(p); d != "/"; d = parentDir(d) {
			if f, ok := b.files[d]; ok {
				if f.Type != TypeDir {
					return nil, fmt.Errorf("layer path %s is a %s and a parent directory of %s", d, f.Type, p)
				}
				continue
			}
			b.files[d] = File{Path: d, Type: TypeDir, Mode: 0o755}
		}
	}
	l := &Layer{Files: make([]File, 0, len(b.files))}
	for _, f := range b.files {
		l.Files = append(l.Files, f)
	}
	sort.Slice(l.Files, func(i, j int) bool { return l.Files[i].Path < l.Files[j].Path })
	return l, nil
}

func parentDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func cleanPath(p string) string {
	if strings.Contains(p, "//") || strings.HasSuffix(p, "/") || strings.Contains(p, "/./") ||
		strings.Contains(p, "/../") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") {
		return ""
	}
	return p
}
