package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	kbaws "github.com/kubebake/kubebake/artifacts/aws"
	"github.com/kubebake/kubebake/artifacts/aws/fakeaws"
	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// awsEnv starts the fake AWS endpoints and points the standard credential chain at its
// static key: no shared files, no IMDS, no profile. Every request goes to 127.0.0.1 through
// the --endpoint-url-* flags that awsArgs returns.
func awsEnv(t *testing.T) (*fakeaws.Server, []string) {
	t.Helper()
	srv, err := fakeaws.New(fakeaws.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": fakeaws.AccessKey, "AWS_SECRET_ACCESS_KEY": fakeaws.SecretKey, "AWS_SESSION_TOKEN": "",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_PROFILE": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_ENDPOINT_URL": "",
	} {
		t.Setenv(k, v)
	}
	return srv, []string{"--region", "us-east-1", "--endpoint-url-ec2", srv.EC2.URL, "--endpoint-url-ebs", srv.EBS.URL, "--endpoint-url-s3", srv.S3.URL, "--poll-interval", "10ms"}
}

// resetFlags puts a command's flags back to their defaults now and when the test ends: the
// cobra tree lives as long as the test binary.
func resetFlags(t *testing.T, path ...string) {
	t.Helper()
	reset := func() {
		c, _, err := rootCmd.Find(path)
		if err != nil {
			t.Fatal(err)
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if sv, ok := f.Value.(pflag.SliceValue); ok {
				sv.Replace(nil)
			} else {
				f.Value.Set(f.DefValue)
			}
			f.Changed = false
		})
	}
	reset()
	t.Cleanup(reset)
}

func TestPublishAWSCommand(t *testing.T) {
	srv, flags := awsEnv(t)
	resetFlags(t, "publish", "aws")
	dir := t.TempDir()
	if _, err := fakeaws.WriteBuild(dir, 6<<20); err != nil {
		t.Fatal(err)
	}
	out, logs, err := kb(t, append([]string{"publish", "aws", dir, "--regions", "eu-west-1", "--share", "210987654321", "--workers", "4", "-o", "json"}, flags...)...)
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, logs)
	}
	var res kbaws.PublishResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if len(res.Regions) != 2 || res.Regions[0].ImageID == "" || res.Regions[1].ImageID == "" || res.Upload == nil || res.Upload.BlocksSkipped != 6 {
		t.Errorf("result %+v", res)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, kbaws.ResultName))
	if err != nil {
		t.Fatal(err)
	}
	var fileRes kbaws.PublishResult
	json.Unmarshal(onDisk, &fileRes)
	if fileRes.Regions[1].ImageID != res.Regions[1].ImageID {
		t.Errorf("%s differs from the -o json result", kbaws.ResultName)
	}
	if !strings.Contains(logs, "zero blocks skipped") || !strings.Contains(logs, "publish: eu-west-1 copy") {
		t.Errorf("no progress on stderr:\n%s", logs)
	}
	if strings.Contains(out+logs, fakeaws.SecretKey) {
		t.Error("the secret key was printed")
	}

	// Text: the table, and a second run reuses both AMIs.
	resetFlags(t, "publish", "aws")
	out, logs, err = kb(t, append([]string{"publish", "aws", dir, "--regions", "eu-west-1", "-o", "text"}, flags...)...)
	if err != nil {
		t.Fatalf("second publish: %v\n%s", err, logs)
	}
	for _, want := range []string{"published tiny (Kubernetes v1.35.4", res.Regions[0].ImageID + "  ", "reused", "wrote " + filepath.Join(dir, kbaws.ResultName)} {
		if !strings.Contains(out, want) {
			t.Errorf("text result lacks %q:\n%s", want, out)
		}
	}
	if srv.Calls("ebs:StartSnapshot") != 1 {
		t.Error("the second publish uploaded again")
	}
}

