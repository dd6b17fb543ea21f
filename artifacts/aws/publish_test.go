package aws

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts/aws/fakeaws"
)

// checkAMI checks what RegisterImage asked for and that the AMI and its snapshots carry the
// build's tags.
func checkAMI(t *testing.T, srv *fakeaws.Server, region string, r RegionResult, b *Build) fakeaws.Image {
	t.Helper()
	var img *fakeaws.Image
	for _, im := range srv.Images(region) {
		if im.ID == r.ImageID {
			img = &im
		}
	}
	if img == nil {
		t.Fatalf("%s: no image %s", region, r.ImageID)
	}
	if img.State != "available" || img.Architecture != "x86_64" || img.BootMode != "uefi" || !img.EnaSupport ||
		img.ImdsSupport != "v2.0" || img.VirtualizationType != "hvm" || img.RootDevice != "/dev/xvda" {
		t.Errorf("%s: image %s registered as %+v", region, img.ID, *img)
	}
	if len(img.Mappings) != 1 || img.Mappings[0].VolumeType != "gp3" || img.Mappings[0].VolumeSize != b.VolumeGiB() ||
		!img.Mappings[0].DeleteOnTermination || img.Mappings[0].Device != "/dev/xvda" {
		t.Errorf("%s: root device %+v, want a gp3 of %d GiB at /dev/xvda", region, img.Mappings, b.VolumeGiB())
	}
	want := b.Tags()
	for k, v := range want {
		if img.Tags[k] != v {
			t.Errorf("%s: image tag %s = %q, want %q", region, k, img.Tags[k], v)
		}
	}
	for _, sn := range srv.Snapshots(region) {
		if !slices.Contains(r.SnapshotIDs, sn.ID) {
			continue
		}
		for k, v := range want {
			if sn.Tags[k] != v {
				t.Errorf("%s: snapshot %s tag %s = %q, want %q", region, sn.ID, k, sn.Tags[k], v)
			}
		}
		if sn.Tags[TagUpload] != "complete" {
			t.Errorf("%s: snapshot %s %s = %q", region, sn.ID, TagUpload, sn.Tags[TagUpload])
		}
	}
	return *img
}

