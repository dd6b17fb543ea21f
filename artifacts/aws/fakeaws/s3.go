package fakeaws

import (
	"fmt"
	"net/http"
)

// wrapS3 puts SigV4 checks and fault injection in front of gofakes3, which has neither.
func (c *Cloud) wrapS3(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		region, err := verifySigV4(r, "s3", c.keys, c.clock())
		if err != nil {
			if ae, ok := err.(*authError); ok && ae.unknownKey {
				s3Error(w, 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
			} else {
				s3Error(w, 403, "SignatureDoesNotMatch", err.Error())
			}
			return
		}
		op := "s3:" + s3Op(r)
		c.count(op)
		if s3Faults.serve(w, r, c.take(op, region)) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// s3Op names a request by the S3 operation it is.
func s3Op(r *http.Request) string {
	q := r.URL.Query()
	_, uploads := q["uploads"]
	upload := q.Get("uploadId") != ""
	switch r.Method {
	case http.MethodPut:
		if upload {
			return "UploadPart"
		}
		return "PutObject"
	case http.MethodPost:
		if uploads {
			return "CreateMultipartUpload"
		}
		if upload {
			return "CompleteMultipartUpload"
		}
		return "Post"
	case http.MethodDelete:
		if upload {
			return "AbortMultipartUpload"
		}
		return "DeleteObject"
	case http.MethodHead:
		return "HeadObject"
	}
	return "GetObject"
}

// s3Faults are S3's answers to injected faults.
var s3Faults = faultReplies{
	throttle: reply{status: 503, code: "SlowDown", msg: "Please reduce your request rate."},
	server:   reply{status: 500, code: "InternalError", msg: "We encountered an internal error. Please try again."},
	write:    func(w http.ResponseWriter, e reply) { s3Error(w, e.status, e.code, e.msg) },
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>%s</RequestId></Error>`,
		code, xmlEscape(msg), newID("req"))
}
