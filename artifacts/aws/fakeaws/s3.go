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
		if f := c.take(op, region); f != nil {
			switch f.Kind {
			case Throttle:
				s3Error(w, 503, "SlowDown", "Please reduce your request rate.")
				return
			case ServerError:
				s3Error(w, 500, "InternalError", "We encountered an internal error. Please try again.")
				return
			case Drop:
				drop(w, r)
				return
			case Stall:
				if !stall(r, f.Delay) {
					return
				}
			case Fail:
				s3Error(w, f.Status, f.Code, f.Message)
				return
			}
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

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>%s</RequestId></Error>`,
		code, xmlEscape(msg), newID("req"))
}
