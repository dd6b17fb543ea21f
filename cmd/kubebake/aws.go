package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	kbaws "github.com/kubebake/kubebake/artifacts/aws"
)

// awsFlags are the flags every "... aws" command shares: where AWS is and who we are there.
// Credentials come from the standard AWS chain only (environment, shared files, profile,
// IMDS): no flag takes a secret.
type awsFlags struct {
	region, profile                        string
	endpoint, endpointEC2, endpointEBS, s3 string
	poll                                   time.Duration
}

func (a *awsFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.region, "region", "", "AWS region (default: AWS_REGION or the profile's region)")
	f.StringVar(&a.profile, "profile", "", "shared config profile (default: AWS_PROFILE or default)")
	f.StringVar(&a.endpoint, "endpoint-url", "", "send every AWS request to this URL (a private endpoint or proxy); also AWS_ENDPOINT_URL")
	f.StringVar(&a.endpointEC2, "endpoint-url-ec2", "", "EC2 endpoint URL (overrides --endpoint-url); also AWS_ENDPOINT_URL_EC2")
	f.StringVar(&a.endpointEBS, "endpoint-url-ebs", "", "EBS direct APIs endpoint URL (overrides --endpoint-url); also AWS_ENDPOINT_URL_EBS")
	f.StringVar(&a.s3, "endpoint-url-s3", "", "S3 endpoint URL, path-style (overrides --endpoint-url); also AWS_ENDPOINT_URL_S3")
	f.DurationVar(&a.poll, "poll-interval", 5*time.Second, "time between status checks of snapshots, AMIs and import tasks")
}

func (a *awsFlags) session(ctx context.Context) (*kbaws.Session, error) {
	return kbaws.NewSession(ctx, kbaws.Options{
		Region: a.region, Profile: a.profile,
		Endpoints: kbaws.Endpoints{All: a.endpoint, EC2: a.endpointEC2, EBS: a.endpointEBS, S3: a.s3},
		Poll:      a.poll,
	})
}

// The cloud commands are "VERB aws ...", so that another cloud is another subcommand.
var (
	publishCmd = &cobra.Command{Use: "publish", Short: "Publish a built image to a cloud (aws)"}
	launchCmd  = &cobra.Command{Use: "launch", Short: "Launch role instances of a published image (aws)"}
	pruneCmd   = &cobra.Command{Use: "prune", Short: "Remove a recipe's old published images (aws)"}
)

func init() {
	rootCmd.AddCommand(publishCmd, launchCmd, pruneCmd)
}
