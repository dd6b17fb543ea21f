// Package fakeaws is a stand-in for the parts of AWS that kubebake's artifacts/aws talks to,
// served on 127.0.0.1 so that the real aws-sdk-go-v2 clients can be tested on a machine that
// cannot reach AWS:
//
//   - EC2's query API (images, snapshots, tags, instances, launch templates, import tasks),
//   - the EBS direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot), which keep the
//     blocks on disk and check each block's SHA-256 and the LINEAR checksum,
//   - S3, through gofakes3 in process (multipart uploads work).
//
// All three check SigV4 signatures with their own implementation of the algorithm, keep state
// per region (the region of the request's credential scope), and answer errors in each
// protocol's own shape, so the SDK parses them as it would AWS's. Faults (throttling, 5xx,
// dropped connections, bad block checksums, stalls, a failed import task) are injected per
// operation with Inject. It behaves like AWS where kubebake depends on it; it is not AWS, and
// a test that passes here has not talked to AWS.
package fakeaws

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// The credentials the servers accept. A request signed with any other key is refused.
const (
	AccessKey = "AKIDKUBEBAKEFAKE0001"
	SecretKey = "kubebake-fake-secret-key/not-a-real-one"
	// Account is the owner id of everything the fake creates.
	Account = "123456789012"
)

// BlockSize is the EBS direct API block size.
const BlockSize = 512 * 1024

// Server is the three endpoints and their shared state.
type Server struct {
	*Cloud
	EC2, EBS, S3 *httptest.Server
	// Bucket is a bucket that exists from the start (for the S3 import path).
	Bucket string
	s3     *s3mem.Backend
}

// Options configure New.
type Options struct {
	// Dir keeps snapshot blocks (sparse files). Required.
	Dir string
}

// New starts the three servers on 127.0.0.1.
func New(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("fakeaws: Options.Dir is required")
	}
	c := &Cloud{
		dir:     opts.Dir,
		keys:    map[string]string{AccessKey: SecretKey},
		regions: map[string]*Region{},
		calls:   map[string]int{},
		now:     time.Now,
	}
	s := &Server{Cloud: c, Bucket: "kubebake-import", s3: s3mem.New()}
	if err := s.s3.CreateBucket(s.Bucket); err != nil {
		return nil, err
	}
	c.getObject = func(bucket, key string) (*gofakes3.Object, error) { return s.s3.GetObject(bucket, key, nil) }
	s3h := gofakes3.New(s.s3, gofakes3.WithAutoBucket(false), gofakes3.WithLogger(gofakes3.DiscardLog())).Server()
	s.EC2 = httptest.NewServer(http.HandlerFunc(c.serveEC2))
	s.EBS = httptest.NewServer(http.HandlerFunc(c.serveEBS))
	s.S3 = httptest.NewServer(c.wrapS3(s3h))
	return s, nil
}

// Close stops the servers and removes the block files.
func (s *Server) Close() {
	s.EC2.Close()
	s.EBS.Close()
	s.S3.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.regions {
		for _, sn := range r.Snapshots {
			sn.data.release()
		}
	}
}

// ObjectExists says whether bucket holds key.
func (s *Server) ObjectExists(bucket, key string) bool {
	_, err := s.s3.HeadObject(bucket, key)
	return err == nil
}

// ObjectCount is how many objects bucket holds.
func (s *Server) ObjectCount(bucket string) int {
	l, err := s.s3.ListBucket(bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		return 0
	}
	return len(l.Contents)
}

// CreateBucket adds an empty bucket (the servers create none on request).
func (s *Server) CreateBucket(name string) error { return s.s3.CreateBucket(name) }

