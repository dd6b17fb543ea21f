package roles

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
)

// OpenFunc opens the blob of a lock artifact (from the cache).
type OpenFunc func(artifactName string) (io.ReadCloser, error)

// WriteTar writes the layer as a tar archive with the same bytes for the same layer and
// artifacts: entries in layer order, names relative to / ("usr/bin/kubelet", directories with
// a trailing "/"), every time mtime (truncated to seconds; use the lock's SOURCE_DATE_EPOCH),
// numeric owners without user or group names, and the USTAR format (GNU only for an entry
// USTAR cannot hold; never PAX records). Artifact blobs are checked against the lock's size
// and sha256 while they are copied.
func (l *Layer) WriteTar(w io.Writer, open OpenFunc, mtime time.Time) error {
	mtime = time.Unix(mtime.Unix(), 0).UTC()
	tw := tar.NewWriter(w)
	for _, f := range l.Files {
		if err := writeEntry(tw, f, open, mtime); err != nil {
			return fmt.Errorf("node layer %s: %w", f.Path, err)
		}
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, f File, open OpenFunc, mtime time.Time) error {
	hdr := &tar.Header{
		Name:    strings.TrimPrefix(f.Path, "/"),
		Mode:    int64(f.Mode.Perm()),
		Uid:     f.UID,
		Gid:     f.GID,
		ModTime: mtime,
	}
	switch f.Type {
	case TypeDir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		return writeHeader(tw, hdr)
	case TypeSymlink:
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = f.Target
		return writeHeader(tw, hdr)
	case TypeFile:
	default:
		return fmt.Errorf("unknown entry type %q", f.Type)
	}
	hdr.Typeflag = tar.TypeReg
	if f.Artifact == "" {
		hdr.Size = int64(len(f.Content))
		if err := writeHeader(tw, hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.Content)
		return err
	}

	if open == nil {
		return fmt.Errorf("artifact %s: no way to open artifacts", f.Artifact)
	}
	if f.SHA256 == "" {
		return fmt.Errorf("artifact %s has no sha256: the layer was rendered without a lock; run \"kubebake lock\"", f.Artifact)
	}
	rc, err := open(f.Artifact)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", f.Artifact, err)
	}
	defer rc.Close()
	var r io.Reader = rc
	size := f.Size
	hdr.Size = size
	if err := writeHeader(tw, hdr); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(r, size))
	if err != nil {
		return fmt.Errorf("artifact %s: %w", f.Artifact, err)
	}
	if n != size {
		return fmt.Errorf("artifact %s: blob has %d bytes, the lock says %d; run \"kubebake fetch\" to repair the cache", f.Artifact, n, size)
	}
	if extra, _ := r.Read(make([]byte, 1)); extra > 0 {
		return fmt.Errorf("artifact %s: blob is longer than the %d bytes the lock says; run \"kubebake fetch\" to repair the cache", f.Artifact, size)
	}
	if f.SHA256 != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
			return fmt.Errorf("artifact %s: blob sha256 %s, the lock says %s; run \"kubebake fetch\" to repair the cache", f.Artifact, got, f.SHA256)
		}
	}
	return nil
}

// writeHeader writes USTAR, or GNU when USTAR cannot hold the entry (a long name or link).
func writeHeader(tw *tar.Writer, hdr *tar.Header) error {
	hdr.Format = tar.FormatUSTAR
	if err := tw.WriteHeader(hdr); err == nil {
		return nil
	}
	hdr.Format = tar.FormatGNU
	return tw.WriteHeader(hdr)
}
