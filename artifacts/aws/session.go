package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kubebake/kubebake/internal/redact"
)

// Endpoints override where the clients send their requests, for private endpoints (VPC
// interface endpoints, a proxy) and for tests. Empty means the SDK's own resolution (which
// also reads AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_EC2/_EBS/_S3). The same URL serves every
// region; the region still goes into each request's signature.
type Endpoints struct {
	All, EC2, EBS, S3 string
}

func (e Endpoints) pick(one string) string {
	if one != "" {
		return one
	}
	return e.All
}

// Check refuses an endpoint that is not an absolute http(s) URL, naming its flag.
func (e Endpoints) Check() error {
	for _, c := range []struct{ flag, v string }{{"--endpoint-url", e.All}, {"--endpoint-url-ec2", e.EC2}, {"--endpoint-url-ebs", e.EBS}, {"--endpoint-url-s3", e.S3}} {
		if c.v == "" {
			continue
		}
		u, err := url.Parse(c.v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s %q: give an absolute URL such as https://ec2.eu-west-1.amazonaws.com", c.flag, redact.URL(c.v))
		}
	}
	return nil
}

// Options say how a Session reaches AWS.
type Options struct {
	// Region is the region of the first client and the default of every command.
	Region string
	// Profile is a shared config profile ("" for AWS_PROFILE or the default chain).
	Profile   string
	Endpoints Endpoints
	// Config, when set, is used instead of the standard credential and config chain (env,
	// shared files, IMDS). Tests give one with static credentials.
	Config *sdkaws.Config
	Retry  RetryPolicy
	// Poll is the interval of waits for snapshots, images and import tasks (default 5s), and
	// WaitTimeout their bound (default 2h: a large import or a far copy takes long).
	Poll, WaitTimeout time.Duration
	Log               *slog.Logger
}

// Session holds the configuration and one set of clients per region.
type Session struct {
	base      sdkaws.Config
	endpoints Endpoints
	retry     RetryPolicy
	poll      time.Duration
	wait      time.Duration
	log       *slog.Logger
	retries   retryStats

	mu      sync.Mutex
	regions map[string]*clients
}

// Region is the session's default region.
func (s *Session) Region() string { return s.base.Region }

type clients struct {
	region string
	ec2    *ec2.Client
	ebs    *ebs.Client
	s3     *s3.Client
}

// NewSession loads the configuration: credentials and region from the standard AWS chain
// (environment, shared config and credentials files, the profile, IMDS on EC2), unless
// opts.Config is given.
func NewSession(ctx context.Context, opts Options) (*Session, error) {
	if err := opts.Endpoints.Check(); err != nil {
		return nil, err
	}
	var cfg sdkaws.Config
	if opts.Config != nil {
		cfg = opts.Config.Copy()
	} else {
		var lo []func(*config.LoadOptions) error
		if opts.Region != "" {
			lo = append(lo, config.WithRegion(opts.Region))
		}
		if opts.Profile != "" {
			lo = append(lo, config.WithSharedConfigProfile(opts.Profile))
		}
		var err error
		if cfg, err = config.LoadDefaultConfig(ctx, lo...); err != nil {
			var pe config.SharedConfigProfileNotExistError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("--profile %q: no such profile in the shared config or credentials file", opts.Profile)
			}
			return nil, fmt.Errorf("loading the AWS configuration: %w", err)
		}
	}
	if opts.Region != "" {
		cfg.Region = opts.Region
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("no AWS region: give --region, or set AWS_REGION or the profile's region")
	}
	// Our own retries only (retry.go): the SDK's would nest inside them.
	cfg.Retryer = func() sdkaws.Retryer { return sdkaws.NopRetryer{} }
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	poll, wait := opts.Poll, opts.WaitTimeout
	if poll <= 0 {
		poll = 5 * time.Second
	}
	if wait <= 0 {
		wait = 2 * time.Hour
	}
	return &Session{base: cfg, endpoints: opts.Endpoints, retry: opts.Retry.withDefaults(), poll: poll, wait: wait,
		log: log, regions: map[string]*clients{}}, nil
}

// clients returns the clients of region ("" for the session's region).
func (s *Session) clients(region string) *clients {
	if region == "" {
		region = s.base.Region
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.regions[region]; c != nil {
		return c
	}
	c := &clients{region: region}
	c.ec2 = ec2.NewFromConfig(s.base, func(o *ec2.Options) {
		o.Region = region
		if ep := s.endpoints.pick(s.endpoints.EC2); ep != "" {
			o.BaseEndpoint = sdkaws.String(ep)
		}
	})
	c.ebs = ebs.NewFromConfig(s.base, func(o *ebs.Options) {
		o.Region = region
		if ep := s.endpoints.pick(s.endpoints.EBS); ep != "" {
			o.BaseEndpoint = sdkaws.String(ep)
		}
	})
	c.s3 = s3.NewFromConfig(s.base, func(o *s3.Options) {
		o.Region = region
		// Parts carry Content-MD5 (upload_s3.go); no second, CRC checksum scheme on top.
		o.RequestChecksumCalculation = sdkaws.RequestChecksumCalculationWhenRequired
		if ep := s.endpoints.pick(s.endpoints.S3); ep != "" {
			o.BaseEndpoint = sdkaws.String(ep)
			// A private or local endpoint has no per-bucket host names.
			o.UsePathStyle = true
		}
	})
	s.regions[region] = c
	return c
}

// Retries counts the retried failures of this session so far, by AWS error code (or
// "connection dropped", "timed out").
func (s *Session) Retries() map[string]int { return s.retries.snapshot() }