func TestPublishSmallImage(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, data := fakeBuild(t, t.TempDir(), 24, false)
	var events []Event
	var mu sync.Mutex // events come from the upload's workers and every region at once
	res := mustPublish(t, s, PublishRequest{Build: b, CopyRegions: []string{"eu-west-1", "ap-southeast-2"},
		Share: []string{"210987654321"}, DeprecateAfter: 90 * 24 * time.Hour, Workers: 4,
		Events: func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }})

	if res.Upload == nil || res.Upload.Method != "ebs-direct" || res.Upload.Blocks != 48 ||
		res.Upload.BlocksWritten != data || res.Upload.BlocksSkipped != 48-data {
		t.Fatalf("upload %+v, want 48 blocks, %d written", res.Upload, data)
	}
	if srv.Calls("ebs:PutSnapshotBlock") != data {
		t.Errorf("%d PutSnapshotBlock calls for %d data blocks", srv.Calls("ebs:PutSnapshotBlock"), data)
	}
	if len(res.Regions) != 3 {
		t.Fatalf("regions %+v", res.Regions)
	}
	for _, r := range res.Regions {
		if r.Error != "" || r.ImageID == "" || len(r.SnapshotIDs) != 1 || r.Reused {
			t.Errorf("region result %+v", r)
			continue
		}
		img := checkAMI(t, srv, r.Region, r, b)
		checkSnapshotBytes(t, srv, r.Region, r.SnapshotIDs[0], b)
		if !slices.Equal(img.LaunchUsers, []string{"210987654321"}) || img.Public {
			t.Errorf("%s: launch permissions %v public %v", r.Region, img.LaunchUsers, img.Public)
		}
		if img.DeprecateAt.IsZero() || r.DeprecateAt == "" {
			t.Errorf("%s: not deprecated", r.Region)
		}
		if r.Region != home && (img.SourceRegion != home || img.SourceImageID != res.Regions[0].ImageID) {
			t.Errorf("%s: copied from %s %s", r.Region, img.SourceRegion, img.SourceImageID)
		}
	}

	// publish-aws.json says the same as the result.
	data2, err := os.ReadFile(filepath.Join(b.Dir, ResultName))
	if err != nil {
		t.Fatal(err)
	}
	var onDisk PublishResult
	if err := json.Unmarshal(data2, &onDisk); err != nil {
		t.Fatal(err)
	}
	if onDisk.ImageSHA256 != b.SHA256 || len(onDisk.Regions) != 3 || onDisk.Regions[1].ImageID != res.Regions[1].ImageID {
		t.Errorf("%s: %s", ResultName, data2)
	}
	var sawUpload bool
	for _, e := range events {
		if e.Upload != nil && e.Upload.Done == e.Upload.Blocks && e.Upload.Skipped == 48-data {
			sawUpload = true
		}
	}
	if !sawUpload {
		t.Error("no progress event with the upload's final counts")
	}

	// Again: the same AMIs, nothing uploaded, nothing copied.
	puts, copies := srv.Calls("ebs:PutSnapshotBlock"), srv.Calls("ec2:CopyImage")
	again := mustPublish(t, s, PublishRequest{Build: b, CopyRegions: []string{"eu-west-1", "ap-southeast-2"}})
	if again.Upload != nil || srv.Calls("ebs:PutSnapshotBlock") != puts || srv.Calls("ebs:StartSnapshot") != 1 || srv.Calls("ec2:CopyImage") != copies {
		t.Errorf("second publish uploaded or copied again: %+v", again.Upload)
	}
	for i, r := range again.Regions {
		if !r.Reused || r.ImageID != res.Regions[i].ImageID {
			t.Errorf("second publish %s: %+v, want reuse of %s", r.Region, r, res.Regions[i].ImageID)
		}
	}
	for _, region := range []string{home, "eu-west-1", "ap-southeast-2"} {
		if n := len(srv.Images(region)); n != 1 {
			t.Errorf("%s has %d images after two publishes", region, n)
		}
	}
}

// An image that is not a whole number of 512 KiB blocks: the last block is padded with zeros
// and the snapshot reads back as the image followed by zeros.
func TestPublishPartialLastBlock(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 3, true)
	res := mustPublish(t, s, PublishRequest{Build: b})
	checkSnapshotBytes(t, srv, home, res.Regions[0].SnapshotIDs[0], b)
	if res.Upload.Blocks != 7 {
		t.Errorf("%d blocks, want 7", res.Upload.Blocks)
	}
}

func TestPublishS3Import(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 12, false)
	res := mustPublish(t, s, PublishRequest{Build: b, Method: MethodS3, Bucket: srv.Bucket, PartSize: 5 << 20})
	if res.Upload.Method != "s3-import" || srv.Calls("s3:UploadPart") != 3 || srv.Calls("ec2:ImportSnapshot") != 1 {
		t.Errorf("upload %+v, %d parts, %d imports", res.Upload, srv.Calls("s3:UploadPart"), srv.Calls("ec2:ImportSnapshot"))
	}
	checkAMI(t, srv, home, res.Regions[0], b)
	checkSnapshotBytes(t, srv, home, res.Regions[0].SnapshotIDs[0], b)
	if n := srv.ObjectCount(srv.Bucket); n != 0 {
		t.Errorf("%d objects left in the bucket after the import", n)
	}
}

