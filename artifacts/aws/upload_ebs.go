package aws

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// BlockSize is the EBS direct API block: every PutSnapshotBlock carries exactly this much.
const BlockSize = 512 * 1024

// DefaultWorkers is how many blocks are in flight at once. EBS direct accepts up to 1,000
// PutSnapshotBlock requests per second per snapshot; 32 x 512 KiB in flight keeps a fast
// link busy with 16 MiB of buffers.
const DefaultWorkers = 32

// snapshotTimeout is StartSnapshot's Timeout (minutes): a snapshot not completed by then
// goes to the error state on its own, so an abandoned upload does not stay pending forever.
const snapshotTimeout = 180

// UploadProgress is where an upload stands.
type UploadProgress struct {
	Blocks    int           `json:"blocks"`    // blocks in the image
	Done      int           `json:"done"`      // blocks handled: written or skipped
	Written   int           `json:"written"`   // blocks sent
	Skipped   int           `json:"skipped"`   // all-zero blocks, not sent
	BytesSent int64         `json:"bytesSent"` // bytes of the blocks sent
	Elapsed   time.Duration `json:"-"`
}

// MiBPerSecond is the rate of the bytes sent.
func (u UploadProgress) MiBPerSecond() float64 {
	if u.Elapsed <= 0 {
		return 0
	}
	return float64(u.BytesSent) / (1 << 20) / u.Elapsed.Seconds()
}

// UploadStats is the upload's summary in the publish result.
type UploadStats struct {
	Method        string  `json:"method"` // ebs-direct or s3-import
	SnapshotID    string  `json:"snapshotId"`
	ImageBytes    int64   `json:"imageBytes"`
	UploadedBytes int64   `json:"uploadedBytes"`
	Blocks        int     `json:"blocks,omitempty"`
	BlocksWritten int     `json:"blocksWritten,omitempty"`
	BlocksSkipped int     `json:"blocksSkipped,omitempty"`
	Workers       int     `json:"workers"`
	Seconds       float64 `json:"seconds"`
	MiBPerSecond  float64 `json:"mibPerSecond"`
}

// SkippedShare is the share of blocks not sent because they were all zeros.
func (u UploadStats) SkippedShare() float64 {
	if u.Blocks == 0 {
		return 0
	}
	return float64(u.BlocksSkipped) / float64(u.Blocks)
}

type blockJob struct {
	index int32
	buf   []byte
}

// uploadEBS writes the raw image into a new snapshot with the EBS direct APIs: StartSnapshot,
// one PutSnapshotBlock per block that is not all zeros (workers at once), CompleteSnapshot
// with the LINEAR checksum (the SHA-256 of the blocks' SHA-256s in index order). While
// reading, it hashes the whole file and refuses to complete a snapshot of bytes that are not
// the manifest's. On any failure, and on cancellation, it deletes the snapshot it started.
func (s *Session) uploadEBS(ctx context.Context, c *clients, b *Build, workers int, emit func(Event)) (snap string, st UploadStats, err error) {
	if workers <= 0 {
		workers = DefaultWorkers
	}
	f, err := os.Open(b.RawPath)
	if err != nil {
		return "", st, err
	}
	defer f.Close()
	nblocks := int((b.Size + BlockSize - 1) / BlockSize)
	tags := b.Tags()
	tags[TagUpload] = "in-progress"
	var ebsTags []ebstypes.Tag
	for _, k := range sortedKeys(tags) {
		ebsTags = append(ebsTags, ebstypes.Tag{Key: sdkaws.String(k), Value: sdkaws.String(tags[k])})
	}
	token := uuid.NewString() // the same on every attempt: a retried StartSnapshot makes one snapshot
	var started *ebs.StartSnapshotOutput
	err = s.call(ctx, "ebs:StartSnapshot", b.AMIName(), callOpts{}, func(ctx context.Context) error {
		var err error
		started, err = c.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{
			VolumeSize: sdkaws.Int64(int64(b.VolumeGiB())), Tags: ebsTags, Description: sdkaws.String(b.Description()),
			ClientToken: sdkaws.String(token), Timeout: sdkaws.Int32(snapshotTimeout),
		})
		return err
	})
	if err != nil {
		return "", st, err
	}
	snap = sdkaws.ToString(started.SnapshotId)
	startedAt := time.Now()
	emit(Event{Stage: "upload", Region: c.region, Message: fmt.Sprintf("snapshot %s: %d blocks of 512 KiB, %d workers", snap, nblocks, workers)})
	defer func() {
		if err != nil {
			err = s.discardSnapshot(ctx, c, snap, err)
		}
	}()

	digests := make([][32]byte, nblocks)
	written := make([]bool, nblocks)
	var prog struct {
		sync.Mutex
		UploadProgress
	}
	prog.Blocks = nblocks
	report := func(wrote bool, n int) {
		prog.Lock()
		defer prog.Unlock()
		prog.Done++
		if wrote {
			prog.Written++
			prog.BytesSent += int64(n)
		} else {
			prog.Skipped++
		}
		prog.Elapsed = time.Since(startedAt)
		p := prog.UploadProgress
		emit(Event{Stage: "upload", Region: c.region, Upload: &p})
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan blockJob)
	pool := make(chan []byte, workers+2)
	for range workers + 2 {
		pool <- make([]byte, BlockSize)
	}
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		if firstErr.CompareAndSwap(nil, &err) {
			cancel(err)
		}
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				sum := sha256.Sum256(j.buf)
				if err := s.putBlock(ctx, c, snap, j, sum, nblocks, startedAt, &prog.Mutex, &prog.Done); err != nil {
					fail(err)
				} else {
					digests[j.index], written[j.index] = sum, true
					report(true, len(j.buf))
				}
				pool <- j.buf
			}
		}()
	}
	whole := sha256.New()
	readErr := s.readBlocks(ctx, f, b.Size, whole, pool, jobs, func() { report(false, 0) })
	close(jobs)
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return snap, st, *p
	}
	if readErr != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return snap, st, cause
		}
		return snap, st, readErr
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != b.SHA256 {
		return snap, st, fmt.Errorf("%s has sha256 %s, manifest.json says %s: the image changed after the build; rebuild it", b.RawPath, got, b.SHA256)
	}

	linear := sha256.New()
	count := 0
	for i := range digests {
		if written[i] {
			linear.Write(digests[i][:])
			count++
		}
	}
	sum := base64.StdEncoding.EncodeToString(linear.Sum(nil))
	var done *ebs.CompleteSnapshotOutput
	err = s.call(ctx, "ebs:CompleteSnapshot", snap, callOpts{}, func(ctx context.Context) error {
		var err error
		done, err = c.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
			SnapshotId: sdkaws.String(snap), ChangedBlocksCount: sdkaws.Int32(int32(count)),
			Checksum: sdkaws.String(sum), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
			ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear,
		})
		return err
	})
	if err != nil {
		return snap, st, err
	}
	if done.Status == ebstypes.StatusError {
		return snap, st, fmt.Errorf("CompleteSnapshot %s: EBS put the snapshot in the error state", snap)
	}
	if err := s.tag(ctx, c, []string{snap}, map[string]string{TagUpload: "complete"}); err != nil {
		return snap, st, err
	}
	prog.Lock()
	p := prog.UploadProgress
	prog.Unlock()
	p.Elapsed = time.Since(startedAt)
	st = UploadStats{Method: "ebs-direct", SnapshotID: snap, ImageBytes: b.Size, UploadedBytes: p.BytesSent,
		Blocks: p.Blocks, BlocksWritten: p.Written, BlocksSkipped: p.Skipped, Workers: workers,
		Seconds: p.Elapsed.Seconds(), MiBPerSecond: p.MiBPerSecond()}
	if err := s.waitSnapshot(ctx, c, snap); err != nil {
		return snap, st, err
	}
	return snap, st, nil
}

