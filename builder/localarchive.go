package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/recipes"
)

// A hermetic rootfs is made from the lock's .deb files in the cache, never from the mirror:
// they are laid out as a one-suite Debian archive (pool/ and dists/<release>/main) in the
// build's private folder and served on 127.0.0.1 for the time mmdebstrap runs. The archive
// holds exactly the pinned set, so apt has nothing else to choose from. Its Release is not
// signed: every file in it was checked against the lock's sha256 (which came from the
// mirror's signed indexes) when it entered the cache, and the sources line says
// [trusted=yes]. The image's own sources.list is written by the builder afterwards.

// localDeb is one pinned package and its file in the cache.
type localDeb struct {
	recipes.LockedPackage
	Path string
}

// writeLocalArchive lays the archive out in dir. The Packages stanzas are each .deb's own
// control fields (dpkg-deb -f) with the pool path, size and sha256 of the lock.
func writeLocalArchive(ctx context.Context, dir, release, arch string, epoch int64, debs []localDeb) error {
	sorted := append([]localDeb(nil), debs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	stanzas := make([][]byte, len(sorted))
	errs := make([]error, len(sorted))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, d := range sorted {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			stanzas[i], errs[i] = packageStanza(ctx, d)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, d := range sorted {
		dst := filepath.Join(dir, filepath.FromSlash(d.URL))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(d.Path, dst); err != nil {
			return err
		}
	}
	packages := bytes.Join(stanzas, []byte("\n"))
	index := "main/binary-" + arch + "/Packages"
	dists := filepath.Join(dir, "dists", release)
	if err := os.MkdirAll(filepath.Join(dists, "main", "binary-"+arch), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dists, filepath.FromSlash(index)), packages, 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(packages)
	// apt warns about a Release without a Date; the lock's epoch keeps the file reproducible.
	date := time.Unix(epoch, 0).UTC().Format(time.RFC1123)
	rel := fmt.Sprintf("Origin: kubebake\nLabel: kubebake lock\nSuite: %s\nCodename: %s\nDate: %s\nArchitectures: %s\nComponents: main\nSHA256:\n %s %d %s\n",
		release, release, date, arch, hex.EncodeToString(sum[:]), len(packages), index)
	return os.WriteFile(filepath.Join(dists, "Release"), []byte(rel), 0o644)
}

// packageStanza is the Packages entry of d: its control fields, then where it is.
func packageStanza(ctx context.Context, d localDeb) ([]byte, error) {
	out, err := run.Command("dpkg-deb", "-f", d.Path).Output(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the control fields of %s %s: %w", d.Name, d.Version, err)
	}
	var b bytes.Buffer
	b.Write(bytes.TrimRight(out, "\n"))
	fmt.Fprintf(&b, "\nFilename: %s\nSize: %s\nSHA256: %s\n", d.URL, strconv.FormatInt(d.Size, 10), d.SHA256)
	if !strings.HasPrefix(string(out), "Package: ") {
		return nil, fmt.Errorf("%s %s: %s is not a Debian package (no Package field)", d.Name, d.Version, d.Path)
	}
	return b.Bytes(), nil
}

// serveLocalArchive serves dir on a free port of 127.0.0.1 until stop is called, and
// returns the archive's URL.
func serveLocalArchive(dir string) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("serving the package set to mmdebstrap: %w", err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}
