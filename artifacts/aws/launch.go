package aws

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/google/uuid"
)

// Tags on instances kubebake launches.
const (
	TagCluster = "kubebake:cluster"
	TagRole    = "kubebake:role"
)

// MaxUserData is EC2's limit on user-data, before base64.
const MaxUserData = 16 * 1024

// RoleCount is how many instances of a role to launch.
type RoleCount struct {
	Role  string
	Count int
}

// LaunchRequest says what to launch. Roles are launched in order, so the master comes first
// and its private address is known when the minions' user-data is made.
type LaunchRequest struct {
	ImageID string
	Cluster string
	Roles   []RoleCount
	// InstanceType defaults to t3.medium (2 vCPU, 4 GiB: kubeadm's minimum for a master).
	InstanceType   string
	SubnetID       string
	SecurityGroups []string
	KeyName        string
	// UserData renders a role's user-data. masterIP is the private address of the master
	// this request launched, "" when it launched none.
	UserData func(role, masterIP string) ([]byte, error)
}

// LaunchedInstance is one instance started.
type LaunchedInstance struct {
	ID            string `json:"instanceId"`
	Role          string `json:"role"`
	PrivateIP     string `json:"privateIp,omitempty"`
	State         string `json:"state"`
	UserDataBytes int    `json:"userDataBytes"`
}

// LaunchResult is what Launch started.
type LaunchResult struct {
	Region    string             `json:"region"`
	ImageID   string             `json:"imageId"`
	Cluster   string             `json:"cluster"`
	Instances []LaunchedInstance `json:"instances"`
}

var amiIDRE = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)

// Launch runs the instances of each role with that role's user-data, tagged with the
// cluster and the role. A failure after some roles started returns those with the error.
func (s *Session) Launch(ctx context.Context, req LaunchRequest) (*LaunchResult, error) {
	c := s.clients("")
	if !amiIDRE.MatchString(req.ImageID) {
		return nil, fmt.Errorf("--ami %q: give an AMI id such as ami-0123456789abcdef0 (publish-aws.json lists them)", req.ImageID)
	}
	if req.InstanceType == "" {
		req.InstanceType = "t3.medium"
	}
	res := &LaunchResult{Region: c.region, ImageID: req.ImageID, Cluster: req.Cluster}
	masterIP := ""
	for _, rc := range req.Roles {
		if rc.Count < 1 {
			return res, fmt.Errorf("--count %d: launch at least one %s", rc.Count, rc.Role)
		}
		ud, err := req.UserData(rc.Role, masterIP)
		if err != nil {
			return res, fmt.Errorf("user-data for role %s: %w", rc.Role, err)
		}
		if len(ud) > MaxUserData {
			return res, fmt.Errorf("user-data for role %s is %d bytes; EC2 takes at most %d: leave out --ssh-key or use --format cloud-config", rc.Role, len(ud), MaxUserData)
		}
		tags := map[string]string{
			"Name":                                 fmt.Sprintf("%s-%s", req.Cluster, rc.Role),
			TagCluster:                             req.Cluster,
			TagRole:                                rc.Role,
			"kubernetes.io/cluster/" + req.Cluster: "owned",
		}
		in := &ec2.RunInstancesInput{
			ImageId: sdkaws.String(req.ImageID), InstanceType: ec2types.InstanceType(req.InstanceType),
			MinCount: sdkaws.Int32(int32(rc.Count)), MaxCount: sdkaws.Int32(int32(rc.Count)),
			UserData:    sdkaws.String(base64.StdEncoding.EncodeToString(ud)),
			ClientToken: sdkaws.String(uuid.NewString()), // one launch however often the call is retried
			MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
				HttpTokens: ec2types.HttpTokensStateRequired, HttpEndpoint: ec2types.InstanceMetadataEndpointStateEnabled},
			TagSpecifications: []ec2types.TagSpecification{
				{ResourceType: ec2types.ResourceTypeInstance, Tags: ec2Tags(tags)},
				{ResourceType: ec2types.ResourceTypeVolume, Tags: ec2Tags(tags)},
			},
		}
		if req.SubnetID != "" {
			in.SubnetId = sdkaws.String(req.SubnetID)
		}
		if len(req.SecurityGroups) > 0 {
			in.SecurityGroupIds = req.SecurityGroups
		}
		if req.KeyName != "" {
			in.KeyName = sdkaws.String(req.KeyName)
		}
		var out *ec2.RunInstancesOutput
		err = s.call(ctx, "ec2:RunInstances", fmt.Sprintf("%d x %s", rc.Count, rc.Role), callOpts{}, func(ctx context.Context) error {
			var err error
			out, err = c.ec2.RunInstances(ctx, in)
			return err
		})
		if err != nil {
			if len(res.Instances) > 0 {
				err = fmt.Errorf("%w (already running: %s)", err, instanceList(res.Instances))
			}
			return res, err
		}
		for _, inst := range out.Instances {
			li := LaunchedInstance{ID: sdkaws.ToString(inst.InstanceId), Role: rc.Role,
				PrivateIP: sdkaws.ToString(inst.PrivateIpAddress), UserDataBytes: len(ud)}
			if inst.State != nil {
				li.State = string(inst.State.Name)
			}
			res.Instances = append(res.Instances, li)
			if rc.Role == "master" && masterIP == "" {
				masterIP = li.PrivateIP
			}
		}
		if rc.Role == "master" && masterIP == "" {
			return res, fmt.Errorf("RunInstances gave the master %s no private address; its minions would not find it", instanceList(res.Instances))
		}
	}
	return res, nil
}

func instanceList(l []LaunchedInstance) string {
	s := ""
	for i, in := range l {
		if i > 0 {
			s += ", "
		}
		s += in.ID + " (" + in.Role + ")"
	}
	return s
}
