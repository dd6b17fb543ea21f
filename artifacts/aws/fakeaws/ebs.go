package fakeaws

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// serveEBS serves the EBS direct APIs kubebake uses (REST, JSON bodies, checksum headers):
//
//	POST /snapshots                         StartSnapshot
//	PUT  /snapshots/{id}/blocks/{index}     PutSnapshotBlock
//	POST /snapshots/completion/{id}         CompleteSnapshot
func (c *Cloud) serveEBS(w http.ResponseWriter, r *http.Request) {
	region, err := verifySigV4(r, "ebs", c.keys, c.clock())
	if err != nil {
		if ae, ok := err.(*authError); ok && ae.unknownKey {
			ebsError(w, 403, "UnrecognizedClientException", "", ae.msg)
		} else {
			ebsError(w, 403, "InvalidSignatureException", "", err.Error())
		}
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var op string
	switch {
	case r.Method == http.MethodPost && len(parts) == 1 && parts[0] == "snapshots":
		op = "StartSnapshot"
	case r.Method == http.MethodPut && len(parts) == 4 && parts[0] == "snapshots" && parts[2] == "blocks":
		op = "PutSnapshotBlock"
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "snapshots" && parts[1] == "completion":
		op = "CompleteSnapshot"
	default:
		ebsError(w, 404, "ResourceNotFoundException", "", "no such EBS operation: "+r.Method+" "+r.URL.Path)
		return
	}
	c.count("ebs:" + op)
	f := c.take("ebs:"+op, region)
	if ebsFaults.serve(w, r, f) {
		return
	}
	switch op {
	case "StartSnapshot":
		c.startSnapshot(w, r, region)
	case "PutSnapshotBlock":
		c.putBlock(w, r, region, parts[1], parts[3], f != nil && f.Kind == BadChecksum)
	case "CompleteSnapshot":
		c.completeSnapshot(w, r, region, parts[2])
	}
}

func (c *Cloud) clock() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now()
}

type ebsTag struct{ Key, Value string }

func (c *Cloud) startSnapshot(w http.ResponseWriter, r *http.Request, region string) {
	var in struct {
		VolumeSize  int64
		Tags        []ebsTag
		Description string
		ClientToken string
		Timeout     int
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		ebsError(w, 400, "ValidationException", "INVALID_PARAMETER_VALUE", "body: "+err.Error())
		return
	}
	if in.VolumeSize < 1 || in.VolumeSize > 65536 {
		ebsError(w, 400, "ValidationException", "INVALID_VOLUME_SIZE", fmt.Sprintf("VolumeSize %d is out of range", in.VolumeSize))
		return
	}
	c.mu.Lock()
	reg := c.region(region)
	var s *Snapshot
	if id, ok := reg.tokens["ebs:"+in.ClientToken]; ok && in.ClientToken != "" {
		s = reg.Snapshots[id]
	}
	if s == nil {
		data, err := newStore(c.dir)
		if err != nil {
			c.mu.Unlock()
			ebsError(w, 500, "InternalServerException", "", err.Error())
			return
		}
		s = &Snapshot{ID: newID("snap"), Status: "pending", Description: in.Description, VolumeSize: int32(in.VolumeSize),
			Tags: map[string]string{}, Started: c.now(), Direct: true, data: data, written: map[int32][32]byte{}}
		for _, t := range in.Tags {
			s.Tags[t.Key] = t.Value
		}
		reg.Snapshots[s.ID] = s
		if in.ClientToken != "" {
			reg.tokens["ebs:"+in.ClientToken] = s.ID
		}
	}
	out := map[string]any{
		"SnapshotId": s.ID, "OwnerId": Account, "Status": s.Status, "StartTime": float64(s.Started.Unix()),
		"VolumeSize": s.VolumeSize, "BlockSize": BlockSize, "Description": s.Description, "Tags": tagList(s.Tags),
	}
	c.mu.Unlock()
	writeJSON(w, 201, out)
}

