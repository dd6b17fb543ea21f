package aws

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"
)

// DefaultPartSize is the S3 part size; larger images get larger parts (S3 allows 10,000).
const DefaultPartSize = 64 << 20

// maxPartWorkers bounds the parts in flight: each holds a part's bytes in the SDK's signer.
const maxPartWorkers = 8

// ImportError is an import task that EC2 gave up on.
type ImportError struct {
	TaskID, Status, Message, Bucket, Key, Role string
}

func (e *ImportError) Error() string {
	return fmt.Sprintf("import task %s failed (%s): %s; check that the role %q (--import-role) may read s3://%s/%s and that the image is a raw disk",
		e.TaskID, e.Status, e.Message, e.Role, e.Bucket, e.Key)
}

// uploadS3 is the fallback path: a multipart upload of the raw image to s3://bucket, then
// ImportSnapshot, polled until it completes. The object is deleted afterwards, whatever the
// outcome; a multipart upload that fails is aborted.
func (s *Session) uploadS3(ctx context.Context, c *clients, b *Build, bucket, role string, partSize int64, workers int, emit func(Event)) (snap string, st UploadStats, err error) {
	if role == "" {
		role = "vmimport"
	}
	if partSize <= 0 {
		partSize = DefaultPartSize
	}
	if least := (b.Size + 9999) / 10000; partSize < least {
		partSize = (least + 1<<20 - 1) &^ (1<<20 - 1)
	}
	workers = max(1, min(workers, maxPartWorkers))
	if err := checkSHA256(ctx, b); err != nil {
		return "", st, err
	}
	key := fmt.Sprintf("kubebake/%s/%s.raw", b.Recipe, b.SHA256)
	started := time.Now()
	emit(Event{Stage: "upload", Region: c.region, Message: fmt.Sprintf("s3://%s/%s in parts of %d MiB", bucket, key, partSize>>20)})

	var mp *s3.CreateMultipartUploadOutput
	err = s.call(ctx, "s3:CreateMultipartUpload", bucket+"/"+key, callOpts{}, func(ctx context.Context) error {
		var err error
		mp, err = c.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
		return err
	})
	if err != nil {
		return "", st, err
	}
	uploaded := false
	defer func() {
		// With a context of its own: Ctrl-C must not leave a multipart upload or the object.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if !uploaded {
			cerr := s.call(cctx, "s3:AbortMultipartUpload", bucket+"/"+key, callOpts{}, func(ctx context.Context) error {
				_, err := c.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: mp.UploadId})
				return err
			})
			if cerr != nil {
				err = fmt.Errorf("%w (and aborting the multipart upload failed: %v)", err, cerr)
			}
			return
		}
		cerr := s.call(cctx, "s3:DeleteObject", bucket+"/"+key, callOpts{}, func(ctx context.Context) error {
			_, err := c.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key})
			return err
		})
		if cerr != nil {
			if err == nil {
				err = fmt.Errorf("deleting s3://%s/%s after the import: %w", bucket, key, cerr)
			} else {
				err = fmt.Errorf("%w (and deleting s3://%s/%s failed: %v)", err, bucket, key, cerr)
			}
		}
	}()

	f, err := os.Open(b.RawPath)
	if err != nil {
		return "", st, err
	}
	defer f.Close()
	nparts := int((b.Size + partSize - 1) / partSize)
	parts := make([]s3types.CompletedPart, nparts)
	var mu sync.Mutex
	var sent int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i := range nparts {
		g.Go(func() error {
			off := int64(i) * partSize
			n := min(partSize, b.Size-off)
			sum := md5.New()
			if _, err := io.Copy(sum, io.NewSectionReader(f, off, n)); err != nil {
				return err
			}
			md := base64.StdEncoding.EncodeToString(sum.Sum(nil))
			num := int32(i + 1)
			var out *s3.UploadPartOutput
			err := s.call(gctx, "s3:UploadPart", fmt.Sprintf("%s/%s part %d", bucket, key, num), callOpts{timeout: s.retry.PartTimeout}, func(ctx context.Context) error {
				var err error
				out, err = c.s3.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &key, UploadId: mp.UploadId,
					PartNumber: &num, Body: io.NewSectionReader(f, off, n), ContentLength: &n, ContentMD5: &md})
				return err
			})
			if err != nil {
				return err
			}
			mu.Lock()
			parts[i] = s3types.CompletedPart{ETag: out.ETag, PartNumber: &num}
			sent += n
			p := UploadProgress{Blocks: nparts, Done: int(sent / partSize), Written: int(sent / partSize), BytesSent: sent, Elapsed: time.Since(started)}
			mu.Unlock()
			emit(Event{Stage: "upload", Region: c.region, Upload: &p})
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", st, err
	}
	sort.Slice(parts, func(i, j int) bool { return *parts[i].PartNumber < *parts[j].PartNumber })
	err = s.call(ctx, "s3:CompleteMultipartUpload", bucket+"/"+key, callOpts{}, func(ctx context.Context) error {
		_, err := c.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: &key,
			UploadId: mp.UploadId, MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts}})
		return err
	})
	if err != nil {
		return "", st, err
	}
	uploaded = true
	elapsed := time.Since(started)
	st = UploadStats{Method: "s3-import", ImageBytes: b.Size, UploadedBytes: b.Size, Workers: workers,
		Seconds: elapsed.Seconds(), MiBPerSecond: float64(b.Size) / (1 << 20) / elapsed.Seconds()}

	snap, err = s.importSnapshot(ctx, c, b, bucket, key, role, emit)
	if err != nil {
		return "", st, err
	}
	st.SnapshotID = snap
	st.Seconds = time.Since(started).Seconds()
	return snap, st, nil
}