// putBlock sends one block, retried as call retries, with the "snapshot not visible yet"
// window open for NotFoundWindow after StartSnapshot. A block EBS rejects for its checksum
// is sent again as it is: the bytes in memory were hashed once; what broke was the transfer.
func (s *Session) putBlock(ctx context.Context, c *clients, snap string, j blockJob, sum [32]byte, nblocks int, started time.Time, mu *sync.Mutex, done *int) error {
	mu.Lock()
	pct := int32(*done * 100 / nblocks)
	mu.Unlock()
	b64 := base64.StdEncoding.EncodeToString(sum[:])
	return s.call(ctx, "ebs:PutSnapshotBlock", fmt.Sprintf("%s block %d", snap, j.index),
		callOpts{timeout: s.retry.BlockTimeout, retryNotYetUntil: started.Add(s.retry.NotFoundWindow)},
		func(ctx context.Context) error {
			_, err := c.ebs.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{
				SnapshotId: sdkaws.String(snap), BlockIndex: sdkaws.Int32(j.index), BlockData: bytes.NewReader(j.buf),
				DataLength: sdkaws.Int32(BlockSize), Checksum: sdkaws.String(b64),
				ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256, Progress: sdkaws.Int32(pct),
			})
			return err
		})
}

// readBlocks reads the image in order, hashing all of it into whole, and hands every block
// that is not all zeros to jobs (in a buffer from pool). Holes of a sparse file are zeros
// that need no reading (SEEK_DATA/SEEK_HOLE); skipped is called for each zero block.
func (s *Session) readBlocks(ctx context.Context, f *os.File, size int64, whole hash.Hash, pool chan []byte, jobs chan<- blockJob, skipped func()) error {
	zero := make([]byte, BlockSize)
	extents := dataExtents(f, size)
	ext := 0
	for off := int64(0); off < size; off += BlockSize {
		n := min(int64(BlockSize), size-off)
		for ext < len(extents) && extents[ext].end <= off {
			ext++
		}
		if ext == len(extents) || extents[ext].start >= off+n {
			whole.Write(zero[:n])
			skipped()
			continue
		}
		var buf []byte
		select {
		case buf = <-pool:
		case <-ctx.Done():
			return ctx.Err()
		}
		if _, err := f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading %s: %w", f.Name(), err)
		}
		clear(buf[n:]) // the last block of an image that is not a whole number of blocks
		whole.Write(buf[:n])
		if bytes.Equal(buf, zero) {
			pool <- buf
			skipped()
			continue
		}
		select {
		case jobs <- blockJob{index: int32(off / BlockSize), buf: buf}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

type extent struct{ start, end int64 }

// dataExtents are the parts of f that hold data; the rest are holes. A filesystem without
// SEEK_DATA gives one extent: the whole file.
func dataExtents(f *os.File, size int64) []extent {
	fd := int(f.Fd())
	var out []extent
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				return out // only holes from off on
			}
			return []extent{{0, size}}
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return []extent{{0, size}}
		}
		out = append(out, extent{start, min(end, size)})
		off = end
	}
	return out
}

// discardSnapshot deletes a snapshot whose upload failed (with a context of its own: the
// caller's may be cancelled) and returns cause, with what went wrong in the cleanup.
func (s *Session) discardSnapshot(ctx context.Context, c *clients, snap string, cause error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := s.deleteSnapshot(cctx, c, snap); err != nil {
		return fmt.Errorf("%w (and deleting the unfinished snapshot %s failed: %v; the next publish deletes it)", cause, snap, err)
	}
	s.log.Info("deleted the unfinished snapshot", "snapshot", snap, "region", c.region)
	return cause
}
