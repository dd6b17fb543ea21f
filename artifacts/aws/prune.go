package aws

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// PruneRequest says which AMIs of a recipe to remove.
type PruneRequest struct {
	Recipe string
	// Keep is how many of the newest AMIs stay, whatever their age (at least 1).
	Keep int
	// OlderThan, when set, removes only AMIs created longer ago than this.
	OlderThan time.Duration
	DryRun    bool
	Now       func() time.Time
}

// Prune actions.
const (
	ActionKept        = "kept"
	ActionRemoved     = "removed"
	ActionWouldRemove = "would remove"
	ActionFailed      = "failed"
)

// PrunedImage is one AMI and what prune did with it.
type PrunedImage struct {
	ImageID     string    `json:"imageId"`
	Name        string    `json:"name"`
	Created     time.Time `json:"created"`
	SnapshotIDs []string  `json:"snapshotIds,omitempty"`
	Action      string    `json:"action"`
	Reason      string    `json:"reason"`
}

// PruneResult is one region's AMIs of the recipe, newest first.
type PruneResult struct {
	Region string        `json:"region"`
	Recipe string        `json:"recipe"`
	DryRun bool          `json:"dryRun"`
	Images []PrunedImage `json:"images"`
}

// inUseStates are the instance states in which an instance still needs its AMI (a stopped
// instance starts again from its volume, but AWS and people expect its AMI to stay).
var inUseStates = []string{"pending", "running", "stopping", "stopped", "shutting-down"}

// Prune deregisters the recipe's AMIs in region ("" for the session's) beyond the newest
// Keep (and, with OlderThan, only older ones) and deletes their snapshots. It never removes
// an AMI that an instance in a state of inUseStates uses, or that any version of a launch
// template names.
func (s *Session) Prune(ctx context.Context, region string, req PruneRequest) (*PruneResult, error) {
	if req.Recipe == "" {
		return nil, fmt.Errorf("--recipe is required: the recipe name whose AMIs to prune (the %s tag)", TagRecipe)
	}
	if req.Keep < 1 {
		return nil, fmt.Errorf("--keep %d: keep at least the newest AMI (give 1 or more)", req.Keep)
	}
	if req.OlderThan < 0 {
		return nil, fmt.Errorf("--older-than %s: give a positive duration such as 720h", req.OlderThan)
	}
	if req.Now == nil {
		req.Now = time.Now
	}
	c := s.clients(region)
	imgs, err := s.images(ctx, c, tagFilter(TagRecipe, req.Recipe))
	if err != nil {
		return nil, err
	}
	created := func(img ec2types.Image) time.Time {
		t, _ := time.Parse(time.RFC3339, sdkaws.ToString(img.CreationDate))
		return t
	}
	slices.SortStableFunc(imgs, func(a, b ec2types.Image) int {
		if c := created(b).Compare(created(a)); c != 0 {
			return c
		}
		return strings.Compare(sdkaws.ToString(b.ImageId), sdkaws.ToString(a.ImageId))
	})
	var ids []string
	for _, img := range imgs {
		ids = append(ids, sdkaws.ToString(img.ImageId))
	}
	users, err := s.imageUsers(ctx, c, ids)
	if err != nil {
		return nil, err
	}
	res := &PruneResult{Region: c.region, Recipe: req.Recipe, DryRun: req.DryRun}
	cutoff := req.Now().Add(-req.OlderThan)
	var failed []string
	for i, img := range imgs {
		id := sdkaws.ToString(img.ImageId)
		p := PrunedImage{ImageID: id, Name: sdkaws.ToString(img.Name), Created: created(img), SnapshotIDs: imageSnapshots(img), Action: ActionKept}
		switch {
		case i < req.Keep:
			p.Reason = fmt.Sprintf("one of the newest %d", req.Keep)
		case len(users[id]) > 0:
			p.Reason = "in use: " + strings.Join(users[id], ", ")
		case req.OlderThan > 0 && p.Created.After(cutoff):
			p.Reason = fmt.Sprintf("created less than %s ago", req.OlderThan)
		case req.DryRun:
			p.Action, p.Reason = ActionWouldRemove, fmt.Sprintf("older than the newest %d", req.Keep)
		default:
			p.Action, p.Reason = ActionRemoved, fmt.Sprintf("older than the newest %d", req.Keep)
			if err := s.remove(ctx, c, id, p.SnapshotIDs); err != nil {
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
				p.Action, p.Reason = ActionFailed, err.Error()
				failed = append(failed, id)
			}
		}
		res.Images = append(res.Images, p)
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("prune: %d AMI(s) could not be removed: %s", len(failed), strings.Join(failed, ", "))
	}
	return res, nil
}

