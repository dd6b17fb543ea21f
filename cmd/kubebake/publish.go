package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	kbaws "github.com/kubebake/kubebake/artifacts/aws"
)

func init() {
	var (
		af  awsFlags
		req kbaws.PublishRequest
	)
	cmd := &cobra.Command{
		Use:   "aws OUTDIR --region R [--regions R2,R3] [--share ACCOUNT,...] [--public] [--bucket B]",
		Short: "Publish a build as an AMI, copied to more regions and shared",
		Long: `Publish the raw image of a build output folder as an AMI: x86_64, UEFI boot, ENA, IMDSv2
required, a gp3 root volume of the image's size, tagged (and its snapshots) with the recipe,
Kubernetes version, lock hash, image sha256, build date and kubebake version.

The image goes up with the EBS direct APIs: only blocks that are not all zeros are sent,
--workers at a time, each with its SHA-256, and the snapshot is completed with the linear
checksum. Where the EBS direct APIs are denied, --bucket uploads it to S3 instead (multipart)
and imports it with ImportSnapshot (the role --import-role, "vmimport" by default, must be
able to read the bucket); the object is deleted afterwards.

Publishing is idempotent: an AMI tagged with the same image sha256 is reused, in the home
region and in every --regions copy. A run cut short leaves no half-registered AMI: a failed or
interrupted upload deletes its snapshot, a completed snapshot that never became an AMI is
registered by the next run, and an AMI that does not become available is deregistered.

The result (AMI and snapshot per region) is written to OUTDIR/publish-aws.json and printed
(-o json for the same document). A region whose copy failed is listed with its error and the
command exits 1; the other regions are published. Credentials and region come from the
standard AWS chain (environment, shared config, --profile, IMDS).`,
		Example: `  kubebake publish aws out/debian-12 --region eu-west-1
  kubebake publish aws out/debian-12 --region eu-west-1 --regions us-east-1,ap-southeast-2 --share 123456789012
  kubebake publish aws out/debian-12 --region eu-west-1 --method s3 --bucket my-import-bucket`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := kbaws.ReadBuild(args[0])
			if err != nil {
				return err
			}
			s, err := af.session(cmd.Context())
			if err != nil {
				return err
			}
			req.Build = b
			prog := &publishProgress{w: cmd.ErrOrStderr(), tty: isTerminal(cmd.ErrOrStderr())}
			req.Events = prog.event
			res, err := s.Publish(cmd.Context(), req)
			prog.done()
			var re *kbaws.RegionsError
			if err != nil && !errors.As(err, &re) {
				return err
			}
			if perr := printResult(cmd, res, func() string { return publishText(res, args[0]) }); perr != nil {
				return perr
			}
			return err
		},
	}
	af.register(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&req.CopyRegions, "regions", nil, "more regions to copy the AMI to, comma-separated")
	f.StringSliceVar(&req.Share, "share", nil, "AWS account ids that may launch the AMI, comma-separated")
	f.BoolVar(&req.Public, "public", false, "let every AWS account launch the AMI")
	f.StringVar(&req.Bucket, "bucket", "", "S3 bucket for the S3 + ImportSnapshot path (used when EBS direct is denied, or with --method s3)")
	f.StringVar(&req.Method, "method", kbaws.MethodAuto, "upload method: auto (EBS direct, S3 with --bucket when EBS direct is denied), ebs or s3")
	f.StringVar(&req.ImportRole, "import-role", "vmimport", "IAM role ImportSnapshot uses to read --bucket")
	f.IntVar(&req.Workers, "workers", kbaws.DefaultWorkers, "blocks (or S3 parts, at most 8) in flight at once")
	f.DurationVar(&req.DeprecateAfter, "deprecate-after", 0, "deprecate the AMIs this long after publishing (e.g. 2160h); 0: never")
	publishCmd.AddCommand(cmd)
}

// publishProgress shows the publish on stderr: stage messages as lines, and the upload as
// one live line on a terminal or a line every few seconds otherwise.
type publishProgress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	shown time.Time
	live  bool
}

func (p *publishProgress) event(e kbaws.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Upload == nil {
		p.clear()
		fmt.Fprintf(p.w, "publish: %s %s: %s\n", e.Region, e.Stage, e.Message)
		return
	}
	u := *e.Upload
	every := 5 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if u.Done != u.Blocks && time.Since(p.shown) < every {
		return
	}
	p.shown = time.Now()
	line := fmt.Sprintf("publish: %s upload: %d/%d blocks, %s sent, %.1f MiB/s, %d zero blocks skipped",
		e.Region, u.Done, u.Blocks, humanBytes(u.BytesSent), u.MiBPerSecond(), u.Skipped)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.live = true
		if u.Done == u.Blocks {
			p.clear()
			fmt.Fprintln(p.w, line)
		}
		return
	}
	fmt.Fprintln(p.w, line)
}

// clear ends the live line; the caller holds mu.
func (p *publishProgress) clear() {
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
		p.live = false
	}
}

func (p *publishProgress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

func publishText(res *kbaws.PublishResult, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "published %s (Kubernetes %s, image sha256 %s) as %s\n", res.Recipe, res.KubernetesVersion, res.ImageSHA256[:12], res.Name)
	if u := res.Upload; u != nil {
		fmt.Fprintf(&b, "uploaded %s of %s by %s in %.1fs (%.1f MiB/s)", humanBytes(u.UploadedBytes), humanBytes(u.ImageBytes), u.Method, u.Seconds, u.MiBPerSecond)
		if u.Blocks > 0 {
			fmt.Fprintf(&b, ", %d of %d blocks all zeros and skipped (%.0f%%)", u.BlocksSkipped, u.Blocks, 100*u.SkippedShare())
		}
		b.WriteString("\n")
	}
	if len(res.Retries) > 0 {
		var parts []string
		for k, v := range res.Retries {
			parts = append(parts, fmt.Sprintf("%s x%d", k, v))
		}
		fmt.Fprintf(&b, "retried: %s\n", strings.Join(parts, ", "))
	}
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "REGION\tAMI\tSNAPSHOT\tSTATUS")
	for _, r := range res.Regions {
		status := "new"
		switch {
		case r.Error != "":
			status = "FAILED: " + r.Error
		case r.Reused:
			status = "reused"
		}
		if r.Public {
			status += ", public"
		}
		if len(r.SharedWith) > 0 {
			status += ", shared with " + strings.Join(r.SharedWith, ",")
		}
		if r.DeprecateAt != "" {
			status += ", deprecated at " + r.DeprecateAt
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Region, dash(r.ImageID), dash(strings.Join(r.SnapshotIDs, ",")), status)
	}
	w.Flush()
	fmt.Fprintf(&b, "wrote %s\n", filepath.Join(dir, kbaws.ResultName))
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
