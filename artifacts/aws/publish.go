package aws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/google/uuid"

	"github.com/kubebake/kubebake/internal/atomicfile"
)

// ResultName is the file Publish writes into the build output folder.
const ResultName = "publish-aws.json"

// Upload methods.
const (
	MethodAuto = "auto" // EBS direct; S3 + ImportSnapshot when EBS direct is denied and a bucket is given
	MethodEBS  = "ebs"
	MethodS3   = "s3"
)

// PublishRequest says what to publish where.
type PublishRequest struct {
	Build *Build
	// CopyRegions get a copy of the AMI (the session's region has the original).
	CopyRegions []string
	// Share are account ids that may launch the AMI; Public lets every account.
	Share  []string
	Public bool
	// DeprecateAfter, when set, deprecates the AMIs that long from now.
	DeprecateAfter time.Duration
	// Method is MethodAuto (default), MethodEBS or MethodS3.
	Method string
	// Bucket and ImportRole are for the S3 path; PartSize is its part size (default 64 MiB).
	Bucket, ImportRole string
	PartSize           int64
	// Workers is how many blocks (or parts) are in flight; default DefaultWorkers.
	Workers int
	// Events receives progress; may be nil.
	Events func(Event)
	// Now is the clock for deprecation times (default time.Now).
	Now func() time.Time
}

// Event is publish progress: a stage's message, or the upload's counters.
type Event struct {
	Stage   string // find, upload, import, register, copy, share
	Region  string
	Message string
	Upload  *UploadProgress
}

// PublishResult is what Publish did, as publish-aws.json and `--output json` show it.
type PublishResult struct {
	APIVersion        string         `json:"apiVersion"`
	Kind              string         `json:"kind"`
	Recipe            string         `json:"recipe"`
	KubernetesVersion string         `json:"kubernetesVersion"`
	LockHash          string         `json:"lockHash"`
	ImageSHA256       string         `json:"imageSha256"`
	Name              string         `json:"name"`
	Region            string         `json:"region"`
	Regions           []RegionResult `json:"regions"`
	// Upload is nil when the AMI (or its completed snapshot) already existed.
	Upload *UploadStats `json:"upload,omitempty"`
	// Retries counts the retried failures by name (AWS error code, or "connection dropped").
	Retries     map[string]int `json:"retries,omitempty"`
	PublishedAt time.Time      `json:"publishedAt"`
}

// RegionResult is one region's AMI.
type RegionResult struct {
	Region      string   `json:"region"`
	ImageID     string   `json:"imageId,omitempty"`
	SnapshotIDs []string `json:"snapshotIds,omitempty"`
	// Reused says the AMI existed before this run (same image sha256).
	Reused      bool     `json:"reused"`
	SharedWith  []string `json:"sharedWith,omitempty"`
	Public      bool     `json:"public,omitempty"`
	DeprecateAt string   `json:"deprecateAt,omitempty"`
	// Error is why this region has no AMI (the others are still published).
	Error string `json:"error,omitempty"`
}

// RegionsError is a publish that reached some regions but not all.
type RegionsError struct{ Failed map[string]string }

func (e *RegionsError) Error() string {
	var parts []string
	for _, r := range sortedKeys(e.Failed) {
		parts = append(parts, r+": "+e.Failed[r])
	}
	return "publishing failed in " + fmt.Sprint(len(e.Failed)) + " region(s) (the others are published, see " + ResultName + "): " + strings.Join(parts, "; ")
}

var accountRE = regexp.MustCompile(`^\d{12}$`)

// check refuses a request that cannot work, naming the flag.
func (r *PublishRequest) check(home string) error {
	if r.Method == "" {
		r.Method = MethodAuto
	}
	switch r.Method {
	case MethodAuto, MethodEBS:
	case MethodS3:
		if r.Bucket == "" {
			return fmt.Errorf("--method s3 needs --bucket: the S3 bucket to stage the image in for ImportSnapshot")
		}
	default:
		return fmt.Errorf("--method %q: use auto, ebs or s3", r.Method)
	}
	for _, a := range r.Share {
		if !accountRE.MatchString(a) {
			return fmt.Errorf("--share %q: an AWS account id is 12 digits", a)
		}
	}
	seen := map[string]bool{home: true}
	for _, reg := range r.CopyRegions {
		if seen[reg] {
			return fmt.Errorf("--regions %q: a region appears twice, or is the --region itself", reg)
		}
		seen[reg] = true
	}
	if r.DeprecateAfter < 0 {
		return fmt.Errorf("--deprecate-after %s: give a positive duration such as 2160h", r.DeprecateAfter)
	}
	if r.Workers < 0 || r.Workers > 1000 {
		return fmt.Errorf("--workers %d: give 1 to 1000", r.Workers)
	}
	return nil
}

