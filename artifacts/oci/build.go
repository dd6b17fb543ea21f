// Package oci bakes the container images a kubebake cluster needs (busybox, the pod sandbox
// "pause" image, CoreDNS) as OCI image archives. Nothing can be pulled from a registry inside
// the VMs, so the images are built at bake time from pinned inputs, stored in the node image
// and imported into containerd at first boot (`ctr -n k8s.io images import FILE`).
//
// Everything is deterministic: the same files, config and SOURCE_DATE_EPOCH give a
// byte-identical archive and the same manifest digests, so the lock can pin them.
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kubebake/kubebake/internal/filemode"
)

// File is one entry of an image's layer.
type File struct {
	// Path is absolute and clean: "/bin/busybox".
	Path string
	// Mode holds the permission bits (setuid, setgid and sticky included) and the type:
	// fs.ModeDir, fs.ModeSymlink, or none for a regular file.
	Mode     fs.FileMode
	UID, GID int
	// Target is a symlink's target (relative targets also resolve in an unpacked copy).
	Target string
	// Open returns a regular file's content. When the reader has a Stat method (an *os.File)
	// its size is taken from there; otherwise the content is read into memory first.
	Open func() (io.ReadCloser, error)
}

// Config is the part of the OCI image config a kubebake image sets.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string // "KEY=value"
	WorkingDir string
	User       string
	// ExposedPorts are "port/proto" with proto tcp or udp: "53/udp".
	ExposedPorts []string
	Labels       map[string]string
}

// Spec is everything an image is built from.
type Spec struct {
	Files  []File
	Config Config
	// SourceDateEpoch is the lock's SOURCE_DATE_EPOCH: the image's "created" time and every
	// mtime in its layer. The wall clock is never used.
	SourceDateEpoch int64
}

// Platform is the one platform kubebake images are built for.
var Platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// defaultDirMode is given to parent folders that the file list does not name.
const defaultDirMode = fs.ModeDir | 0o755

// FromBytes returns an Open func that serves b.
func FromBytes(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// Build makes a single-layer linux/amd64 image with OCI media types. The layer is a tar with
// sorted entries, every parent folder present, mtimes fixed to SourceDateEpoch and no owner
// names, compressed by gzip with an empty header (no name, no timestamp); the config's created
// time and history are SourceDateEpoch too.
func Build(spec Spec) (v1.Image, error) {
	if spec.SourceDateEpoch < 0 {
		return nil, fmt.Errorf("image spec: SourceDateEpoch %d is negative; pass the lock's sourceDateEpoch", spec.SourceDateEpoch)
	}
	created := time.Unix(spec.SourceDateEpoch, 0).UTC()
	files, err := layerEntries(spec.Files)
	if err != nil {
		return nil, err
	}
	cfg, err := imageConfig(spec.Config)
	if err != nil {
		return nil, err
	}
	gz, diffID, err := writeLayer(files, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(FromBytes(gz), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	// go-containerregistry computes the diff ID again by decompressing; both must agree.
	if got, err := layer.DiffID(); err != nil || got != diffID {
		return nil, fmt.Errorf("image layer: diff ID %v (%v), want %v: the gzip stream does not round-trip", got, err, diffID)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Created:      v1.Time{Time: created},
		Architecture: Platform.Architecture,
		OS:           Platform.OS,
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	// mutate.Append fills rootfs.diff_ids and the history from the addendum.
	return mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "kubebake (artifacts/oci)"},
	})
}

func imageConfig(c Config) (v1.Config, error) {
	cfg := v1.Config{
		Entrypoint: c.Entrypoint,
		Cmd:        c.Cmd,
		Env:        c.Env,
		WorkingDir: c.WorkingDir,
		User:       c.User,
		Labels:     c.Labels,
	}
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return cfg, fmt.Errorf("image config: env %q is not KEY=value", e)
		}
	}
	if len(c.ExposedPorts) > 0 {
		cfg.ExposedPorts = map[string]struct{}{}
	}
	for _, p := range c.ExposedPorts {
		port, proto, _ := strings.Cut(p, "/")
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || (proto != "tcp" && proto != "udp") {
			return cfg, fmt.Errorf("image config: exposed port %q is not port/tcp or port/udp (e.g. 53/udp)", p)
		}
		cfg.ExposedPorts[p] = struct{}{}
	}
	return cfg, nil
}

