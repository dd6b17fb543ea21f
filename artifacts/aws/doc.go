// Package aws publishes kubebake images to Amazon EC2 and runs them: Publish turns a build
// output folder into an AMI (EBS direct APIs, or S3 and ImportSnapshot), copies it to more
// regions, shares and deprecates it; Launch starts role instances with their user-data;
// Prune removes a recipe's old AMIs and their snapshots, never one still in use.
//
// Every call goes through one retry loop (retry.go) with per-attempt deadlines; the SDK's
// own retries are off. Credentials and region come from the standard AWS chain unless a
// test hands in a configuration. The tests run the real aws-sdk-go-v2 clients against the
// local servers of artifacts/aws/fakeaws, never against AWS.
package aws
