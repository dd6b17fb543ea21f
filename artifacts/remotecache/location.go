// Package remotecache keeps kubebake's shared artifact cache in an S3 bucket (or an
// S3-compatible store), so that CI runners share compiled Kubernetes binaries, .deb files and
// rootfs tarballs. It is the artifacts.Remote behind a local artifacts.Cache: the cache decides
// what to look up and upload and checks every download; this package only moves objects:
//
//	<prefix>/blobs/sha256/<hex>   a blob, named by the sha256 of its content
//	<prefix>/rootfs/<key>.tar     a rootfs tarball, named by its spec key
//
// Every object records the sha256 of its content in its metadata (x-amz-meta-sha256).
// Credentials and region come from the standard AWS chain (environment, shared config and
// credentials files, profile, IMDS); KUBEBAKE_S3_ENDPOINT (or AWS_ENDPOINT_URL_S3) sends the
// requests elsewhere, path-style.
package remotecache

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/kubebake/kubebake/internal/redact"
)

// The settings a shared cache is configured with, besides the --cache-remote flag.
const (
	// EnvRemote names the shared cache when --cache-remote is not given: s3://BUCKET/PREFIX.
	EnvRemote = "KUBEBAKE_CACHE_REMOTE"
	// EnvEndpoint overrides the S3 endpoint (an S3-compatible store, a local test server).
	EnvEndpoint = "KUBEBAKE_S3_ENDPOINT"
)

// endpointSettings are read in this order; the first one set is the endpoint. The SDK reads
// the AWS ones itself too, but would not switch to path-style addressing, which a private or
// local endpoint needs (it has no per-bucket host names).
var endpointSettings = []string{EnvEndpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}

// Location is where a shared cache lives: s3://Bucket/Prefix.
type Location struct {
	Bucket string
	// Prefix is the folder of the cache in the bucket, without leading or trailing slash
	// ("" for the bucket's root).
	Prefix string
}

// String is the location as an s3:// URL.
func (l Location) String() string {
	if l.Prefix == "" {
		return "s3://" + l.Bucket
	}
	return "s3://" + l.Bucket + "/" + l.Prefix
}

// objectKey is the key of the cache's object rel in the bucket.
func (l Location) objectKey(rel string) string {
	if l.Prefix == "" {
		return rel
	}
	return l.Prefix + "/" + rel
}

const locationHelp = "give s3://BUCKET/PREFIX, e.g. s3://ci-kubebake-cache/runners"

// ParseLocation reads an s3://BUCKET/PREFIX URL. Its errors say what is wrong and what to give;
// the caller adds which flag or variable held the URL.
func ParseLocation(raw string) (Location, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("not a URL (%v); %s", err, locationHelp)
	}
	switch {
	case u.Scheme != "s3":
		return Location{}, fmt.Errorf("only s3:// URLs are supported; %s (for an S3-compatible store keep s3:// and set %s to its URL)", locationHelp, EnvEndpoint)
	case u.User != nil:
		return Location{}, errors.New("the URL holds credentials: remove them, they come from the standard AWS chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)")
	case u.Host == "":
		return Location{}, fmt.Errorf("no bucket; %s", locationHelp)
	case u.RawQuery != "" || u.Fragment != "":
		return Location{}, fmt.Errorf("the URL has a query or fragment, which means nothing here; %s", locationHelp)
	}
	if err := checkBucket(u.Host); err != nil {
		return Location{}, err
	}
	prefix := strings.Trim(u.Path, "/")
	for _, seg := range strings.Split(prefix, "/") {
		if prefix != "" && (seg == "" || seg == "." || seg == "..") {
			return Location{}, fmt.Errorf("prefix %q has an empty, . or .. segment; %s", prefix, locationHelp)
		}
	}
	return Location{Bucket: u.Host, Prefix: path.Clean("/" + prefix)[1:]}, nil
}

// checkBucket applies S3's bucket naming rules: 3 to 63 lowercase letters, digits, dots and
// hyphens, beginning and ending with a letter or digit.
func checkBucket(b string) error {
	ok := len(b) >= 3 && len(b) <= 63
	for i, r := range b {
		alnum := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		if !alnum && r != '.' && r != '-' || (i == 0 || i == len(b)-1) && !alnum {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("bucket %q is not a valid S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens); %s", b, locationHelp)
	}
	return nil
}

// endpointFromEnv is the endpoint override ("" if none), checked to be an absolute http(s) URL.
func endpointFromEnv() (string, error) {
	for _, name := range endpointSettings {
		v := os.Getenv(name)
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("%s %q: give an absolute URL such as https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:9000", name, redact.URL(v))
		}
		return v, nil
	}
	return "", nil
}