// StartS3 starts the servers for a test, with the given empty buckets, and stops them when the
// test ends.
func StartS3(t testing.TB, buckets ...string) *Server {
	t.Helper()
	srv, err := New(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	for _, b := range buckets {
		if err := srv.CreateBucket(b); err != nil {
			t.Fatal(err)
		}
	}
	return srv
}

// ReplaceObjectData swaps the bytes of an object for data and keeps its metadata, as bit rot
// or a bad copy would leave it: for checksum tests.
func (s *Server) ReplaceObjectData(bucket, key string, data []byte) error {
	obj, err := s.s3.HeadObject(bucket, key)
	if err != nil {
		return err
	}
	_, err = s.s3.PutObject(bucket, key, obj.Metadata, bytes.NewReader(data), int64(len(data)), nil)
	return err
}

// Cloud is the state behind the endpoints: per region, images, snapshots, instances,
// launch templates and import tasks.
type Cloud struct {
	mu        sync.Mutex
	dir       string
	keys      map[string]string
	regions   map[string]*Region
	faults    []*Fault
	calls     map[string]int
	now       func() time.Time
	getObject func(bucket, key string) (*gofakes3.Object, error)
	importErr string

	// OnCall, when set, runs at the start of every request the fake accepts, with the
	// operation ("ebs:PutSnapshotBlock") and the count of such calls so far (1 for the first).
	// Tests use it to cancel a context at a chosen point.
	OnCall func(op string, n int)
}

// Region is one region's resources.
type Region struct {
	Images      map[string]*Image
	Snapshots   map[string]*Snapshot
	Instances   map[string]*Instance
	Templates   []*LaunchTemplate
	ImportTasks map[string]*ImportTask
	tokens      map[string]string // client token -> resource id
	failNext    string            // FailNextImage
	nextIP      int
}

// Snapshot is an EBS snapshot.
type Snapshot struct {
	ID          string
	Status      string // pending, completed, error
	Description string
	VolumeSize  int32 // GiB
	Tags        map[string]string
	Started     time.Time
	// Direct is true for a snapshot made with the EBS direct APIs.
	Direct bool

	data    *blockStore
	written map[int32][32]byte // per block sha256, EBS direct uploads
	polls   int                // DescribeSnapshots calls left before pending becomes completed
}

// Image is an AMI.
type Image struct {
	ID, Name, Description, State                    string
	Architecture, BootMode, ImdsSupport, RootDevice string
	VirtualizationType                              string
	EnaSupport                                      bool
	Created                                         time.Time
	Mappings                                        []Mapping
	Tags                                            map[string]string
	LaunchUsers                                     []string
	Public                                          bool
	DeprecateAt                                     time.Time
	SourceImageID, SourceRegion                     string
	StateReason                                     string

	polls int // DescribeImages calls left before pending becomes available (or failed)
	fail  string
}

// Mapping is a block device mapping.
type Mapping struct {
	Device, SnapshotID, VolumeType string
	VolumeSize                     int32
	DeleteOnTermination            bool
}

// Instance is an EC2 instance.
type Instance struct {
	ID, ImageID, State, PrivateIP, InstanceType, SubnetID string
	UserData                                              []byte
	Tags                                                  map[string]string
	HTTPTokens                                            string
	Launched                                              time.Time
	LaunchIndex                                           int
}

// LaunchTemplate is a launch template; Versions are the image ids its versions name.
type LaunchTemplate struct {
	ID, Name string
	Versions []string
}

// ImportTask is an ImportSnapshot task.
type ImportTask struct {
	ID, Bucket, Key, Format, Description, Role string
	Status, StatusMessage, Progress            string
	SnapshotID                                 string
	Tags                                       map[string]string
	step                                       int
	fail                                       string
}

func (c *Cloud) region(name string) *Region {
	r := c.regions[name]
	if r == nil {
		r = &Region{Images: map[string]*Image{}, Snapshots: map[string]*Snapshot{}, Instances: map[string]*Instance{},
			ImportTasks: map[string]*ImportTask{}, tokens: map[string]string{}}
		c.regions[name] = r
	}
	return r
}

// Region returns a copy-free view of a region's state for tests (create it if needed). Hold
// no reference across requests without Lock.
func (c *Cloud) Region(name string) *Region {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.region(name)
}

// Lock and Unlock guard the state for a test that reads or seeds it directly.
func (c *Cloud) Lock()   { c.mu.Lock() }
func (c *Cloud) Unlock() { c.mu.Unlock() }

// SetNow replaces the clock that stamps creation times.
func (c *Cloud) SetNow(now func() time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
}

// Calls is how many requests of op ("ebs:PutSnapshotBlock") the fake accepted.
func (c *Cloud) Calls(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

// FailImports makes every later import task fail with msg (as AWS reports a failed task:
// status "deleted" and msg as its status message). "" lets them succeed again.
func (c *Cloud) FailImports(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.importErr = msg
}

// Images lists a region's images, sorted by id.
func (c *Cloud) Images(region string) []Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Image
	for _, im := range c.region(region).Images {
		out = append(out, *im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Snapshots lists a region's snapshots, sorted by id.
func (c *Cloud) Snapshots(region string) []Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Snapshot
	for _, s := range c.region(region).Snapshots {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Instances lists a region's instances in launch order.
func (c *Cloud) Instances(region string) []Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Instance
	for _, in := range c.region(region).Instances {
		out = append(out, *in)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Launched.Equal(out[j].Launched) {
			return out[i].Launched.Before(out[j].Launched)
		}
		return out[i].LaunchIndex < out[j].LaunchIndex
	})
	return out
}

// SnapshotSHA256 is the sha256 of the whole volume a completed snapshot holds, as a disk of
// VolumeSize GiB would read it (blocks never written read as zeros), cut to size bytes (the
// image's size, a whole number of blocks or not).
func (c *Cloud) SnapshotSHA256(region, id string, size int64) (string, error) {
	c.mu.Lock()
	s := c.region(region).Snapshots[id]
	c.mu.Unlock()
	if s == nil {
		return "", fmt.Errorf("no snapshot %s in %s", id, region)
	}
	return s.data.sha256(size)
}

// AddInstance seeds an instance (for prune's in-use checks).
func (c *Cloud) AddInstance(region, imageID, state string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.region(region)
	in := &Instance{ID: newID("i"), ImageID: imageID, State: state, Launched: c.now(), Tags: map[string]string{}}
	r.Instances[in.ID] = in
	return in.ID
}

// AddLaunchTemplate seeds a launch template whose versions name images.
func (c *Cloud) AddLaunchTemplate(region, name string, images ...string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.region(region)
	lt := &LaunchTemplate{ID: newID("lt"), Name: name, Versions: images}
	r.Templates = append(r.Templates, lt)
	return lt.ID
}

// AddImage seeds an available image with one completed snapshot of size GiB (for prune).
func (c *Cloud) AddImage(region, name string, created time.Time, tags map[string]string) (imageID, snapshotID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.region(region)
	sn := &Snapshot{ID: newID("snap"), Status: "completed", VolumeSize: 1, Tags: copyTags(tags), Started: created, data: newEmptyStore()}
	r.Snapshots[sn.ID] = sn
	im := &Image{ID: newID("ami"), Name: name, State: "available", Architecture: "x86_64", BootMode: "uefi",
		RootDevice: "/dev/xvda", VirtualizationType: "hvm", EnaSupport: true, ImdsSupport: "v2.0", Created: created,
		Mappings: []Mapping{{Device: "/dev/xvda", SnapshotID: sn.ID, VolumeType: "gp3", VolumeSize: 1, DeleteOnTermination: true}},
		Tags:     copyTags(tags)}
	r.Images[im.ID] = im
	return im.ID, sn.ID
}

func copyTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func newID(prefix string) string {
	b := make([]byte, 9)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)[:17]
}

// blockStore is a snapshot's data: a sparse file of the volume's bytes. Copies of a
// snapshot (CopyImage) share it; snapshots are immutable once completed.
type blockStore struct {
	mu   sync.Mutex
	f    *os.File
	refs int
}

func newStore(dir string) (*blockStore, error) {
	f, err := os.CreateTemp(dir, "snapshot-*.blocks")
	if err != nil {
		return nil, err
	}
	return &blockStore{f: f, refs: 1}, nil
}

// newEmptyStore is a store with no file: every block reads as zeros.
func newEmptyStore() *blockStore { return &blockStore{refs: 1} }

func (b *blockStore) share() *blockStore {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refs++
	return b
}

func (b *blockStore) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refs--
	if b.refs <= 0 && b.f != nil {
		b.f.Close()
		os.Remove(b.f.Name())
		b.f = nil
	}
}

func (b *blockStore) writeBlock(index int32, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.f == nil {
		return fmt.Errorf("snapshot data released")
	}
	_, err := b.f.WriteAt(data, int64(index)*BlockSize)
	return err
}

// sha256 hashes the first size bytes of the volume; past the file's end it reads zeros.
func (b *blockStore) sha256(size int64) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := sha256.New()
	var have int64
	if b.f != nil {
		st, err := b.f.Stat()
		if err != nil {
			return "", err
		}
		have = min(st.Size(), size)
		if _, err := io.Copy(h, io.NewSectionReader(b.f, 0, have)); err != nil {
			return "", err
		}
	}
	zero := make([]byte, BlockSize)
	for rest := size - have; rest > 0; {
		n := min(rest, int64(len(zero)))
		h.Write(zero[:n])
		rest -= n
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