// layerEntries checks the file list, adds missing parent folders and sorts by path (a parent
// sorts before its children because it is their prefix).
func layerEntries(in []File) ([]File, error) {
	byPath := map[string]File{}
	for _, f := range in {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("image file %q: the path must be absolute and clean, like /bin/busybox", f.Path)
		}
		if strings.HasPrefix(path.Base(f.Path), ".wh.") {
			return nil, fmt.Errorf("image file %s: names starting with .wh. are layer whiteouts", f.Path)
		}
		switch f.Mode.Type() {
		case 0:
			if f.Open == nil || f.Target != "" {
				return nil, fmt.Errorf("image file %s: a regular file needs Open and no Target", f.Path)
			}
		case fs.ModeDir:
			if f.Open != nil || f.Target != "" {
				return nil, fmt.Errorf("image file %s: a folder takes neither Open nor Target", f.Path)
			}
		case fs.ModeSymlink:
			if f.Target == "" || f.Open != nil {
				return nil, fmt.Errorf("image file %s: a symlink needs Target and no Open", f.Path)
			}
		default:
			return nil, fmt.Errorf("image file %s: type %v is not supported (regular file, folder or symlink)", f.Path, f.Mode.Type())
		}
		if _, dup := byPath[f.Path]; dup {
			return nil, fmt.Errorf("image file %s is listed twice", f.Path)
		}
		byPath[f.Path] = f
	}
	for p := range byPath {
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			d, ok := byPath[dir]
			if !ok {
				byPath[dir] = File{Path: dir, Mode: defaultDirMode}
			} else if !d.Mode.IsDir() {
				return nil, fmt.Errorf("image file %s: its parent %s is not a folder", p, dir)
			}
		}
	}
	out := make([]File, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// writeLayer returns the gzip-compressed layer tar and the sha256 of the uncompressed tar
// (the diff ID).
func writeLayer(files []File, mtime time.Time) ([]byte, v1.Hash, error) {
	var gzBuf bytes.Buffer
	// A zero gzip.Header writes MTIME 0, no file name and OS "unknown": nothing varies.
	zw, err := gzip.NewWriterLevel(&gzBuf, gzip.DefaultCompression)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	for _, f := range files {
		if err := writeEntry(tw, f, mtime); err != nil {
			return nil, v1.Hash{}, fmt.Errorf("image file %s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, v1.Hash{}, err
	}
	if err := zw.Close(); err != nil {
		return nil, v1.Hash{}, err
	}
	return gzBuf.Bytes(), v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", diff.Sum(nil))}, nil
}

func writeEntry(tw *tar.Writer, f File, mtime time.Time) error {
	h := &tar.Header{
		Name:    strings.TrimPrefix(f.Path, "/"),
		Mode:    int64(filemode.Unix(f.Mode)),
		Uid:     f.UID,
		Gid:     f.GID,
		ModTime: mtime,
	}
	switch f.Mode.Type() {
	case fs.ModeDir:
		h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		return tw.WriteHeader(h)
	case fs.ModeSymlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, f.Target
		return tw.WriteHeader(h)
	}
	h.Typeflag = tar.TypeReg
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	var content io.Reader = rc
	if st, ok := rc.(interface{ Stat() (fs.FileInfo, error) }); ok {
		fi, err := st.Stat()
		if err != nil {
			return err
		}
		h.Size = fi.Size()
	} else {
		data, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		h.Size, content = int64(len(data)), bytes.NewReader(data)
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.Copy(tw, content)
	if err != nil {
		return fmt.Errorf("reading content: %w (the file changed while it was read? %d of %d bytes)", err, n, h.Size)
	}
	if n != h.Size {
		return fmt.Errorf("read %d bytes, its size said %d: the file changed while it was read", n, h.Size)
	}
	return nil
}
