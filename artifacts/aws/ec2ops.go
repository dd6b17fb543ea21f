package aws

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The EC2 calls publish, launch and prune share, each through Session.call.

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func ec2Tags(m map[string]string) []ec2types.Tag {
	var out []ec2types.Tag
	for _, k := range sortedKeys(m) {
		out = append(out, ec2types.Tag{Key: sdkaws.String(k), Value: sdkaws.String(m[k])})
	}
	return out
}

func tagMap(tags []ec2types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[sdkaws.ToString(t.Key)] = sdkaws.ToString(t.Value)
	}
	return m
}

func tagFilter(key, value string) ec2types.Filter {
	return ec2types.Filter{Name: sdkaws.String("tag:" + key), Values: []string{value}}
}

// tag puts tags on resources.
func (s *Session) tag(ctx context.Context, c *clients, ids []string, tags map[string]string) error {
	return s.call(ctx, "ec2:CreateTags", strings.Join(ids, ","), callOpts{}, func(ctx context.Context) error {
		_, err := c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: ec2Tags(tags)})
		return err
	})
}

// images lists the account's images in c's region that match filters.
func (s *Session) images(ctx context.Context, c *clients, filters ...ec2types.Filter) ([]ec2types.Image, error) {
	var out []ec2types.Image
	in := &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: filters}
	for {
		var page *ec2.DescribeImagesOutput
		err := s.call(ctx, "ec2:DescribeImages", c.region, callOpts{}, func(ctx context.Context) error {
			var err error
			page, err = c.ec2.DescribeImages(ctx, in)
			return err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, page.Images...)
		if sdkaws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

// snapshots lists the account's snapshots in c's region that match filters.
func (s *Session) snapshots(ctx context.Context, c *clients, filters ...ec2types.Filter) ([]ec2types.Snapshot, error) {
	var out []ec2types.Snapshot
	in := &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: filters}
	for {
		var page *ec2.DescribeSnapshotsOutput
		err := s.call(ctx, "ec2:DescribeSnapshots", c.region, callOpts{}, func(ctx context.Context) error {
			var err error
			page, err = c.ec2.DescribeSnapshots(ctx, in)
			return err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, page.Snapshots...)
		if sdkaws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

func (s *Session) deleteSnapshot(ctx context.Context, c *clients, id string) error {
	return s.call(ctx, "ec2:DeleteSnapshot", id, callOpts{}, func(ctx context.Context) error {
		_, err := c.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: sdkaws.String(id)})
		if errorCode(err) == "InvalidSnapshot.NotFound" {
			return nil // gone already (an earlier attempt whose answer was lost)
		}
		return err
	})
}

func (s *Session) deregister(ctx context.Context, c *clients, id string) error {
	return s.call(ctx, "ec2:DeregisterImage", id, callOpts{}, func(ctx context.Context) error {
		_, err := c.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: sdkaws.String(id)})
		if errorCode(err) == "InvalidAMIID.NotFound" || errorCode(err) == "InvalidAMIID.Unavailable" {
			return nil
		}
		return err
	})
}

// waitFor polls check every s.poll until it says done, fails, or s.wait passes.
func (s *Session) waitFor(ctx context.Context, what string, check func(ctx context.Context) (bool, error)) error {
	deadline := time.Now().Add(s.wait)
	for {
		done, err := check(ctx)
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still not done after %s", what, s.wait)
		}
		select {
		case <-time.After(s.poll):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitSnapshot waits until a snapshot is completed; the error state is a failure.
func (s *Session) waitSnapshot(ctx context.Context, c *clients, id string) error {
	return s.waitFor(ctx, "snapshot "+id, func(ctx context.Context) (bool, error) {
		var out *ec2.DescribeSnapshotsOutput
		err := s.call(ctx, "ec2:DescribeSnapshots", id, callOpts{}, func(ctx context.Context) error {
			var err error
			out, err = c.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
			return err
		})
		if err != nil {
			return false, err
		}
		if len(out.Snapshots) != 1 {
			return false, fmt.Errorf("snapshot %s: DescribeSnapshots returned %d snapshots", id, len(out.Snapshots))
		}
		switch sn := out.Snapshots[0]; sn.State {
		case ec2types.SnapshotStateCompleted:
			return true, nil
		case ec2types.SnapshotStateError:
			return false, fmt.Errorf("snapshot %s is in the error state: %s", id, sdkaws.ToString(sn.StateMessage))
		}
		return false, nil
	})
}

// waitImage waits until an image is available; failed, invalid or error is a failure.
func (s *Session) waitImage(ctx context.Context, c *clients, id string) (ec2types.Image, error) {
	var img ec2types.Image
	err := s.waitFor(ctx, "image "+id+" in "+c.region, func(ctx context.Context) (bool, error) {
		var out *ec2.DescribeImagesOutput
		err := s.call(ctx, "ec2:DescribeImages", id, callOpts{}, func(ctx context.Context) error {
			var err error
			out, err = c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
			return err
		})
		if err != nil {
			return false, err
		}
		if len(out.Images) != 1 {
			return false, fmt.Errorf("image %s: DescribeImages returned %d images", id, len(out.Images))
		}
		img = out.Images[0]
		switch img.State {
		case ec2types.ImageStateAvailable:
			return true, nil
		case ec2types.ImageStatePending:
			return false, nil
		}
		reason := ""
		if img.StateReason != nil {
			reason = ": " + sdkaws.ToString(img.StateReason.Message)
		}
		return false, fmt.Errorf("image %s in %s is %s%s", id, c.region, img.State, reason)
	})
	return img, err
}

// imageSnapshots are the snapshot ids an image's block devices come from.
func imageSnapshots(img ec2types.Image) []string {
	var out []string
	for _, m := range img.BlockDeviceMappings {
		if m.Ebs != nil && m.Ebs.SnapshotId != nil {
			out = append(out, *m.Ebs.SnapshotId)
		}
	}
	return out
}
