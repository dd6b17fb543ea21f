package aws

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts/aws/fakeaws"
)

// Each fault of the issue, a few times: the publish retries it, says so by name in the
// result's retry counts, and the snapshot still holds the image's exact bytes.
func TestFaultsAreRetried(t *testing.T) {
	for _, c := range []struct {
		name   string
		fault  fakeaws.Fault
		method string
		want   string // the retry count's name
	}{
		{"ec2 throttled", fakeaws.Fault{Op: "ec2:RegisterImage", Kind: fakeaws.Throttle, Times: 3}, "", "RequestLimitExceeded"},
		{"ec2 5xx", fakeaws.Fault{Op: "ec2:DescribeImages", Kind: fakeaws.ServerError, Times: 2}, "", "InternalError"},
		{"ec2 dropped", fakeaws.Fault{Op: "ec2:CreateTags", Kind: fakeaws.Drop, Times: 1}, "", "connection dropped"},
		{"ebs start throttled", fakeaws.Fault{Op: "ebs:StartSnapshot", Kind: fakeaws.Throttle, Times: 2}, "", "ThrottlingException"},
		{"ebs block throttled", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.Throttle, Times: 4, After: 2}, "", "ThrottlingException"},
		{"ebs block 5xx", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.ServerError, Times: 3}, "", "InternalServerException"},
		{"ebs block bad checksum", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.BadChecksum, Times: 3, After: 1}, "", "ValidationException"},
		{"ebs block dropped mid-upload", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.Drop, Times: 3, After: 3}, "", "connection dropped"},
		{"ebs block stalled", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.Stall, Delay: 3 * time.Second, Times: 1}, "", "timed out"},
		{"ebs snapshot not visible yet", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.NotFoundYet, Times: 4}, "", "ResourceNotFoundException"},
		{"ebs complete dropped", fakeaws.Fault{Op: "ebs:CompleteSnapshot", Kind: fakeaws.Drop, Times: 1}, "", "connection dropped"},
		{"s3 slow down", fakeaws.Fault{Op: "s3:UploadPart", Kind: fakeaws.Throttle, Times: 3}, MethodS3, "SlowDown"},
		{"s3 5xx", fakeaws.Fault{Op: "s3:CompleteMultipartUpload", Kind: fakeaws.ServerError, Times: 1}, MethodS3, "InternalError"},
		{"s3 dropped mid-part", fakeaws.Fault{Op: "s3:UploadPart", Kind: fakeaws.Drop, Times: 2}, MethodS3, "connection dropped"},
		{"import throttled", fakeaws.Fault{Op: "ec2:DescribeImportSnapshotTasks", Kind: fakeaws.Throttle, Times: 2}, MethodS3, "RequestLimitExceeded"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := startFake(t)
			retry := fastRetry
			retry.BlockTimeout = 300 * time.Millisecond
			s := session(t, srv, "", retry)
			b, _ := fakeBuild(t, t.TempDir(), 6, false)
			srv.Inject(c.fault)
			res := mustPublish(t, s, PublishRequest{Build: b, Method: c.method, Bucket: srv.Bucket, PartSize: 5 << 20, Workers: 2})
			if res.Retries[c.want] == 0 {
				t.Errorf("retries %v, want some %q", res.Retries, c.want)
			}
			checkSnapshotBytes(t, srv, home, res.Regions[0].SnapshotIDs[0], b)
			if len(srv.Images(home)) != 1 || len(srv.Snapshots(home)) != 1 {
				t.Errorf("%d images, %d snapshots; want one of each", len(srv.Images(home)), len(srv.Snapshots(home)))
			}
		})
	}
}

// Faults that do not go away: the publish fails with the AWS error code (or the failure's
// kind) in its message, after the bounded attempts, and leaves no snapshot or image.
func TestFaultsAreReported(t *testing.T) {
	for _, c := range []struct {
		name   string
		fault  fakeaws.Fault
		method string
		want   []string
	}{
		{"ebs throttled for good", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.Throttle, Times: -1},
			"", []string{"PutSnapshotBlock snap-", "ThrottlingException (throttled)", "gave up after 5 attempts", "fewer --workers"}},
		{"ebs block always corrupted", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.BadChecksum, Times: -1},
			"", []string{"ValidationException (block checksum rejected)", "gave up after 5 attempts"}},
		{"ebs connection always dropped", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.Drop, Times: -1},
			"", []string{"PutSnapshotBlock", "connection dropped", "gave up after 5 attempts"}},
		{"ec2 5xx for good", fakeaws.Fault{Op: "ec2:DescribeImages", Kind: fakeaws.ServerError, Times: -1},
			"", []string{"DescribeImages", "InternalError (server error)"}},
		{"s3 slow down for good", fakeaws.Fault{Op: "s3:UploadPart", Kind: fakeaws.Throttle, Times: -1},
			MethodS3, []string{"UploadPart", "SlowDown (throttled)", "gave up after 5 attempts"}},
		{"snapshot never visible", fakeaws.Fault{Op: "ebs:PutSnapshotBlock", Kind: fakeaws.NotFoundYet, Times: -1},
			"", []string{"ResourceNotFoundException (snapshot not visible yet)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := startFake(t)
			retry := fastRetry
			retry.NotFoundWindow = 50 * time.Millisecond
			s := session(t, srv, "", retry)
			b, _ := fakeBuild(t, t.TempDir(), 4, false)
			srv.Inject(c.fault)
			_, err := s.Publish(context.Background(), PublishRequest{Build: b, Method: c.method, Bucket: srv.Bucket, PartSize: 5 << 20, Workers: 2})
			if err == nil {
				t.Fatal("publish succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			var ae *Error
			if !errors.As(err, &ae) {
				t.Errorf("error %T is not an *Error", err)
			}
			srv.ClearFaults()
			checkClean(t, srv, home)
			if srv.ObjectCount(srv.Bucket) != 0 {
				t.Error("an object was left in the bucket")
			}
		})
	}
}