// Publish makes the build an AMI in the session's region and copies it to CopyRegions,
// then shares and deprecates them as asked. An AMI tagged with the same image sha256 is
// reused, not uploaded again; a completed snapshot of an earlier, interrupted run is
// registered instead of uploading anew; unfinished snapshots of earlier runs are deleted.
// Nothing half-done is left behind: an upload that fails or is cancelled deletes its
// snapshot, and an AMI that does not become available is deregistered.
//
// The result is written to the build folder as publish-aws.json, also when some copy
// regions failed (a *RegionsError then).
func (s *Session) Publish(ctx context.Context, req PublishRequest) (*PublishResult, error) {
	home := s.clients("")
	if err := req.check(home.region); err != nil {
		return nil, err
	}
	if req.Now == nil {
		req.Now = time.Now
	}
	emit := func(e Event) {
		if req.Events != nil {
			req.Events(e)
		}
	}
	b := req.Build
	res := &PublishResult{APIVersion: "kubebake.dev/v1alpha1", Kind: "AWSPublication", Recipe: b.Recipe,
		KubernetesVersion: b.KubernetesVersion, LockHash: b.LockHash, ImageSHA256: b.SHA256, Name: b.AMIName(),
		Region: home.region}

	img, reused, upload, err := s.publishHome(ctx, home, req, emit)
	if err != nil {
		return nil, err
	}
	res.Upload = upload
	results := make([]RegionResult, 1+len(req.CopyRegions))
	results[0] = RegionResult{Region: home.region, ImageID: sdkaws.ToString(img.ImageId), SnapshotIDs: imageSnapshots(img), Reused: reused}
	var wg sync.WaitGroup
	// The home region's sharing runs beside the copies; a copy reads only the home AMI.
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.finish(ctx, home, &results[0], req, emit)
	}()
	for i, region := range req.CopyRegions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i+1]
			r.Region = region
			c := s.clients(region)
			if err := s.copyTo(ctx, c, home.region, img, r, req, emit); err != nil {
				r.Error = err.Error()
				emit(Event{Stage: "copy", Region: region, Message: "failed: " + err.Error()})
				return
			}
			s.finish(ctx, c, r, req, emit)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.Regions = results
	res.Retries = s.Retries()
	res.PublishedAt = req.Now().UTC().Truncate(time.Second)
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(b.Dir, ResultName), append(data, '\n'), 0o644); err != nil {
		return res, err
	}
	failed := map[string]string{}
	for _, r := range results {
		if r.Error != "" {
			failed[r.Region] = r.Error
		}
	}
	if len(failed) > 0 {
		return res, &RegionsError{Failed: failed}
	}
	return res, nil
}

// publishHome finds or makes the AMI in the home region.
func (s *Session) publishHome(ctx context.Context, c *clients, req PublishRequest, emit func(Event)) (ec2types.Image, bool, *UploadStats, error) {
	b := req.Build
	img, ok, err := s.existingImage(ctx, c, b)
	if err != nil || ok {
		if ok {
			emit(Event{Stage: "find", Region: c.region, Message: "reusing " + sdkaws.ToString(img.ImageId) + " (same image sha256)"})
		}
		return img, ok, nil, err
	}
	snap, err := s.resumableSnapshot(ctx, c, b, emit)
	if err != nil {
		return img, false, nil, err
	}
	var upload *UploadStats
	if snap == "" {
		var st UploadStats
		snap, st, err = s.upload(ctx, c, req, emit)
		if err != nil {
			return img, false, nil, err
		}
		upload = &st
	}
	img, err = s.register(ctx, c, b, snap, emit)
	return img, false, upload, err
}

