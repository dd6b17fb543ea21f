package fakeaws

import (
	"io"
	"net/http"
	"time"
)

// Kind is a kind of injected fault.
type Kind int

const (
	// Throttle answers with the service's throttling error: EC2 RequestLimitExceeded (503),
	// EBS ThrottlingException (429), S3 SlowDown (503).
	Throttle Kind = iota + 1
	// ServerError answers 500 with the service's internal error code.
	ServerError
	// Drop reads part of the request and closes the connection without an answer.
	Drop
	// BadChecksum (ebs:PutSnapshotBlock) corrupts the block as it arrives, so its SHA-256
	// does not match the x-amz-Checksum header and the block is rejected.
	BadChecksum
	// Stall holds the request for Fault.Delay (or until the client gives up) before serving it.
	Stall
	// NotFoundYet (ebs:PutSnapshotBlock) answers ResourceNotFoundException SNAPSHOT_NOT_FOUND,
	// as EBS does for a short while after StartSnapshot.
	NotFoundYet
	// Fail answers Fault.Status with Fault.Code and Fault.Message.
	Fail
)

// Fault is an injected failure of an operation.
type Fault struct {
	// Op is "service:Operation" (ec2:RegisterImage, ebs:PutSnapshotBlock, s3:UploadPart).
	Op string
	// Region limits the fault to requests signed for one region ("" any).
	Region string
	Kind   Kind
	// Times is how many calls the fault hits (0 means 1, -1 every call); After skips that
	// many matching calls first.
	Times, After int
	Delay        time.Duration
	// For Fail.
	Status        int
	Code, Message string

	seen int
}

// Inject adds a fault. Faults are matched in the order they were added.
func (c *Cloud) Inject(f Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.Times == 0 {
		f.Times = 1
	}
	c.faults = append(c.faults, &f)
}

// ClearFaults removes every fault.
func (c *Cloud) ClearFaults() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = nil
}

// take returns the fault that hits this call of op in region, if any.
func (c *Cloud) take(op, region string) *Fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.faults {
		if f.Op != op || (f.Region != "" && f.Region != region) || f.Times == 0 {
			continue
		}
		f.seen++
		if f.seen <= f.After {
			continue
		}
		if f.Times > 0 {
			f.Times--
		}
		cp := *f
		return &cp
	}
	return nil
}

// count records an accepted call and runs OnCall.
func (c *Cloud) count(op string) {
	c.mu.Lock()
	c.calls[op]++
	n := c.calls[op]
	hook := c.OnCall
	c.mu.Unlock()
	if hook != nil {
		hook(op, n)
	}
}

// drop reads up to half the body and closes the connection under the client.
func drop(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > 0 {
		io.CopyN(io.Discard, r.Body, r.ContentLength/2)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("fakeaws: connection cannot be hijacked")
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	_ = buf.Flush()
	conn.Close()
}

// stall waits d or until the client goes away; it says whether to go on serving.
func stall(r *http.Request, d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-r.Context().Done():
		return false
	}
}

// reply is one error answer of a service: HTTP status, error code, EBS's reason, message.
type reply struct {
	status            int
	code, reason, msg string
}

// faultReplies is how one service answers the injected faults that are error replies.
type faultReplies struct {
	throttle, server reply
	notFoundYet      reply // zero: the service has no such fault
	write            func(http.ResponseWriter, reply)
}

// serve carries out f (nil: none) on the request as the service answers it, and reports
// whether the request is answered; false: serve it (after a stall, or for a fault the
// handler applies itself, such as BadChecksum).
func (fr faultReplies) serve(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	if f == nil {
		return false
	}
	switch f.Kind {
	case Throttle:
		fr.write(w, fr.throttle)
	case ServerError:
		fr.write(w, fr.server)
	case NotFoundYet:
		if fr.notFoundYet.status == 0 {
			return false
		}
		fr.write(w, fr.notFoundYet)
	case Drop:
		drop(w, r)
	case Stall:
		return !stall(r, f.Delay)
	case Fail:
		fr.write(w, reply{status: f.Status, code: f.Code, msg: f.Message})
	default:
		return false
	}
	return true
}