// With EBS direct denied, auto falls back to S3 when a bucket is given, and says to give one
// when none is.
func TestPublishFallsBackToS3(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 4, false)
	deny := fakeaws.Fault{Op: "ebs:StartSnapshot", Kind: fakeaws.Fail, Times: -1, Status: 403, Code: "AccessDeniedException",
		Message: "User is not authorized to perform: ebs:StartSnapshot"}
	srv.Inject(deny)
	_, err := s.Publish(context.Background(), PublishRequest{Build: b})
	if err == nil || !strings.Contains(err.Error(), "AccessDeniedException") || !strings.Contains(err.Error(), "--bucket") {
		t.Fatalf("without a bucket: %v", err)
	}
	checkClean(t, srv, home)
	res := mustPublish(t, s, PublishRequest{Build: b, Bucket: srv.Bucket})
	if res.Upload.Method != "s3-import" {
		t.Errorf("method %s", res.Upload.Method)
	}
	checkSnapshotBytes(t, srv, home, res.Regions[0].SnapshotIDs[0], b)
}

// A run that registered nothing leaves its completed snapshot; the next run registers it
// without uploading again.
func TestPublishResumesFromCompletedSnapshot(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 4, false)
	srv.Inject(fakeaws.Fault{Op: "ec2:RegisterImage", Kind: fakeaws.Fail, Times: -1, Status: 400, Code: "InvalidParameterValue", Message: "simulated"})
	_, err := s.Publish(context.Background(), PublishRequest{Build: b})
	if err == nil || !strings.Contains(err.Error(), "next publish registers it") {
		t.Fatalf("publish with RegisterImage failing: %v", err)
	}
	if imgs := srv.Images(home); len(imgs) != 0 {
		t.Fatalf("an image was left: %+v", imgs)
	}
	snaps := srv.Snapshots(home)
	if len(snaps) != 1 || snaps[0].Status != "completed" {
		t.Fatalf("snapshots %+v", snaps)
	}
	srv.ClearFaults()
	puts := srv.Calls("ebs:PutSnapshotBlock")
	res := mustPublish(t, s, PublishRequest{Build: b})
	if res.Upload != nil || srv.Calls("ebs:PutSnapshotBlock") != puts || srv.Calls("ebs:StartSnapshot") != 1 {
		t.Errorf("resumed publish uploaded again")
	}
	if res.Regions[0].SnapshotIDs[0] != snaps[0].ID {
		t.Errorf("registered %v, want the earlier snapshot %s", res.Regions[0].SnapshotIDs, snaps[0].ID)
	}
}

// An upload cut off by an earlier run (a pending snapshot tagged in-progress) is deleted and
// the image uploaded anew.
func TestPublishDeletesAbandonedUpload(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 4, false)
	// Cancel the first run inside its upload, with its cleanup unable to reach EC2.
	ctx, cancel := context.WithCancel(context.Background())
	srv.OnCall = func(op string, n int) {
		if op == "ebs:PutSnapshotBlock" && n == 2 {
			srv.Inject(fakeaws.Fault{Op: "ec2:DeleteSnapshot", Kind: fakeaws.ServerError, Times: -1})
			cancel()
		}
	}
	_, err := s.Publish(ctx, PublishRequest{Build: b, Workers: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled publish: %v", err)
	}
	srv.OnCall = nil
	srv.ClearFaults()
	left := srv.Snapshots(home)
	if len(left) != 1 || left[0].Status != "pending" || left[0].Tags[TagUpload] != "in-progress" {
		t.Fatalf("want the abandoned snapshot left by the failed cleanup, have %+v", left)
	}
	res := mustPublish(t, s, PublishRequest{Build: b})
	for _, sn := range srv.Snapshots(home) {
		if sn.ID == left[0].ID {
			t.Errorf("the abandoned snapshot %s is still there", sn.ID)
		}
	}
	checkSnapshotBytes(t, srv, home, res.Regions[0].SnapshotIDs[0], b)
}