// A failed import task is reported with AWS's message, and its staging object removed.
func TestFailedImportTask(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 4, false)
	srv.FailImports("ClientError: Disk validation failed [Unsupported specified file format]")
	_, err := s.Publish(context.Background(), PublishRequest{Build: b, Method: MethodS3, Bucket: srv.Bucket, ImportRole: "kubebake-import"})
	var ie *ImportError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "Disk validation failed") || !strings.Contains(err.Error(), `"kubebake-import"`) ||
		!strings.Contains(err.Error(), "import-snap-") {
		t.Fatalf("publish: %v", err)
	}
	if srv.Calls("ec2:DescribeImportSnapshotTasks") < 3 {
		t.Errorf("the task was polled %d times; it walks through 3 states", srv.Calls("ec2:DescribeImportSnapshotTasks"))
	}
	checkClean(t, srv, home)
	if n := srv.ObjectCount(srv.Bucket); n != 0 {
		t.Errorf("%d objects left in the bucket", n)
	}
}

// Wrong credentials are reported at once, by each service's own code, not retried, and the
// secret never appears in the message.
func TestWrongCredentials(t *testing.T) {
	const wrong = "wrong-secret-key-0123456789"
	srv := startFake(t)
	b, _ := fakeBuild(t, t.TempDir(), 2, false)
	s := session(t, srv, wrong, fastRetry)
	_, err := s.Publish(context.Background(), PublishRequest{Build: b})
	if err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch (credentials rejected)") || !strings.Contains(err.Error(), "AWS_PROFILE") {
		t.Fatalf("publish with a wrong secret: %v", err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), fakeaws.SecretKey) {
		t.Error("the error shows a secret key")
	}
	if ae := (*Error)(nil); !errors.As(err, &ae) || ae.Attempts != 1 {
		t.Errorf("%d attempts: credential errors are not retried", ae.Attempts)
	}

	// Each service's refusal of an unknown key, through a call of each.
	cfg := fakeaws.Config(home, "")
	cfg.Credentials = staticCreds("AKIDUNKNOWN000000000", fakeaws.SecretKey)
	s2, err := NewSession(context.Background(), Options{Config: &cfg, Endpoints: endpoints(srv), Retry: fastRetry, Poll: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := s2.clients("")
	if _, err := s2.images(context.Background(), c); err == nil || !strings.Contains(err.Error(), "AuthFailure") {
		t.Errorf("EC2: %v", err)
	}
	if _, _, err := s2.uploadEBS(context.Background(), c, b, 1, func(Event) {}); err == nil || !strings.Contains(err.Error(), "UnrecognizedClientException") {
		t.Errorf("EBS: %v", err)
	}
	if _, _, err := s2.uploadS3(context.Background(), c, b, srv.Bucket, "", 0, 1, func(Event) {}); err == nil || !strings.Contains(err.Error(), "InvalidAccessKeyId") {
		t.Errorf("S3: %v", err)
	}
}

// Ctrl-C in the middle of the upload deletes the snapshot: nothing half-made remains.
func TestCancelMidUploadLeavesNothing(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 8, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv.OnCall = func(op string, n int) {
		if op == "ebs:PutSnapshotBlock" && n == 3 {
			cancel()
		}
	}
	_, err := s.Publish(ctx, PublishRequest{Build: b, Workers: 2})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("publish: %v", err)
	}
	checkClean(t, srv, home)

	// And cancelled while the AMI is pending: it is deregistered, the snapshot kept.
	srv.OnCall = func(op string, n int) {
		if op == "ec2:RegisterImage" {
			cancel()
		}
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	_, err = s.Publish(ctx, PublishRequest{Build: b})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("publish: %v", err)
	}
	if imgs := srv.Images(home); len(imgs) != 0 {
		t.Errorf("a pending AMI was left: %+v", imgs)
	}
}
