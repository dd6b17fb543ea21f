package aws

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kubebake/kubebake/artifacts/aws/fakeaws"
	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
)

const home = "us-east-1"

// TestMain keeps every test away from real AWS: no shared config or credentials files, no
// IMDS, no endpoint or profile from the environment. The clients reach only the fake
// servers on 127.0.0.1 (through fakeaws.HTTPClient, which dials nothing else).
func TestMain(m *testing.M) {
	for _, k := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2",
		"AWS_ENDPOINT_URL_EBS", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		os.Unsetenv(k)
	}
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Setenv("AWS_CONFIG_FILE", os.DevNull)
	os.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	os.Exit(m.Run())
}

// fastRetry keeps fault tests quick: short backoff, short block deadline.
var fastRetry = RetryPolicy{Attempts: 5, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond,
	Timeout: 10 * time.Second, BlockTimeout: 5 * time.Second, NotFoundWindow: 10 * time.Second}

func staticCreds(key, secret string) credentials.StaticCredentialsProvider {
	return credentials.NewStaticCredentialsProvider(key, secret, "")
}

func startFake(t testing.TB) *fakeaws.Server {
	t.Helper()
	srv, err := fakeaws.New(fakeaws.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func endpoints(srv *fakeaws.Server) Endpoints {
	return Endpoints{EC2: srv.EC2.URL, EBS: srv.EBS.URL, S3: srv.S3.URL}
}

// session is a Session on the fake with its credentials (or a wrong secret).
func session(t testing.TB, srv *fakeaws.Server, secret string, retry RetryPolicy) *Session {
	t.Helper()
	cfg := fakeaws.Config(home, secret)
	s, err := NewSession(context.Background(), Options{Config: &cfg, Endpoints: endpoints(srv), Retry: retry, Poll: time.Millisecond, WaitTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeBuild writes a small build output folder: a raw image of mib MiB (a whole number of
// blocks unless odd is set) with data blocks, all-zero data blocks and holes, and its
// manifest. It returns the build and how many blocks hold data.
func fakeBuild(t testing.TB, dir string, mib int, odd bool) (*Build, int) {
	t.Helper()
	size := int64(mib) << 20
	if odd {
		size += 4096 + 512
	}
	raw := filepath.Join(dir, "tiny.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	data := 0
	buf := make([]byte, BlockSize)
	nblocks := int((size + BlockSize - 1) / BlockSize)
	for i := range nblocks {
		off := int64(i) * BlockSize
		n := min(int64(BlockSize), size-off)
		switch i % 4 {
		case 0, 3: // data
			for j := range buf[:n] {
				buf[j] = byte(rng.Uint32())
			}
			buf[0] = 1 // never all zero
			data++
		case 1: // zeros written out: read, found zero, skipped
			clear(buf)
		case 2: // a hole: never read
			continue
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	sum := fileSHA256(t, raw)
	m := &manifest.Manifest{APIVersion: manifest.APIVersion, Kind: manifest.Kind,
		Recipe:   &recipes.Recipe{Name: "tiny", Kubernetes: recipes.Kubernetes{Version: "1.35"}},
		LockHash: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", SourceDateEpoch: 1795996800,
		Image:     manifest.ImageInfo{Size: size},
		Artifacts: []recipes.LockedArtifact{{Name: "kubelet", Kind: "binary", Version: "v1.35.4"}},
		Outputs:   []manifest.OutputFile{{Name: "tiny.raw", Format: "raw", Size: size, SHA256: sum}},
		Build:     &manifest.BuildInfo{Kubebake: "test"}}
	if err := manifest.Write(filepath.Join(dir, manifest.Name), m); err != nil {
		t.Fatal(err)
	}
	b, err := ReadBuild(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b, data
}

func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := f.WriteTo(h); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkSnapshotBytes compares what the fake assembled for a snapshot with the image.
func checkSnapshotBytes(t testing.TB, srv *fakeaws.Server, region, snap string, b *Build) {
	t.Helper()
	got, err := srv.SnapshotSHA256(region, snap, b.Size)
	if err != nil {
		t.Fatal(err)
	}
	if got != b.SHA256 {
		t.Fatalf("snapshot %s in %s holds sha256 %s, the image is %s", snap, region, got, b.SHA256)
	}
}

// checkClean fails if a region holds any image or snapshot.
func checkClean(t testing.TB, srv *fakeaws.Server, region string) {
	t.Helper()
	if imgs := srv.Images(region); len(imgs) > 0 {
		t.Errorf("%s: %d image(s) left behind: %+v", region, len(imgs), imgs[0])
	}
	if snaps := srv.Snapshots(region); len(snaps) > 0 {
		t.Errorf("%s: %d snapshot(s) left behind, the first %s is %s", region, len(snaps), snaps[0].ID, snaps[0].Status)
	}
}

func mustPublish(t testing.TB, s *Session, req PublishRequest) *PublishResult {
	t.Helper()
	res, err := s.Publish(context.Background(), req)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return res
}