// upload makes the snapshot by the request's method.
func (s *Session) upload(ctx context.Context, c *clients, req PublishRequest, emit func(Event)) (string, UploadStats, error) {
	b := req.Build
	if req.Method == MethodS3 {
		return s.uploadS3(ctx, c, b, req.Bucket, req.ImportRole, req.PartSize, req.Workers, emit)
	}
	snap, st, err := s.uploadEBS(ctx, c, b, req.Workers, emit)
	var ae *Error
	if err != nil && errors.As(err, &ae) && ae.Op == "StartSnapshot" && (ae.Class == classDenied.String() || ae.Class == classNetwork.String()) {
		if req.Method == MethodAuto && req.Bucket != "" {
			emit(Event{Stage: "upload", Region: c.region, Message: "EBS direct APIs unavailable (" + ae.Class + "); uploading through S3 and ImportSnapshot"})
			return s.uploadS3(ctx, c, b, req.Bucket, req.ImportRole, req.PartSize, req.Workers, emit)
		}
		if req.Method != MethodEBS {
			err = fmt.Errorf("%w; or give --bucket to upload through S3 and ImportSnapshot instead", err)
		}
	}
	return snap, st, err
}

// existingImage finds the AMI of this build in c's region. Available is reused; pending is
// waited for; an AMI that failed is deregistered (its snapshot may still be reused).
func (s *Session) existingImage(ctx context.Context, c *clients, b *Build) (ec2types.Image, bool, error) {
	imgs, err := s.images(ctx, c, tagFilter(TagImageSHA256, b.SHA256))
	if err != nil {
		return ec2types.Image{}, false, err
	}
	slices.SortFunc(imgs, func(a, b ec2types.Image) int {
		return strings.Compare(sdkaws.ToString(a.ImageId), sdkaws.ToString(b.ImageId))
	})
	for _, img := range imgs {
		switch img.State {
		case ec2types.ImageStateAvailable:
			return img, true, nil
		case ec2types.ImageStatePending:
			got, err := s.waitImage(ctx, c, sdkaws.ToString(img.ImageId))
			if err == nil {
				return got, true, nil
			}
			if ctx.Err() != nil {
				return img, false, ctx.Err()
			}
		}
		s.log.Info("deregistering an AMI of this image that did not become available", "image", sdkaws.ToString(img.ImageId), "state", img.State, "region", c.region)
		if err := s.deregister(ctx, c, sdkaws.ToString(img.ImageId)); err != nil {
			return img, false, err
		}
	}
	return ec2types.Image{}, false, nil
}

// resumableSnapshot finds a completed snapshot of this image from an earlier run that did
// not get to register it, and deletes the unfinished ones (uploads that were cut off).
func (s *Session) resumableSnapshot(ctx context.Context, c *clients, b *Build, emit func(Event)) (string, error) {
	snaps, err := s.snapshots(ctx, c, tagFilter(TagImageSHA256, b.SHA256))
	if err != nil {
		return "", err
	}
	slices.SortFunc(snaps, func(a, b ec2types.Snapshot) int {
		return strings.Compare(sdkaws.ToString(a.SnapshotId), sdkaws.ToString(b.SnapshotId))
	})
	found := ""
	for _, sn := range snaps {
		id, tags := sdkaws.ToString(sn.SnapshotId), tagMap(sn.Tags)
		switch {
		case found == "" && sn.State == ec2types.SnapshotStateCompleted:
			found = id
			continue
		case found == "" && sn.State == ec2types.SnapshotStatePending && tags[TagUpload] == "complete":
			if err := s.waitSnapshot(ctx, c, id); err == nil {
				found = id
				continue
			} else if ctx.Err() != nil {
				return "", ctx.Err()
			}
		case sn.State == ec2types.SnapshotStateCompleted:
			continue // a spare copy; prune's business, not ours
		}
		emit(Event{Stage: "find", Region: c.region, Message: fmt.Sprintf("deleting %s, an unfinished upload of an earlier run (%s)", id, sn.State)})
		if err := s.deleteSnapshot(ctx, c, id); err != nil {
			return "", err
		}
	}
	if found != "" {
		emit(Event{Stage: "find", Region: c.region, Message: "resuming from " + found + ", a completed upload of an earlier run"})
	}
	return found, nil
}

