package oci

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// A recipe's own archives, rewritten, on Debian's containerd (what the nodes run): a docker
// save tarball (Docker schema 2 media types, kept as they are) and an OCI layout are imported
// by the first boot's command under their kubebake.local names at the locked digests, and the
// docker-typed one runs.
func TestContainerdImportsRewrittenArchives(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd; skipped under -short")
	}
	needRoot(t)
	needCommand(t, "containerd", "ctr", "runc")
	bb := busyboxBinary(t)
	ni, err := BusyboxImage(BusyboxInput{Binary: bb, Version: busyboxVersion(t, bb), SourceDateEpoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	dockerSave := filepath.Join(t.TempDir(), "hello.tar")
	if err := tarball.WriteToFile(dockerSave, name.MustParseReference("hello:1.0"), ni.Image); err != nil {
		t.Fatal(err)
	}
	layout := ociLayoutArchive(t, "registry.example.com/team/hi:2.0", tinyImage(t))
	var archives []Archive
	for _, c := range []struct{ src, name string }{{dockerSave, "hello"}, {layout, "hi"}} {
		a, err := RewriteArchive(c.src, filepath.Join(t.TempDir(), c.name+".tar"), c.name)
		if err != nil {
			t.Fatal(err)
		}
		archives = append(archives, a)
	}

	c := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // a hang guard only
	defer cancel()
	for _, a := range archives {
		if out, err := c.ctr(ctx, "images", "import", a.Path); err != nil {
			t.Fatalf("ctr images import %s: %v\n%s", a.Path, err, out)
		}
	}
	out, err := c.ctr(ctx, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 3 {
			listed[f[0]] = f[2]
		}
	}
	for _, a := range archives {
		if got := listed[a.Images[0].Ref]; got != a.Images[0].Digest {
			t.Errorf("ctr images ls: %s at %q, want %s\n%s", a.Images[0].Ref, got, a.Images[0].Digest, out)
		}
	}
	if len(listed) != len(archives) {
		t.Errorf("ctr images ls lists %d images, want %d:\n%s", len(listed), len(archives), out)
	}
	if !strings.Contains(out, "application/vnd.docker.distribution.manifest.v2+json") {
		t.Errorf("the docker save image lost its media type:\n%s", out)
	}
	out, err = c.ctr(ctx, "run", "--rm", "kubebake.local/hello:1.0", "hello-run", "sh", "-c", "echo ran from the docker save archive")
	if err != nil || strings.TrimSpace(out) != "ran from the docker save archive" {
		t.Errorf("ctr run kubebake.local/hello:1.0: %v\n%s", err, out)
	}
}
