package fakeaws

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// HTTPClient is an HTTP client that can only reach loopback addresses: a test whose
// endpoints are misconfigured fails to dial instead of sending anything to AWS.
func HTTPClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ip := net.ParseIP(host)
			if ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("fakeaws: refusing to dial %s: tests talk to 127.0.0.1 only", addr)
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 64,
	}
	return &http.Client{Transport: tr}
}

// Config is an SDK configuration for region with the fake's credentials (secret overrides
// the secret key, for wrong-credential tests) and the loopback-only client.
func Config(region, secret string) sdkaws.Config {
	if secret == "" {
		secret = SecretKey
	}
	return sdkaws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, secret, ""),
		HTTPClient:  HTTPClient(),
	}
}

// FailNextImage makes the next image that is registered or copied in region end in the
// failed state with msg as its reason, instead of becoming available.
func (c *Cloud) FailNextImage(region, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.region(region).failNext = msg
}