// An AMI that ends up failed is deregistered; the snapshot stays for the next run.
func TestPublishDeregistersFailedImage(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 4, false)
	srv.FailNextImage(home, "simulated: the snapshot could not be read")
	_, err := s.Publish(context.Background(), PublishRequest{Build: b})
	if err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("publish: %v", err)
	}
	if imgs := srv.Images(home); len(imgs) != 0 {
		t.Errorf("failed image left: %+v", imgs)
	}
	res := mustPublish(t, s, PublishRequest{Build: b})
	checkAMI(t, srv, home, res.Regions[0], b)
}

// A copy that fails in one region is reported and does not lose the others.
func TestPublishCopyFailureInOneRegion(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 4, false)
	srv.Inject(fakeaws.Fault{Op: "ec2:CopyImage", Region: "eu-west-1", Kind: fakeaws.Fail, Times: -1, Status: 400,
		Code: "ResourceLimitExceeded", Message: "You have reached your quota of AMIs"})
	srv.FailNextImage("ap-south-1", "simulated copy failure")
	res, err := s.Publish(context.Background(), PublishRequest{Build: b, CopyRegions: []string{"eu-west-1", "ap-south-1", "us-west-2"}})
	var re *RegionsError
	if !errors.As(err, &re) || len(re.Failed) != 2 || !strings.Contains(re.Failed["eu-west-1"], "ResourceLimitExceeded") {
		t.Fatalf("publish: %v", err)
	}
	byRegion := map[string]RegionResult{}
	for _, r := range res.Regions {
		byRegion[r.Region] = r
	}
	if byRegion[home].ImageID == "" || byRegion["us-west-2"].ImageID == "" || byRegion["us-west-2"].Error != "" {
		t.Errorf("the good regions: %+v", res.Regions)
	}
	checkAMI(t, srv, "us-west-2", byRegion["us-west-2"], b)
	checkClean(t, srv, "ap-south-1")
	onDisk, err := os.ReadFile(filepath.Join(b.Dir, ResultName))
	if err != nil || !strings.Contains(string(onDisk), "ResourceLimitExceeded") {
		t.Errorf("%s: %v\n%s", ResultName, err, onDisk)
	}
	// The next run copies only what is missing.
	srv.ClearFaults()
	copies := srv.Calls("ec2:CopyImage")
	res2 := mustPublish(t, s, PublishRequest{Build: b, CopyRegions: []string{"eu-west-1", "ap-south-1", "us-west-2"}})
	if srv.Calls("ec2:CopyImage")-copies != 2 || !res2.Regions[3].Reused {
		t.Errorf("second run: %d copies, %+v", srv.Calls("ec2:CopyImage")-copies, res2.Regions)
	}
}

func TestPublishRefusesBadRequests(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 1, false)
	for _, c := range []struct {
		req  PublishRequest
		want string
	}{
		{PublishRequest{Build: b, Method: "ftp"}, "--method"},
		{PublishRequest{Build: b, Method: MethodS3}, "--bucket"},
		{PublishRequest{Build: b, Share: []string{"12345"}}, "--share"},
		{PublishRequest{Build: b, CopyRegions: []string{home}}, "--regions"},
		{PublishRequest{Build: b, Workers: -1}, "--workers"},
	} {
		if _, err := s.Publish(context.Background(), c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.req, err, c.want)
		}
	}
	if srv.Calls("ec2:DescribeImages") != 0 {
		t.Error("a refused request reached EC2")
	}
}

// A raw image changed after the build is refused, and its snapshot not completed.
func TestPublishRefusesChangedImage(t *testing.T) {
	srv := startFake(t)
	s := session(t, srv, "", fastRetry)
	b, _ := fakeBuild(t, t.TempDir(), 2, false)
	f, _ := os.OpenFile(b.RawPath, os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 100)
	f.Close()
	for _, m := range []string{MethodEBS, MethodS3} {
		_, err := s.Publish(context.Background(), PublishRequest{Build: b, Method: m, Bucket: srv.Bucket})
		if err == nil || !strings.Contains(err.Error(), "changed after the build") {
			t.Errorf("%s: %v", m, err)
		}
	}
	checkClean(t, srv, home)
}
