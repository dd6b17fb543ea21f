package aws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Every AWS call kubebake makes goes through Session.call: one attempt at a time, each with a
// deadline of its own, and a bounded number of attempts with jittered exponential backoff.
// The SDK's own retryer is switched off (aws.NopRetryer), so retries never nest and the
// attempt count and timeouts below are the whole story.

// RetryPolicy bounds the retries and the time of each attempt.
type RetryPolicy struct {
	// Attempts is the most tries of one call (first try included).
	Attempts int
	// BaseDelay and MaxDelay bound the backoff between tries (full jitter).
	BaseDelay, MaxDelay time.Duration
	// Timeout is the deadline of one attempt of an EC2 or EBS call.
	Timeout time.Duration
	// BlockTimeout is the deadline of one PutSnapshotBlock (512 KiB).
	BlockTimeout time.Duration
	// PartTimeout is the deadline of one S3 UploadPart.
	PartTimeout time.Duration
	// NotFoundWindow is how long after StartSnapshot a block may be refused because the
	// snapshot "does not exist" yet (EBS needs a moment to make it visible everywhere).
	NotFoundWindow time.Duration
}

// DefaultRetry is the policy unless Options.Retry says otherwise.
var DefaultRetry = RetryPolicy{
	Attempts: 8, BaseDelay: 250 * time.Millisecond, MaxDelay: 20 * time.Second,
	Timeout: 60 * time.Second, BlockTimeout: 30 * time.Second, PartTimeout: 10 * time.Minute,
	NotFoundWindow: 60 * time.Second,
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetry
	if p.Attempts > 0 {
		d.Attempts = p.Attempts
	}
	if p.BaseDelay > 0 {
		d.BaseDelay = p.BaseDelay
	}
	if p.MaxDelay > 0 {
		d.MaxDelay = p.MaxDelay
	}
	if p.Timeout > 0 {
		d.Timeout = p.Timeout
	}
	if p.BlockTimeout > 0 {
		d.BlockTimeout = p.BlockTimeout
	}
	if p.PartTimeout > 0 {
		d.PartTimeout = p.PartTimeout
	}
	if p.NotFoundWindow > 0 {
		d.NotFoundWindow = p.NotFoundWindow
	}
	return d
}

// class is what a failed attempt means for the next one.
type class int

const (
	classOther       class = iota // not retried
	classThrottled                // the service asked us to slow down
	classServer                   // a 5xx
	classNetwork                  // the connection broke
	classTimeout                  // the attempt's own deadline passed
	classChecksum                 // EBS rejected a block: its bytes did not match the checksum
	classNotYet                   // EBS: the snapshot just started is not visible yet
	classCredentials              // the credentials are missing, wrong or expired
	classDenied                   // the credentials lack a permission
)

func (c class) String() string {
	return [...]string{"error", "throttled", "server error", "connection dropped", "timed out",
		"block checksum rejected", "snapshot not visible yet", "credentials rejected", "access denied"}[c]
}

func (c class) retryable() bool {
	switch c {
	case classThrottled, classServer, classNetwork, classTimeout, classChecksum, classNotYet:
		return true
	}
	return false
}

var throttleCodes = map[string]bool{
	"RequestLimitExceeded": true, "Throttling": true, "ThrottlingException": true, "ThrottledException": true,
	"RequestThrottledException": true, "TooManyRequestsException": true, "SlowDown": true, "RequestThrottled": true,
	"EC2ThrottledException": true, "PriorRequestNotComplete": true, "BandwidthLimitExceeded": true,
}

var serverCodes = map[string]bool{
	"InternalError": true, "InternalFailure": true, "InternalServerException": true, "InternalServerError": true,
	"ServiceUnavailable": true, "Unavailable": true,
}

var credentialCodes = map[string]bool{
	"AuthFailure": true, "UnrecognizedClientException": true, "InvalidClientTokenId": true,
	"SignatureDoesNotMatch": true, "InvalidAccessKeyId": true, "InvalidSignatureException": true,
	"ExpiredToken": true, "ExpiredTokenException": true, "RequestExpired": true, "IncompleteSignature": true,
	"MissingAuthenticationToken": true,
}

var deniedCodes = map[string]bool{"AccessDenied": true, "AccessDeniedException": true, "UnauthorizedOperation": true}

