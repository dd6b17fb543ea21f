package fakeaws

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// authError is a request whose signature does not hold: the service answers it with its
// own code for a bad signature or an unknown key.
type authError struct {
	unknownKey bool
	msg        string
}

func (e *authError) Error() string { return e.msg }

// verifySigV4 checks r's AWS Signature Version 4 (the Authorization header form the SDK
// sends) against the secret of its access key, recomputing the canonical request from what
// arrived: method, path, query, the signed headers and the payload hash. It returns the
// region of the credential scope, which is how one server serves every region. The body is
// read and put back when the payload hash must be computed.
//
// This is written from the published algorithm, independently of the SDK's signer, so a
// test that passes shows the SDK and the algorithm agree, not that one code agrees with itself.
func verifySigV4(r *http.Request, service string, keys map[string]string, now time.Time) (region string, err error) {
	auth := r.Header.Get("Authorization")
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return "", &authError{msg: "missing or non-SigV4 Authorization header"}
	}
	fields := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(auth, algo), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok {
			fields[k] = v
		}
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 || cred[4] != "aws4_request" {
		return "", &authError{msg: "malformed Credential " + fields["Credential"]}
	}
	akid, date, region, svc := cred[0], cred[1], cred[2], cred[3]
	secret, ok := keys[akid]
	if !ok {
		return "", &authError{unknownKey: true, msg: "The security token included in the request is invalid (unknown access key " + akid + ")"}
	}
	if svc != service {
		return "", &authError{msg: fmt.Sprintf("credential scope names service %q, this endpoint is %q", svc, service)}
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, perr := time.Parse("20060102T150405Z", amzDate)
	if perr != nil || !strings.HasPrefix(amzDate, date) {
		return "", &authError{msg: "bad X-Amz-Date " + amzDate}
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return "", &authError{msg: "Signature expired: " + amzDate + " is more than 15 minutes from the server's time"}
	}

	signed := strings.Split(fields["SignedHeaders"], ";")
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	if payloadHash == "" || (service == "s3" && payloadHash != "UNSIGNED-PAYLOAD" && !strings.HasPrefix(payloadHash, "STREAMING-")) {
		body, rerr := io.ReadAll(r.Body)
		if rerr != nil {
			return "", rerr
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sum := sha256.Sum256(body)
		if payloadHash != "" && payloadHash != hex.EncodeToString(sum[:]) {
			return "", &authError{msg: "X-Amz-Content-Sha256 does not match the body"}
		}
		payloadHash = hex.EncodeToString(sum[:])
	}

	var canon strings.Builder
	canon.WriteString(r.Method + "\n")
	path := r.URL.EscapedPath()
	if service != "s3" {
		// Every service but S3 signs the path encoded once more.
		path = uriEncode(path, true)
	}
	if path == "" {
		path = "/"
	}
	canon.WriteString(path + "\n")
	canon.WriteString(canonicalQuery(r) + "\n")
	for _, h := range signed {
		canon.WriteString(h + ":" + headerValue(r, h) + "\n")
	}
	canon.WriteString("\n" + fields["SignedHeaders"] + "\n" + payloadHash)

	scope := date + "/" + region + "/" + service + "/aws4_request"
	crHash := sha256.Sum256([]byte(canon.String()))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crHash[:])
	key := hmacSHA256([]byte("AWS4"+secret), date)
	for _, s := range []string{region, service, "aws4_request"} {
		key = hmacSHA256(key, s)
	}
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return "", &authError{msg: "The request signature we calculated does not match the signature you provided"}
	}
	return region, nil
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// headerValue is a header's canonical value: its values trimmed, inner runs of spaces
// collapsed, joined by commas. Host and Content-Length live outside r.Header in Go.
func headerValue(r *http.Request, name string) string {
	switch name {
	case "host":
		return r.Host
	case "content-length":
		return fmt.Sprint(r.ContentLength)
	}
	vals := r.Header.Values(name)
	for i, v := range vals {
		vals[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(vals, ",")
}

func canonicalQuery(r *http.Request) string {
	q := r.URL.Query()
	var pairs []string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k, false)+"="+uriEncode(v, false))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

// uriEncode percent-encodes every byte but the unreserved ones (and '/' when keepSlash).
func uriEncode(s string, keepSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~', c == '/' && keepSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
