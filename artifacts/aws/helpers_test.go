package aws

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kubebake/kubebake/artifacts/aws/fakeaws"
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

// fakeBuild writes a small build output folder (fakeaws.WriteBuild) of mib MiB, or a bit
// more when odd (not a whole number of blocks), and returns it and how many blocks hold data.
func fakeBuild(t testing.TB, dir string, mib int, odd bool) (*Build, int) {
	t.Helper()
	size := int64(mib) << 20
	if odd {
		size += 4096 + 512
	}
	data, err := fakeaws.WriteBuild(dir, size)
	if err != nil {
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
