package remotecache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// metaSHA256 is the user metadata that records an object's sha256 (x-amz-meta-sha256).
const metaSHA256 = "sha256"

// Options say how to reach the bucket.
type Options struct {
	// Endpoint, when set, is where requests go, path-style. Empty means the first of
	// KUBEBAKE_S3_ENDPOINT, AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL that is set, else AWS.
	Endpoint string
	// Config, when set, replaces the standard AWS chain (tests give static credentials and a
	// client that dials 127.0.0.1 only).
	Config *sdkaws.Config
}

// S3 is a shared cache in a bucket. It implements artifacts.Remote; its methods are safe for
// concurrent use.
type S3 struct {
	loc    Location
	client *s3.Client
}

// New makes the client of the shared cache at loc. Nothing is sent yet: an unreachable bucket
// or missing credentials show at the first request, where the cache turns them into one
// warning and goes on without the remote.
func New(ctx context.Context, loc Location, opts Options) (*S3, error) {
	endpoint := opts.Endpoint
	if endpoint == "" {
		var err error
		if endpoint, err = endpointFromEnv(); err != nil {
			return nil, err
		}
	}
	var cfg sdkaws.Config
	if opts.Config != nil {
		cfg = opts.Config.Copy()
	} else {
		// A blackholed endpoint should cost seconds, not the default 30 s per attempt.
		httpClient := awshttp.NewBuildableClient().WithDialerOptions(func(d *net.Dialer) { d.Timeout = 10 * time.Second })
		var err error
		if cfg, err = config.LoadDefaultConfig(ctx, config.WithHTTPClient(httpClient)); err != nil {
			return nil, fmt.Errorf("shared cache %s: loading the AWS configuration: %w", loc, err)
		}
	}
	if cfg.Region == "" {
		if endpoint == "" {
			return nil, fmt.Errorf("shared cache %s: no AWS region; set AWS_REGION (or the profile's region) to the bucket's region", loc)
		}
		// S3-compatible stores mostly ignore the region, but SigV4 needs one.
		cfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		// We check sha256 ourselves on every download: no second checksum scheme (and no
		// aws-chunked uploads, which not every S3-compatible store takes).
		o.RequestChecksumCalculation = sdkaws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = sdkaws.ResponseChecksumValidationWhenRequired
		if endpoint != "" {
			o.BaseEndpoint = sdkaws.String(endpoint)
			o.UsePathStyle = true
		}
	})
	return &S3{loc: loc, client: client}, nil
}

// Location is where the cache lives.
func (s *S3) Location() Location { return s.loc }

// URL names the object rel (s3://bucket/prefix/rel); URL("") names the cache.
func (s *S3) URL(rel string) string {
	if rel == "" {
		return s.loc.String()
	}
	return "s3://" + s.loc.Bucket + "/" + s.loc.objectKey(rel)
}

// Has reports whether the object rel exists (a HEAD request).
func (s *S3) Has(ctx context.Context, rel string) (bool, error) {
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.loc.Bucket, Key: sdkaws.String(s.loc.objectKey(rel))})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// Open returns the content of rel and the sha256 its metadata records ("" if none). A missing
// object is an error wrapping fs.ErrNotExist.
func (s *S3) Open(ctx context.Context, rel string) (io.ReadCloser, string, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.loc.Bucket, Key: sdkaws.String(s.loc.objectKey(rel))})
	if isNotFound(err) {
		return nil, "", fmt.Errorf("%s: %w", s.URL(rel), fs.ErrNotExist)
	}
	if err != nil {
		return nil, "", err
	}
	return out.Body, metaValue(out.Metadata, metaSHA256), nil
}

// Put uploads size bytes of content as rel with sha256hex in its metadata. content must be
// seekable: the SDK reads it once to sign it and again to send it.
func (s *S3) Put(ctx context.Context, rel string, content io.ReadSeeker, size int64, sha256hex string) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.loc.Bucket, Key: sdkaws.String(s.loc.objectKey(rel)),
		Body: content, ContentLength: sdkaws.Int64(size),
		ContentType: sdkaws.String("application/octet-stream"),
		Metadata:    map[string]string{metaSHA256: sha256hex},
	})
	return err
}

// isNotFound tells a missing object from every other failure. A missing bucket is a failure
// (NoSuchBucket): the configuration is wrong, and the cache warns about it. Note that S3
// answers 403, not 404, for a missing object to a caller without s3:ListBucket.
func isNotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	return false
}

// metaValue reads user metadata by name, whatever case the server sent its header in.
func metaValue(meta map[string]string, name string) string {
	for k, v := range meta {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}