// remove deregisters an AMI, then deletes its snapshots.
func (s *Session) remove(ctx context.Context, c *clients, id string, snaps []string) error {
	if err := s.deregister(ctx, c, id); err != nil {
		return err
	}
	var errs []error
	for _, sn := range snaps {
		if err := s.deleteSnapshot(ctx, c, sn); err != nil {
			errs = append(errs, fmt.Errorf("deregistered, but deleting snapshot %s: %w", sn, err))
		}
	}
	return errors.Join(errs...)
}

// imageUsers says, per image id, which instances and launch template versions name it.
func (s *Session) imageUsers(ctx context.Context, c *clients, ids []string) (map[string][]string, error) {
	users := map[string][]string{}
	if len(ids) == 0 {
		return users, nil
	}
	for chunk := range slices.Chunk(ids, 200) {
		in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
			{Name: sdkaws.String("image-id"), Values: chunk},
			{Name: sdkaws.String("instance-state-name"), Values: inUseStates},
		}}
		for {
			var out *ec2.DescribeInstancesOutput
			err := s.call(ctx, "ec2:DescribeInstances", c.region, callOpts{}, func(ctx context.Context) error {
				var err error
				out, err = c.ec2.DescribeInstances(ctx, in)
				return err
			})
			if err != nil {
				return nil, err
			}
			for _, r := range out.Reservations {
				for _, inst := range r.Instances {
					img := sdkaws.ToString(inst.ImageId)
					state := ""
					if inst.State != nil {
						state = string(inst.State.Name)
					}
					users[img] = append(users[img], fmt.Sprintf("instance %s (%s)", sdkaws.ToString(inst.InstanceId), state))
				}
			}
			if sdkaws.ToString(out.NextToken) == "" {
				break
			}
			in.NextToken = out.NextToken
		}
	}
	tin := &ec2.DescribeLaunchTemplatesInput{}
	for {
		var out *ec2.DescribeLaunchTemplatesOutput
		err := s.call(ctx, "ec2:DescribeLaunchTemplates", c.region, callOpts{}, func(ctx context.Context) error {
			var err error
			out, err = c.ec2.DescribeLaunchTemplates(ctx, tin)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, lt := range out.LaunchTemplates {
			if err := s.templateUsers(ctx, c, lt, users); err != nil {
				return nil, err
			}
		}
		if sdkaws.ToString(out.NextToken) == "" {
			break
		}
		tin.NextToken = out.NextToken
	}
	return users, nil
}

// templateUsers adds every version of a launch template to users of the image it names.
func (s *Session) templateUsers(ctx context.Context, c *clients, lt ec2types.LaunchTemplate, users map[string][]string) error {
	in := &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateId: lt.LaunchTemplateId}
	for {
		var out *ec2.DescribeLaunchTemplateVersionsOutput
		err := s.call(ctx, "ec2:DescribeLaunchTemplateVersions", sdkaws.ToString(lt.LaunchTemplateId), callOpts{}, func(ctx context.Context) error {
			var err error
			out, err = c.ec2.DescribeLaunchTemplateVersions(ctx, in)
			return err
		})
		if err != nil {
			return err
		}
		for _, v := range out.LaunchTemplateVersions {
			if v.LaunchTemplateData == nil || v.LaunchTemplateData.ImageId == nil {
				continue
			}
			img := *v.LaunchTemplateData.ImageId
			users[img] = append(users[img], fmt.Sprintf("launch template %s (%s) version %d",
				sdkaws.ToString(lt.LaunchTemplateName), sdkaws.ToString(lt.LaunchTemplateId), sdkaws.ToInt64(v.VersionNumber)))
		}
		if sdkaws.ToString(out.NextToken) == "" {
			return nil
		}
		in.NextToken = out.NextToken
	}
}