// register makes the AMI from the snapshot and waits until it is available; one that fails
// or is cancelled on the way is deregistered.
func (s *Session) register(ctx context.Context, c *clients, b *Build, snap string, emit func(Event)) (img ec2types.Image, err error) {
	name := b.AMIName()
	in := &ec2.RegisterImageInput{
		Name: sdkaws.String(name), Description: sdkaws.String(b.Description()),
		Architecture: ec2types.ArchitectureValuesX8664, BootMode: ec2types.BootModeValuesUefi,
		EnaSupport: sdkaws.Bool(true), ImdsSupport: ec2types.ImdsSupportValuesV20,
		VirtualizationType: sdkaws.String("hvm"), RootDeviceName: sdkaws.String("/dev/xvda"),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: sdkaws.String("/dev/xvda"), Ebs: &ec2types.EbsBlockDevice{
			SnapshotId: sdkaws.String(snap), VolumeSize: sdkaws.Int32(b.VolumeGiB()), VolumeType: ec2types.VolumeTypeGp3,
			DeleteOnTermination: sdkaws.Bool(true)}}},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeImage, Tags: ec2Tags(b.Tags())}},
	}
	var id string
	err = s.call(ctx, "ec2:RegisterImage", name, callOpts{}, func(ctx context.Context) error {
		out, err := c.ec2.RegisterImage(ctx, in)
		if errorCode(err) == "InvalidAMIName.Duplicate" {
			// An earlier attempt may have registered it and lost the answer: the same name
			// with this image's sha256 is ours.
			imgs, lerr := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"},
				Filters: []ec2types.Filter{{Name: sdkaws.String("name"), Values: []string{name}}}})
			if lerr == nil && len(imgs.Images) == 1 && tagMap(imgs.Images[0].Tags)[TagImageSHA256] == b.SHA256 {
				id = sdkaws.ToString(imgs.Images[0].ImageId)
				return nil
			}
			return err
		}
		if err == nil {
			id = sdkaws.ToString(out.ImageId)
		}
		return err
	})
	if err != nil && ctx.Err() != nil {
		// Cancelled while RegisterImage was on the wire: EC2 may have registered it anyway.
		s.dropRegistered(ctx, c, name, b.SHA256)
		return img, err
	}
	if err != nil {
		if errorCode(err) == "InvalidAMIName.Duplicate" {
			err = fmt.Errorf("%w; an AMI of another image already has the name %s: deregister it or rename it", err, name)
		}
		return img, fmt.Errorf("%w (the snapshot %s is kept: the next publish registers it)", err, snap)
	}
	emit(Event{Stage: "register", Region: c.region, Message: "registered " + id + " (" + name + ")"})
	img, err = s.waitImage(ctx, c, id)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if derr := s.deregister(cctx, c, id); derr != nil {
			return img, fmt.Errorf("%w (and deregistering %s failed: %v; the next publish deregisters it)", err, id, derr)
		}
		return img, err
	}
	return img, nil
}

// dropRegistered deregisters the AMI of this name and image, if EC2 registered one.
func (s *Session) dropRegistered(ctx context.Context, c *clients, name, sha string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	imgs, err := s.images(cctx, c, ec2types.Filter{Name: sdkaws.String("name"), Values: []string{name}}, tagFilter(TagImageSHA256, sha))
	if err != nil {
		s.log.Warn("looking for an AMI registered as the publish was cancelled", "name", name, "error", err)
		return
	}
	for _, img := range imgs {
		if err := s.deregister(cctx, c, sdkaws.ToString(img.ImageId)); err != nil {
			s.log.Warn("deregistering an AMI registered as the publish was cancelled", "image", sdkaws.ToString(img.ImageId), "error", err)
		}
	}
}