func TestPublishAWSCommandErrors(t *testing.T) {
	_, flags := awsEnv(t)
	resetFlags(t, "publish", "aws")
	dir := t.TempDir()
	if _, err := fakeaws.WriteBuild(dir, 1<<20); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"publish", "aws", dir, "--endpoint-url-ec2", "localhost:1"}, "--endpoint-url-ec2"},
		{[]string{"publish", "aws", t.TempDir()}, "not a kubebake build output folder"},
		{append([]string{"publish", "aws", dir, "--method", "s3"}, flags...), "--bucket"},
		{[]string{"publish", "aws", dir}, "no AWS region"},
	} {
		resetFlags(t, "publish", "aws")
		_, _, err := kb(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}

// launch sends each role its user-data: cloud-config that cloud-init's own schema check
// accepts (or Ignition that ignition/v2 accepts), with the role's marker, the minions pointed
// at the master launched with them.
func TestLaunchAWSCommand(t *testing.T) {
	srv, flags := awsEnv(t)
	resetFlags(t, "launch", "aws")
	ami, _ := srv.AddImage("us-east-1", "kubebake-test", time.Now(), map[string]string{kbaws.TagRecipe: "debian-12"})
	bundle := filepath.Join(t.TempDir(), "demo.bundle.yaml")
	if _, logs, err := kb(t, "cluster", "init", "demo", "--master-endpoint", "10.9.9.9:6443", "--force=false", "--out", bundle, "-o", "text"); err != nil {
		t.Fatalf("cluster init: %v\n%s", err, logs)
	}
	cloudInit := testenv.NeedTool(t, "cloud-init")

	out, logs, err := kb(t, append([]string{"launch", "aws", "--ami", ami, "--role", "minion,master", "--count", "2", "--bundle", bundle,
		"--subnet", "subnet-0abc", "-o", "json"}, flags...)...)
	if err != nil {
		t.Fatalf("launch: %v\n%s", err, logs)
	}
	var res kbaws.LaunchResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	insts := srv.Instances("us-east-1")
	if len(res.Instances) != 3 || len(insts) != 3 || res.Instances[0].Role != "master" || res.Cluster != "demo" {
		t.Fatalf("launched %+v", res.Instances)
	}
	masterIP := res.Instances[0].PrivateIP
	for _, in := range insts {
		role := in.Tags[kbaws.TagRole]
		if in.ImageID != ami || in.Tags[kbaws.TagCluster] != "demo" || in.Tags["Name"] != "demo-"+role ||
			in.Tags["kubernetes.io/cluster/demo"] != "owned" || in.HTTPTokens != "required" || in.SubnetID != "subnet-0abc" {
			t.Errorf("instance %s: %+v", in.ID, in)
		}
		p := filepath.Join(t.TempDir(), "user-data")
		os.WriteFile(p, in.UserData, 0o600)
		schema, err := run.Command(cloudInit, "schema", "--config-file", p).Output(context.Background())
		if err != nil || !strings.Contains(string(schema), "Valid cloud-config") {
			t.Errorf("%s: cloud-init schema: %v %s", role, err, schema)
		}
		ud := string(in.UserData)
		if !strings.Contains(ud, "path: "+recipes.MarkerPath(role)) {
			t.Errorf("%s user-data has no marker %s:\n%s", role, recipes.MarkerPath(role), ud)
		}
		if role == "minion" && !strings.Contains(ud, cloudinit.EnvMasterEndpoint+"="+masterIP+":6443") {
			t.Errorf("minion user-data does not point at the master %s:\n%s", masterIP, ud)
		}
	}

	// Ignition for a lone minion: valid for ignition/v2, with the marker among its files; its
	// master is the bundle's endpoint.
	resetFlags(t, "launch", "aws")
	_, logs, err = kb(t, append([]string{"launch", "aws", "--ami", ami, "--role", "minion", "--count", "1", "--bundle", bundle,
		"--format", "ignition", "-o", "json"}, flags...)...)
	if err != nil {
		t.Fatalf("launch ignition: %v\n%s", err, logs)
	}
	insts = srv.Instances("us-east-1")
	ign := insts[len(insts)-1].UserData
	if err := cloudinit.ValidateIgnition(ign); err != nil {
		t.Errorf("Ignition user-data: %v", err)
	}
	var cfg struct {
		Storage struct{ Files []struct{ Path string } }
	}
	json.Unmarshal(ign, &cfg)
	if !slices.ContainsFunc(cfg.Storage.Files, func(f struct{ Path string }) bool { return f.Path == recipes.MarkerPath("minion") }) ||
		!strings.Contains(string(ign), "10.9.9.9") {
		t.Errorf("Ignition user-data: %s", ign)
	}
}

func TestPruneAWSCommand(t *testing.T) {
	srv, flags := awsEnv(t)
	resetFlags(t, "prune", "aws")
	now := time.Now()
	var ids []string
	for i := range 4 {
		id, _ := srv.AddImage("us-east-1", "r-"+string(rune('a'+i)), now.Add(-time.Duration(i+1)*time.Hour), map[string]string{kbaws.TagRecipe: "debian-12"})
		ids = append(ids, id)
	}
	srv.AddInstance("us-east-1", ids[3], "running")
	out, logs, err := kb(t, append([]string{"prune", "aws", "--recipe", "debian-12", "--keep", "1", "--dry-run", "-o", "text"}, flags...)...)
	if err != nil {
		t.Fatalf("prune: %v\n%s", err, logs)
	}
	if !strings.Contains(out, "would remove 2 of 4 AMIs of debian-12") || !strings.Contains(out, "in use: instance i-") || len(srv.Images("us-east-1")) != 4 {
		t.Errorf("dry run:\n%s", out)
	}
	resetFlags(t, "prune", "aws")
	out, logs, err = kb(t, append([]string{"prune", "aws", "--recipe", "debian-12", "--keep", "1", "-o", "json"}, flags...)...)
	if err != nil {
		t.Fatalf("prune: %v\n%s", err, logs)
	}
	var res []kbaws.PruneResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || len(res[0].Images) != 4 {
		t.Fatalf("-o json: %v %s", err, out)
	}
	if n := len(srv.Images("us-east-1")); n != 2 {
		t.Errorf("%d images left, want the newest and the one in use", n)
	}
}