func tagList(m map[string]string) []ebsTag {
	out := []ebsTag{}
	for k, v := range m {
		out = append(out, ebsTag{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (c *Cloud) putBlock(w http.ResponseWriter, r *http.Request, region, id, idx string, corrupt bool) {
	index, err := strconv.ParseInt(idx, 10, 32)
	if err != nil || index < 0 {
		ebsError(w, 400, "ValidationException", "INVALID_BLOCK", "bad block index "+idx)
		return
	}
	if r.Header.Get("X-Amz-Checksum-Algorithm") != "SHA256" {
		ebsError(w, 400, "ValidationException", "INVALID_PARAMETER_VALUE", "x-amz-Checksum-Algorithm must be SHA256")
		return
	}
	if n, _ := strconv.Atoi(r.Header.Get("X-Amz-Data-Length")); n != BlockSize {
		ebsError(w, 400, "ValidationException", "INVALID_PARAMETER_VALUE", fmt.Sprintf("x-amz-Data-Length %q: blocks are %d bytes", r.Header.Get("X-Amz-Data-Length"), BlockSize))
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, BlockSize+1))
	if err != nil {
		return // the client went away
	}
	if len(data) != BlockSize {
		ebsError(w, 400, "ValidationException", "INVALID_BLOCK", fmt.Sprintf("block is %d bytes, x-amz-Data-Length says %d", len(data), BlockSize))
		return
	}
	if corrupt {
		data = bytes.Clone(data)
		data[len(data)/2] ^= 0xff
	}
	sum := sha256.Sum256(data)
	if base64.StdEncoding.EncodeToString(sum[:]) != r.Header.Get("X-Amz-Checksum") {
		ebsError(w, 400, "ValidationException", "INVALID_BLOCK", fmt.Sprintf("The checksum of block %d does not match x-amz-Checksum", index))
		return
	}
	c.mu.Lock()
	s := c.region(region).Snapshots[id]
	switch {
	case s == nil:
		c.mu.Unlock()
		ebsError(w, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", "The snapshot "+id+" does not exist.")
		return
	case s.Status != "pending" || !s.Direct:
		c.mu.Unlock()
		ebsError(w, 400, "ValidationException", "INVALID_SNAPSHOT_ID", "snapshot "+id+" is "+s.Status+", not open for writes")
		return
	case index >= int64(s.VolumeSize)*(1<<30)/BlockSize:
		c.mu.Unlock()
		ebsError(w, 400, "ValidationException", "INVALID_BLOCK", fmt.Sprintf("block %d is past the end of a %d GiB volume", index, s.VolumeSize))
		return
	}
	s.written[int32(index)] = sum
	store := s.data
	c.mu.Unlock()
	if err := store.writeBlock(int32(index), data); err != nil {
		ebsError(w, 500, "InternalServerException", "", err.Error())
		return
	}
	w.Header().Set("X-Amz-Checksum", r.Header.Get("X-Amz-Checksum"))
	w.Header().Set("X-Amz-Checksum-Algorithm", "SHA256")
	w.WriteHeader(201)
}

func (c *Cloud) completeSnapshot(w http.ResponseWriter, r *http.Request, region, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.region(region).Snapshots[id]
	if s == nil {
		ebsError(w, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", "The snapshot "+id+" does not exist.")
		return
	}
	if s.Status != "pending" {
		// A repeated CompleteSnapshot (its answer was lost) reports the state it reached.
		writeJSON(w, 202, map[string]string{"Status": s.Status})
		return
	}
	if h := r.Header.Get("X-Amz-Checksum-Aggregation-Method"); h != "LINEAR" {
		ebsError(w, 400, "ValidationException", "INVALID_PARAMETER_VALUE", "x-amz-Checksum-Aggregation-Method must be LINEAR, got "+h)
		return
	}
	n, err := strconv.Atoi(r.Header.Get("X-Amz-ChangedBlocksCount"))
	if err != nil || n != len(s.written) {
		ebsError(w, 400, "ValidationException", "INVALID_PARAMETER_VALUE",
			fmt.Sprintf("x-amz-ChangedBlocksCount %q: %d blocks were written", r.Header.Get("X-Amz-ChangedBlocksCount"), len(s.written)))
		return
	}
	idx := make([]int32, 0, len(s.written))
	for i := range s.written {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	h := sha256.New()
	for _, i := range idx {
		d := s.written[i]
		h.Write(d[:])
	}
	if base64.StdEncoding.EncodeToString(h.Sum(nil)) != r.Header.Get("X-Amz-Checksum") {
		// AWS puts such a snapshot in the error state.
		s.Status = "error"
		ebsError(w, 400, "ValidationException", "INVALID_PARAMETER_VALUE", "The linear checksum does not match the blocks written")
		return
	}
	s.Status = "pending"
	s.polls = 1 // completed after one DescribeSnapshots
	s.written = map[int32][32]byte{}
	s.Direct = false // closed for writes
	writeJSON(w, 202, map[string]string{"Status": "pending"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// ebsFaults are EBS direct's answers to injected faults.
var ebsFaults = faultReplies{
	throttle:    reply{status: 429, code: "ThrottlingException", msg: "Rate exceeded"},
	server:      reply{status: 500, code: "InternalServerException", msg: "We encountered an internal error. Please try again."},
	notFoundYet: reply{status: 404, code: "ResourceNotFoundException", reason: "SNAPSHOT_NOT_FOUND", msg: "The snapshot does not exist."},
	write:       func(w http.ResponseWriter, e reply) { ebsError(w, e.status, e.code, e.reason, e.msg) },
}

// ebsError answers as a restJson1 service does: the error type in X-Amzn-ErrorType and a
// JSON body with Message and, for EBS's exceptions, Reason.
func ebsError(w http.ResponseWriter, status int, code, reason, msg string) {
	w.Header().Set("X-Amzn-ErrorType", code)
	body := map[string]string{"Message": msg}
	if reason != "" {
		body["Reason"] = reason
	}
	writeJSON(w, status, body)
}
