package builder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/artifacts/aws/fakeaws"
	"github.com/kubebake/kubebake/artifacts/remotecache"
)

// Two runners with caches of their own behind one bucket (the fake S3 on 127.0.0.1): the first
// builds the rootfs (a fake mmdebstrap) and uploads it; the second gets it from the bucket,
// checked against its recorded sha256, without running mmdebstrap, and keeps it (with its
// spec) where a local build would have left it.
func TestRootfsTarballFromTheSharedCache(t *testing.T) {
	srv := fakeaws.StartS3(t, "kubebake-cache")
	runner := func() *artifacts.Cache {
		loc, _ := remotecache.ParseLocation("s3://kubebake-cache/ci")
		cfg := fakeaws.Config("eu-west-1", "")
		r, err := remotecache.New(context.Background(), loc, remotecache.Options{Endpoint: srv.S3.URL, Config: &cfg})
		if err != nil {
			t.Fatal(err)
		}
		c, err := artifacts.OpenCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c.UseRemote(context.Background(), r)
		return c
	}

	bin, out := t.TempDir(), t.TempDir()
	script := `#!/bin/sh
echo run >> "$KB_FAKE_OUT/runs"
for a in "$@"; do
  case "$a" in */rootfs.tar) printf 'the rootfs of a=1' > "$a";; esac
done
`
	if err := os.WriteFile(filepath.Join(bin, "mmdebstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("KB_FAKE_OUT", out)
	runs := func() int {
		b, _ := os.ReadFile(filepath.Join(out, "runs"))
		return strings.Count(string(b), "run")
	}
	spec := RootfsSpec{Release: "bookworm", Variant: "minbase", Arch: "amd64", Suites: []string{"bookworm"}, Components: []string{"main"},
		Packages: []string{"a=1"}, Mirror: "http://127.0.0.1:9/debian"}
	ctx := context.Background()

	a := runner()
	tarA, cached, err := rootfsTarball(ctx, a, spec, nil, nil)
	if err != nil || cached || runs() != 1 {
		t.Fatalf("first runner: cached=%v runs=%d err=%v", cached, runs(), err)
	}
	if !srv.ObjectExists("kubebake-cache", "ci/rootfs/"+spec.Key()+".tar") {
		t.Fatal("the built tarball was not uploaded")
	}

	b := runner()
	tarB, cached, err := rootfsTarball(ctx, b, spec, nil, nil)
	if err != nil || !cached || runs() != 1 {
		t.Fatalf("second runner: cached=%v, mmdebstrap runs=%d, err=%v", cached, runs(), err)
	}
	if !strings.HasPrefix(tarB, b.Dir()) || filepath.Base(tarB) != filepath.Base(tarA) {
		t.Errorf("second runner's tarball at %s, the first's at %s", tarB, tarA)
	}
	dataA, _ := os.ReadFile(tarA)
	dataB, _ := os.ReadFile(tarB)
	if string(dataB) != string(dataA) {
		t.Errorf("second runner's tarball holds %q, the first's %q", dataB, dataA)
	}
	if _, err := os.Stat(strings.TrimSuffix(tarB, ".tar") + ".json"); err != nil {
		t.Errorf("no spec beside the downloaded tarball: %v", err)
	}
	if st := b.RemoteStats(); st.Downloaded != 1 || st.Uploaded != 0 {
		t.Errorf("second runner's stats: %+v", st)
	}
}