// importSnapshot runs ImportSnapshot on s3://bucket/key and waits for the snapshot.
func (s *Session) importSnapshot(ctx context.Context, c *clients, b *Build, bucket, key, role string, emit func(Event)) (string, error) {
	token := uuid.NewString()
	var task *ec2.ImportSnapshotOutput
	err := s.call(ctx, "ec2:ImportSnapshot", bucket+"/"+key, callOpts{}, func(ctx context.Context) error {
		var err error
		task, err = c.ec2.ImportSnapshot(ctx, &ec2.ImportSnapshotInput{
			ClientToken: sdkaws.String(token), Description: sdkaws.String(b.Description()), RoleName: sdkaws.String(role),
			DiskContainer: &ec2types.SnapshotDiskContainer{Format: sdkaws.String("RAW"), Description: sdkaws.String(b.AMIName()),
				UserBucket: &ec2types.UserBucket{S3Bucket: &bucket, S3Key: &key}},
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImportSnapshotTask, Tags: ec2Tags(b.Tags())}},
		})
		return err
	})
	if err != nil {
		return "", err
	}
	id := sdkaws.ToString(task.ImportTaskId)
	emit(Event{Stage: "import", Region: c.region, Message: "import task " + id})
	var snap, last string
	err = s.waitFor(ctx, "import task "+id, func(ctx context.Context) (bool, error) {
		var out *ec2.DescribeImportSnapshotTasksOutput
		err := s.call(ctx, "ec2:DescribeImportSnapshotTasks", id, callOpts{}, func(ctx context.Context) error {
			var err error
			out, err = c.ec2.DescribeImportSnapshotTasks(ctx, &ec2.DescribeImportSnapshotTasksInput{ImportTaskIds: []string{id}})
			return err
		})
		if err != nil {
			return false, err
		}
		if len(out.ImportSnapshotTasks) != 1 || out.ImportSnapshotTasks[0].SnapshotTaskDetail == nil {
			return false, fmt.Errorf("import task %s: DescribeImportSnapshotTasks did not return it", id)
		}
		d := out.ImportSnapshotTasks[0].SnapshotTaskDetail
		status, msg := sdkaws.ToString(d.Status), sdkaws.ToString(d.StatusMessage)
		if now := status + " " + msg + " " + sdkaws.ToString(d.Progress); now != last {
			last = now
			emit(Event{Stage: "import", Region: c.region, Message: fmt.Sprintf("%s: %s %s %s%%", id, status, msg, sdkaws.ToString(d.Progress))})
		}
		switch status {
		case "completed":
			snap = sdkaws.ToString(d.SnapshotId)
			return true, nil
		case "deleting", "deleted", "error":
			return false, &ImportError{TaskID: id, Status: status, Message: msg, Bucket: bucket, Key: key, Role: role}
		}
		return false, nil
	})
	if err != nil {
		return "", err
	}
	tags := b.Tags()
	tags[TagUpload] = "complete"
	if err := s.tag(ctx, c, []string{snap}, tags); err != nil {
		return snap, err
	}
	return snap, s.waitSnapshot(ctx, c, snap)
}

// checkSHA256 reads the whole raw image and compares its sha256 with the manifest's.
func checkSHA256(ctx context.Context, b *Build) error {
	f, err := os.Open(b.RawPath)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := f.Read(buf)
		h.Write(buf[:n])
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SHA256 {
		return fmt.Errorf("%s has sha256 %s, manifest.json says %s: the image changed after the build; rebuild it", b.RawPath, got, b.SHA256)
	}
	return nil
}
