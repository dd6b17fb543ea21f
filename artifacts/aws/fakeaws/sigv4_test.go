package fakeaws

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The verifier accepts what the SDK's signer signs and refuses every kind of tampering: the
// checks the publish tests rely on when they say "wrong credentials are refused".
func TestVerifySigV4(t *testing.T) {
	keys := map[string]string{AccessKey: SecretKey}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	body := []byte("Action=DescribeImages&Version=2016-11-15&Owner.1=self")
	sign := func(secret string, body []byte, at time.Time, mutate func(*http.Request)) *http.Request {
		r, _ := http.NewRequest("POST", "http://127.0.0.1:1/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		sum := sha256.Sum256(body)
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: AccessKey, SecretAccessKey: secret},
			r, hex.EncodeToString(sum[:]), "ec2", "eu-west-1", at)
		if err != nil {
			t.Fatal(err)
		}
		if mutate != nil {
			mutate(r)
		}
		return r
	}
	region, err := verifySigV4(sign(SecretKey, body, now, nil), "ec2", keys, now)
	if err != nil || region != "eu-west-1" {
		t.Fatalf("a good signature: %q %v", region, err)
	}
	for _, c := range []struct {
		name string
		r    *http.Request
		svc  string
		want string
	}{
		{"wrong secret", sign("not-the-secret", body, now, nil), "ec2", "does not match"},
		{"body changed", sign(SecretKey, body, now, func(r *http.Request) {
			r.Body = readCloser(strings.Replace(string(body), "self", "amazon", 1))
		}), "ec2", "does not match"},
		{"signed header changed", sign(SecretKey, body, now, func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }), "ec2", "does not match"},
		{"unknown key", sign(SecretKey, body, now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), AccessKey, "AKIDOTHER", 1))
		}), "ec2", "unknown access key"},
		{"other service", sign(SecretKey, body, now, nil), "ebs", "service"},
		{"too old", sign(SecretKey, body, now.Add(-time.Hour), nil), "ec2", "expired"},
		{"unsigned", func() *http.Request {
			r, _ := http.NewRequest("POST", "http://127.0.0.1:1/", bytes.NewReader(body))
			return r
		}(), "ec2", "Authorization"},
	} {
		if _, err := verifySigV4(c.r, c.svc, keys, now); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

type stringReadCloser struct{ *strings.Reader }

func (stringReadCloser) Close() error { return nil }

func readCloser(s string) stringReadCloser { return stringReadCloser{strings.NewReader(s)} }