// copyTo finds or makes the copy of src in c's region.
func (s *Session) copyTo(ctx context.Context, c *clients, srcRegion string, src ec2types.Image, r *RegionResult, req PublishRequest, emit func(Event)) error {
	b := req.Build
	img, ok, err := s.existingImage(ctx, c, b)
	if err != nil {
		return err
	}
	if ok {
		r.ImageID, r.SnapshotIDs, r.Reused = sdkaws.ToString(img.ImageId), imageSnapshots(img), true
		emit(Event{Stage: "copy", Region: c.region, Message: "reusing " + r.ImageID + " (same image sha256)"})
		return nil
	}
	token := uuid.NewString()
	var id string
	err = s.call(ctx, "ec2:CopyImage", sdkaws.ToString(src.ImageId)+" to "+c.region, callOpts{}, func(ctx context.Context) error {
		out, err := c.ec2.CopyImage(ctx, &ec2.CopyImageInput{
			Name: src.Name, Description: src.Description, SourceImageId: src.ImageId, SourceRegion: sdkaws.String(srcRegion),
			CopyImageTags: sdkaws.Bool(true), ClientToken: sdkaws.String(token),
		})
		if err == nil {
			id = sdkaws.ToString(out.ImageId)
		}
		return err
	})
	if err != nil {
		return err
	}
	emit(Event{Stage: "copy", Region: c.region, Message: "copying " + sdkaws.ToString(src.ImageId) + " as " + id})
	img, err = s.waitImage(ctx, c, id)
	if err != nil {
		s.dropCopy(ctx, c, id, img)
		return err
	}
	r.ImageID, r.SnapshotIDs = id, imageSnapshots(img)
	// CopyImageTags copies the AMI's tags; the copied snapshots get the same ones here.
	tags := b.Tags()
	tags[TagUpload] = "complete"
	if len(r.SnapshotIDs) > 0 {
		if err := s.tag(ctx, c, r.SnapshotIDs, tags); err != nil {
			return err
		}
	}
	if tagMap(img.Tags)[TagImageSHA256] != b.SHA256 {
		return s.tag(ctx, c, []string{id}, b.Tags())
	}
	return nil
}

// dropCopy deregisters a copy that did not become available, and deletes its snapshots.
func (s *Session) dropCopy(ctx context.Context, c *clients, id string, img ec2types.Image) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := s.deregister(cctx, c, id); err != nil {
		s.log.Warn("deregistering a failed copy", "image", id, "region", c.region, "error", err)
		return
	}
	for _, sn := range imageSnapshots(img) {
		if err := s.deleteSnapshot(cctx, c, sn); err != nil {
			s.log.Warn("deleting a failed copy's snapshot", "snapshot", sn, "region", c.region, "error", err)
		}
	}
}

// finish shares and deprecates a region's AMI; a failure is the region's error.
func (s *Session) finish(ctx context.Context, c *clients, r *RegionResult, req PublishRequest, emit func(Event)) {
	id := r.ImageID
	if len(req.Share) > 0 || req.Public {
		perm := &ec2types.LaunchPermissionModifications{}
		for _, a := range req.Share {
			perm.Add = append(perm.Add, ec2types.LaunchPermission{UserId: sdkaws.String(a)})
		}
		if req.Public {
			perm.Add = append(perm.Add, ec2types.LaunchPermission{Group: ec2types.PermissionGroupAll})
		}
		err := s.call(ctx, "ec2:ModifyImageAttribute", id, callOpts{}, func(ctx context.Context) error {
			_, err := c.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: &id, LaunchPermission: perm})
			return err
		})
		if err != nil {
			if req.Public && strings.Contains(err.Error(), "block public access") {
				err = fmt.Errorf("%w; the account blocks public AMIs (EC2 image block public access): turn it off or drop --public", err)
			}
			r.Error = "sharing: " + err.Error()
			return
		}
		r.SharedWith, r.Public = req.Share, req.Public
		emit(Event{Stage: "share", Region: c.region, Message: fmt.Sprintf("%s shared with %s", id, shareList(req))})
	}
	if req.DeprecateAfter > 0 {
		at := req.Now().Add(req.DeprecateAfter).UTC().Truncate(time.Minute)
		err := s.call(ctx, "ec2:EnableImageDeprecation", id, callOpts{}, func(ctx context.Context) error {
			_, err := c.ec2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: &id, DeprecateAt: &at})
			return err
		})
		if err != nil {
			r.Error = "deprecation: " + err.Error()
			return
		}
		r.DeprecateAt = at.Format(time.RFC3339)
	}
}

func shareList(req PublishRequest) string {
	l := slices.Clone(req.Share)
	if req.Public {
		l = append(l, "everyone (public)")
	}
	return strings.Join(l, ", ")
}