// errorCode is the AWS error code in err, or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// classify says what err, from an attempt whose own context is actx, means.
func classify(actx context.Context, err error) class {
	code := errorCode(err)
	var ve *ebstypes.ValidationException
	var nf *ebstypes.ResourceNotFoundException
	var re *smithyhttp.ResponseError
	switch {
	case throttleCodes[code]:
		return classThrottled
	case credentialCodes[code]:
		return classCredentials
	case deniedCodes[code]:
		return classDenied
	case errors.As(err, &ve) && ve.Reason == ebstypes.ValidationExceptionReasonInvalidBlock:
		// EBS's reason for a block whose bytes do not match its checksum (or that is
		// malformed otherwise, which the bounded attempts then report).
		return classChecksum
	case errors.As(err, &nf) && nf.Reason == ebstypes.ResourceNotFoundExceptionReasonSnapshotNotFound:
		return classNotYet
	case serverCodes[code]:
		return classServer
	case errors.As(err, &re) && re.HTTPStatusCode() >= 500:
		return classServer
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		return classTimeout
	case code != "":
		return classOther
	case isNetwork(err):
		return classNetwork
	case strings.Contains(err.Error(), "get credentials") || strings.Contains(err.Error(), "get identity"):
		return classCredentials
	}
	return classOther
}

// isNetwork says whether err is a broken or refused connection, or a response cut short.
func isNetwork(err error) bool {
	var ne net.Error
	var rse *smithyhttp.RequestSendError
	var de *smithy.DeserializationError
	return errors.As(err, &rse) || errors.As(err, &ne) || errors.As(err, &de) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// Error is an AWS call that failed for good: which call, on what, the AWS error code (or
// the kind of failure), how many attempts were made, and what to do about it.
type Error struct {
	Op       string // the operation, "PutSnapshotBlock"
	Target   string // what it was about, "snap-0123 block 17"
	Code     string // the AWS error code, or "" for a network failure or timeout
	Class    string // throttled, server error, connection dropped, credentials rejected, ...
	Attempts int
	Fix      string
	Err      error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Target != "" {
		b.WriteString(" " + e.Target)
	}
	b.WriteString(": ")
	if e.Code != "" {
		b.WriteString(e.Code + " (" + e.Class + ")")
	} else {
		b.WriteString(e.Class)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, ", gave up after %d attempts", e.Attempts)
	}
	b.WriteString(": " + shortMessage(e.Err))
	if e.Fix != "" {
		b.WriteString("; " + e.Fix)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// shortMessage is the service's own message when there is one, not the SDK's whole chain.
func shortMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorMessage() != "" {
		return ae.ErrorMessage()
	}
	return err.Error()
}

// fixFor is the advice for a failure that retrying does not cure.
func fixFor(c class, service string) string {
	switch c {
	case classCredentials:
		return "check the credentials: AWS_PROFILE or --profile, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, " +
			"or the shared config and credentials files (and that --region is the one they are for)"
	case classDenied:
		return "the credentials lack a permission for " + service + "; grant it in IAM"
	case classThrottled:
		return "AWS kept throttling; try again later or with fewer --workers"
	}
	return ""
}

// retryStats counts retried failures by name (the AWS error code, or the class) for the
// publish result.
type retryStats struct {
	mu sync.Mutex
	m  map[string]int
}

func (r *retryStats) add(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]int{}
	}
	r.m[name]++
}

func (r *retryStats) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.m) == 0 {
		return nil
	}
	out := make(map[string]int, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}

// callOpts tunes one call.
type callOpts struct {
	timeout time.Duration
	// retryNotYetUntil lets classNotYet be retried until then (PutSnapshotBlock).
	retryNotYetUntil time.Time
}

// call runs fn until it succeeds, fails for good, or the attempts run out. op and target
// name the call in errors and logs.
func (s *Session) call(ctx context.Context, op, target string, o callOpts, fn func(ctx context.Context) error) error {
	p := s.retry
	timeout := o.timeout
	if timeout == 0 {
		timeout = p.Timeout
	}
	service, _, _ := strings.Cut(op, ":")
	name := op[strings.Index(op, ":")+1:]
	var err error
	var c class
	attempt := 0
	for attempt < p.Attempts {
		attempt++
		actx, cancel := context.WithTimeout(ctx, timeout)
		err = fn(actx)
		c = classOther
		if err != nil {
			c = classify(actx, err)
		}
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c == classNotYet && time.Now().After(o.retryNotYetUntil) {
			break
		}
		if !c.retryable() || attempt == p.Attempts {
			break
		}
		label := errorCode(err)
		if label == "" {
			label = c.String()
		}
		s.retries.add(label)
		d := backoff(p, attempt)
		s.log.Debug("retrying AWS call", "op", op, "target", target, "attempt", attempt, "error", label, "in", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return &Error{Op: name, Target: target, Code: errorCode(err), Class: c.String(), Attempts: attempt,
		Fix: fixFor(c, service), Err: err}
}

// backoff is the wait before attempt n+1: full jitter over an exponential ceiling.
func backoff(p RetryPolicy, n int) time.Duration {
	ceil := p.BaseDelay << min(n-1, 20)
	if ceil > p.MaxDelay || ceil <= 0 {
		ceil = p.MaxDelay
	}
	return p.BaseDelay/2 + time.Duration(rand.Int64N(int64(ceil)))
}
