package fakeaws

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// serveEC2 serves EC2's query API: a form-encoded POST with Action and Version, answered
// with an XML document named after the action, or an XML error list.
func (c *Cloud) serveEC2(w http.ResponseWriter, r *http.Request) {
	region, err := verifySigV4(r, "ec2", c.keys, c.clock())
	if err != nil {
		if ae, ok := err.(*authError); ok && ae.unknownKey {
			ec2Error(w, 401, "AuthFailure", "AWS was not able to validate the provided access credentials")
		} else {
			ec2Error(w, 403, "SignatureDoesNotMatch", err.Error())
		}
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		ec2Error(w, 400, "MalformedQueryString", err.Error())
		return
	}
	f := form(vals)
	action := f.str("Action")
	if v := f.str("Version"); v != "2016-11-15" {
		ec2Error(w, 400, "InvalidParameterValue", "Version "+v+" is not 2016-11-15")
		return
	}
	h, ok := ec2Actions[action]
	if !ok {
		ec2Error(w, 400, "InvalidAction", "The action "+action+" is not valid for this web service.")
		return
	}
	c.count("ec2:" + action)
	if ec2Faults.serve(w, r, c.take("ec2:"+action, region)) {
		return
	}
	c.mu.Lock()
	out, e := h(c, c.region(region), region, f)
	c.mu.Unlock()
	if e != nil {
		ec2Error(w, e.status, e.code, e.msg)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(200)
	io.WriteString(w, xml.Header)
	enc := xml.NewEncoder(w)
	start := xml.StartElement{Name: xml.Name{Local: action + "Response"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: "http://ec2.amazonaws.com/doc/2016-11-15/"}}}
	if err := enc.EncodeElement(out, start); err != nil {
		panic(err)
	}
}

type ec2Err struct {
	status    int
	code, msg string
}

func badParam(format string, args ...any) *ec2Err {
	return &ec2Err{400, "InvalidParameterValue", fmt.Sprintf(format, args...)}
}

// ec2Faults are EC2's answers to injected faults.
var ec2Faults = faultReplies{
	throttle: reply{status: 503, code: "RequestLimitExceeded", msg: "Request limit exceeded."},
	server:   reply{status: 500, code: "InternalError", msg: "An internal error has occurred"},
	write:    func(w http.ResponseWriter, e reply) { ec2Error(w, e.status, e.code, e.msg) },
}

func ec2Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%s<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>",
		xml.Header, code, xmlEscape(msg), newID("req"))
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

type ec2Handler func(c *Cloud, reg *Region, region string, f form) (any, *ec2Err)

var ec2Actions = map[string]ec2Handler{
	"DescribeImages":                 describeImages,
	"RegisterImage":                  registerImage,
	"DeregisterImage":                deregisterImage,
	"CopyImage":                      copyImage,
	"ModifyImageAttribute":           modifyImageAttribute,
	"EnableImageDeprecation":         enableImageDeprecation,
	"CreateTags":                     createTags,
	"DescribeSnapshots":              describeSnapshots,
	"DeleteSnapshot":                 deleteSnapshot,
	"ImportSnapshot":                 importSnapshot,
	"DescribeImportSnapshotTasks":    describeImportSnapshotTasks,
	"RunInstances":                   runInstances,
	"DescribeInstances":              describeInstances,
	"DescribeLaunchTemplates":        describeLaunchTemplates,
	"DescribeLaunchTemplateVersions": describeLaunchTemplateVersions,
}

// --- form decoding: EC2's flattened, 1-based lists ("Filter.1.Value.2") ---

type form url.Values

func (f form) str(k string) string { return url.Values(f).Get(k) }

func (f form) boolean(k string) bool { return f.str(k) == "true" }

func (f form) int(k string) int64 {
	n, _ := strconv.ParseInt(f.str(k), 10, 64)
	return n
}

// list is prefix.1, prefix.2, ... until one is missing.
func (f form) list(prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := f[prefix+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

// structs is the members of prefix.1.*, prefix.2.*, ..., each as a form of its own keys.
func (f form) structs(prefix string) []form {
	var out []form
	for i := 1; ; i++ {
		p := prefix + "." + strconv.Itoa(i) + "."
		sub := form{}
		for k, v := range f {
			if strings.HasPrefix(k, p) {
				sub[strings.TrimPrefix(k, p)] = v
			}
		}
		if len(sub) == 0 {
			return out
		}
		out = append(out, sub)
	}
}

// tagSpecs reads the TagSpecification.N entries for resourceType; also names the other
// resource types the call may tag (RunInstances: volume, ...).
func (f form) tagSpecs(resourceType string, also ...string) (map[string]string, *ec2Err) {
	tags := map[string]string{}
	for _, ts := range f.structs("TagSpecification") {
		rt := ts.str("ResourceType")
		if rt != resourceType {
			if !contains(also, rt) {
				return nil, badParam("TagSpecification ResourceType %q: this call tags only %q %v", rt, resourceType, also)
			}
			continue
		}
		for _, t := range ts.structs("Tag") {
			tags[t.str("Key")] = t.str("Value")
		}
	}
	return tags, nil
}

type filter struct {
	name   string
	values []string
}

func (f form) filters(key string) []filter {
	var out []filter
	for _, s := range f.structs(key) {
		out = append(out, filter{s.str("Name"), s.list("Value")})
	}
	return out
}

// match applies EC2 filters: every filter must match one of its values. get returns a
// resource's value for a filter name and whether the name is known.
func match(fs []filter, tags map[string]string, get func(name string) (string, bool)) (bool, *ec2Err) {
	for _, fl := range fs {
		var v string
		var has bool
		switch {
		case strings.HasPrefix(fl.name, "tag:"):
			v, has = tags[strings.TrimPrefix(fl.name, "tag:")]
		case fl.name == "tag-key":
			ok := false
			for _, want := range fl.values {
				if _, in := tags[want]; in {
					ok = true
				}
			}
			if !ok {
				return false, nil
			}
			continue
		default:
			var known bool
			v, known = get(fl.name)
			if !known {
				return false, badParam("The filter '%s' is invalid", fl.name)
			}
			has = true
		}
		if !has {
			return false, nil
		}
		ok := false
		for _, want := range fl.values {
			if want == v || (strings.Contains(want, "*") && globMatch(want, v)) {
				ok = true
			}
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

func globMatch(pattern, s string) bool {
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*") + "$"
	ok, _ := regexp.MatchString(re, s)
	return ok
}

// --- XML shapes (the element names are those EC2 sends and the SDK reads) ---

type reqID struct {
	RequestID string `xml:"requestId"`
}

func rid() reqID { return reqID{newID("req")} }

type xTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func xTags(m map[string]string) []xTag {
	out := []xTag{}
	for k, v := range m {
		out = append(out, xTag{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

type xEBS struct {
	SnapshotID          string `xml:"snapshotId,omitempty"`
	VolumeSize          int32  `xml:"volumeSize"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	VolumeType          string `xml:"volumeType"`
	Encrypted           bool   `xml:"encrypted"`
}

type xBDM struct {
	DeviceName string `xml:"deviceName"`
	EBS        xEBS   `xml:"ebs"`
}

type xStateReason struct {
	Code    string `xml:"code"`
	Message string `xml:"message"`
}

type xImage struct {
	ImageID            string        `xml:"imageId"`
	ImageLocation      string        `xml:"imageLocation"`
	State              string        `xml:"imageState"`
	OwnerID            string        `xml:"imageOwnerId"`
	CreationDate       string        `xml:"creationDate"`
	IsPublic           bool          `xml:"isPublic"`
	Architecture       string        `xml:"architecture"`
	ImageType          string        `xml:"imageType"`
	Name               string        `xml:"name"`
	Description        string        `xml:"description,omitempty"`
	RootDeviceType     string        `xml:"rootDeviceType"`
	RootDeviceName     string        `xml:"rootDeviceName"`
	BDM                []xBDM        `xml:"blockDeviceMapping>item"`
	VirtualizationType string        `xml:"virtualizationType"`
	Tags               []xTag        `xml:"tagSet>item"`
	EnaSupport         bool          `xml:"enaSupport"`
	BootMode           string        `xml:"bootMode,omitempty"`
	ImdsSupport        string        `xml:"imdsSupport,omitempty"`
	DeprecationTime    string        `xml:"deprecationTime,omitempty"`
	SourceImageID      string        `xml:"sourceImageId,omitempty"`
	SourceImageRegion  string        `xml:"sourceImageRegion,omitempty"`
	StateReason        *xStateReason `xml:"stateReason,omitempty"`
}

const isoMillis = "2006-01-02T15:04:05.000Z"

func toXImage(im *Image) xImage {
	x := xImage{ImageID: im.ID, ImageLocation: Account + "/" + im.Name, State: im.State, OwnerID: Account,
		CreationDate: im.Created.UTC().Format(isoMillis), IsPublic: im.Public, Architecture: im.Architecture,
		ImageType: "machine", Name: im.Name, Description: im.Description, RootDeviceType: "ebs",
		RootDeviceName: im.RootDevice, VirtualizationType: im.VirtualizationType, Tags: xTags(im.Tags),
		EnaSupport: im.EnaSupport, BootMode: im.BootMode, ImdsSupport: im.ImdsSupport,
		SourceImageID: im.SourceImageID, SourceImageRegion: im.SourceRegion}
	for _, m := range im.Mappings {
		x.BDM = append(x.BDM, xBDM{m.Device, xEBS{m.SnapshotID, m.VolumeSize, m.DeleteOnTermination, m.VolumeType, false}})
	}
	if !im.DeprecateAt.IsZero() {
		x.DeprecationTime = im.DeprecateAt.UTC().Format(isoMillis)
	}
	if im.StateReason != "" {
		x.StateReason = &xStateReason{"Client.Error", im.StateReason}
	}
	return x
}

type xSnapshot struct {
	SnapshotID  string `xml:"snapshotId"`
	VolumeID    string `xml:"volumeId"`
	Status      string `xml:"status"`
	StartTime   string `xml:"startTime"`
	Progress    string `xml:"progress"`
	OwnerID     string `xml:"ownerId"`
	VolumeSize  int32  `xml:"volumeSize"`
	Description string `xml:"description"`
	Encrypted   bool   `xml:"encrypted"`
	Tags        []xTag `xml:"tagSet>item"`
}

// --- images ---

func (c *Cloud) advanceImage(im *Image) {
	if im.State == "pending" {
		if im.polls > 0 {
			im.polls--
			return
		}
		if im.fail != "" {
			im.State, im.StateReason = "failed", im.fail
		} else {
			im.State = "available"
			// A copy's snapshots complete with it.
			for _, m := range im.Mappings {
				for _, r := range c.regions {
					if s := r.Snapshots[m.SnapshotID]; s != nil && s.Status == "pending" && s.polls < 0 {
						s.Status = "completed"
					}
				}
			}
		}
	}
}

func describeImages(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	ids := f.list("ImageId")
	owners := f.list("Owner")
	for _, o := range owners {
		if o != "self" && o != Account {
			return nil, badParam("Owner %q: this fake knows only self and %s", o, Account)
		}
	}
	fs := f.filters("Filter")
	var out []xImage
	for _, im := range reg.Images {
		if len(ids) > 0 && !contains(ids, im.ID) {
			continue
		}
		c.advanceImage(im)
		ok, e := match(fs, im.Tags, func(name string) (string, bool) {
			switch name {
			case "name":
				return im.Name, true
			case "state":
				return im.State, true
			case "image-id":
				return im.ID, true
			}
			return "", false
		})
		if e != nil {
			return nil, e
		}
		if ok {
			out = append(out, toXImage(im))
		}
	}
	for _, id := range ids {
		if reg.Images[id] == nil {
			return nil, &ec2Err{400, "InvalidAMIID.NotFound", "The image id '[" + id + "]' does not exist"}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ImageID < out[j].ImageID })
	return struct {
		reqID
		Images []xImage `xml:"imagesSet>item"`
	}{rid(), out}, nil
}

var amiNameRE = regexp.MustCompile(`^[a-zA-Z0-9()./_ @'\[\]-]{3,128}$`)

func registerImage(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	name := f.str("Name")
	if !amiNameRE.MatchString(name) {
		return nil, badParam("AMI name %q must be 3-128 characters of letters, numbers and ()[]./-'@_ and spaces", name)
	}
	for _, im := range reg.Images {
		if im.Name == name {
			return nil, &ec2Err{400, "InvalidAMIName.Duplicate", "AMI name " + name + " is already in use by AMI " + im.ID}
		}
	}
	root := f.str("RootDeviceName")
	im := &Image{ID: newID("ami"), Name: name, Description: f.str("Description"), State: "pending",
		Architecture: f.str("Architecture"), BootMode: f.str("BootMode"), ImdsSupport: f.str("ImdsSupport"),
		RootDevice: root, VirtualizationType: f.str("VirtualizationType"), EnaSupport: f.boolean("EnaSupport"),
		Created: c.now(), polls: 1}
	if im.VirtualizationType == "" {
		im.VirtualizationType = "paravirtual" // EC2's default, which no kubebake image boots
	}
	hasRoot := false
	for _, b := range f.structs("BlockDeviceMapping") {
		m := Mapping{Device: b.str("DeviceName"), SnapshotID: b.str("Ebs.SnapshotId"), VolumeType: b.str("Ebs.VolumeType"),
			VolumeSize: int32(b.int("Ebs.VolumeSize")), DeleteOnTermination: b.boolean("Ebs.DeleteOnTermination")}
		if m.VolumeType == "" {
			m.VolumeType = "gp2"
		}
		s := reg.Snapshots[m.SnapshotID]
		switch {
		case m.SnapshotID == "":
		case s == nil:
			return nil, &ec2Err{400, "InvalidSnapshot.NotFound", "The snapshot '" + m.SnapshotID + "' does not exist."}
		case s.Status != "completed":
			return nil, &ec2Err{400, "IncorrectState", "Snapshot " + s.ID + " is " + s.Status + ", not completed"}
		case m.VolumeSize != 0 && m.VolumeSize < s.VolumeSize:
			return nil, &ec2Err{400, "InvalidBlockDeviceMapping", fmt.Sprintf("Volume of size %dGB is smaller than snapshot '%s', expect size >= %dGB", m.VolumeSize, s.ID, s.VolumeSize)}
		}
		if m.VolumeSize == 0 && s != nil {
			m.VolumeSize = s.VolumeSize
		}
		if m.Device == root {
			hasRoot = true
		}
		im.Mappings = append(im.Mappings, m)
	}
	if !hasRoot {
		return nil, &ec2Err{400, "InvalidBlockDeviceMapping", "no block device mapping for the root device " + root}
	}
	tags, e := f.tagSpecs("image")
	if e != nil {
		return nil, e
	}
	im.Tags = tags
	im.fail, reg.failNext = reg.failNext, ""
	reg.Images[im.ID] = im
	return struct {
		reqID
		ImageID string `xml:"imageId"`
	}{rid(), im.ID}, nil
}

type xReturn struct {
	reqID
	Return bool `xml:"return"`
}

func deregisterImage(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	id := f.str("ImageId")
	if reg.Images[id] == nil {
		return nil, &ec2Err{400, "InvalidAMIID.NotFound", "The image id '[" + id + "]' does not exist"}
	}
	delete(reg.Images, id)
	return xReturn{rid(), true}, nil
}

func copyImage(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	srcRegion, srcID := f.str("SourceRegion"), f.str("SourceImageId")
	token := f.str("ClientToken")
	if id, ok := reg.tokens["copy:"+token]; ok && token != "" {
		return struct {
			reqID
			ImageID string `xml:"imageId"`
		}{rid(), id}, nil
	}
	src := c.region(srcRegion).Images[srcID]
	switch {
	case src == nil:
		return nil, &ec2Err{400, "InvalidAMIID.NotFound", "The image id '[" + srcID + "]' does not exist in " + srcRegion}
	case src.State != "available":
		return nil, &ec2Err{400, "IncorrectState", "Image " + srcID + " is " + src.State}
	}
	name := f.str("Name")
	for _, im := range reg.Images {
		if im.Name == name {
			return nil, &ec2Err{400, "InvalidAMIName.Duplicate", "AMI name " + name + " is already in use by AMI " + im.ID}
		}
	}
	im := &Image{ID: newID("ami"), Name: name, Description: f.str("Description"), State: "pending",
		Architecture: src.Architecture, BootMode: src.BootMode, ImdsSupport: src.ImdsSupport, RootDevice: src.RootDevice,
		VirtualizationType: src.VirtualizationType, EnaSupport: src.EnaSupport, Created: c.now(),
		SourceImageID: srcID, SourceRegion: srcRegion, Tags: map[string]string{}, polls: 2}
	if f.boolean("CopyImageTags") {
		im.Tags = copyTags(src.Tags)
	}
	for _, m := range src.Mappings {
		if s := c.region(srcRegion).Snapshots[m.SnapshotID]; s != nil {
			cp := &Snapshot{ID: newID("snap"), Status: "pending", Description: "Copied for DestinationAmi " + im.ID + " from SourceAmi " + srcID,
				VolumeSize: s.VolumeSize, Tags: map[string]string{}, Started: c.now(), data: s.data.share(), polls: -1}
			reg.Snapshots[cp.ID] = cp
			m.SnapshotID = cp.ID
		}
		im.Mappings = append(im.Mappings, m)
	}
	im.fail, reg.failNext = reg.failNext, ""
	reg.Images[im.ID] = im
	if token != "" {
		reg.tokens["copy:"+token] = im.ID
	}
	return struct {
		reqID
		ImageID string `xml:"imageId"`
	}{rid(), im.ID}, nil
}

func modifyImageAttribute(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	im := reg.Images[f.str("ImageId")]
	if im == nil {
		return nil, &ec2Err{400, "InvalidAMIID.NotFound", "The image id '[" + f.str("ImageId") + "]' does not exist"}
	}
	for _, p := range f.structs("LaunchPermission.Add") {
		if u := p.str("UserId"); u != "" {
			if !regexp.MustCompile(`^\d{12}$`).MatchString(u) {
				return nil, badParam("Invalid id: %q (expecting a 12-digit account id)", u)
			}
			if !contains(im.LaunchUsers, u) {
				im.LaunchUsers = append(im.LaunchUsers, u)
			}
		}
		if p.str("Group") == "all" {
			im.Public = true
		}
	}
	return xReturn{rid(), true}, nil
}

func enableImageDeprecation(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	im := reg.Images[f.str("ImageId")]
	if im == nil {
		return nil, &ec2Err{400, "InvalidAMIID.NotFound", "The image id '[" + f.str("ImageId") + "]' does not exist"}
	}
	t, err := time.Parse(time.RFC3339, f.str("DeprecateAt"))
	if err != nil {
		return nil, badParam("DeprecateAt %q: %v", f.str("DeprecateAt"), err)
	}
	im.DeprecateAt = t
	return xReturn{rid(), true}, nil
}

func createTags(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	ids := f.list("ResourceId")
	var targets []map[string]string
	for _, id := range ids {
		switch {
		case reg.Images[id] != nil:
			targets = append(targets, reg.Images[id].Tags)
		case reg.Snapshots[id] != nil:
			targets = append(targets, reg.Snapshots[id].Tags)
		case reg.Instances[id] != nil:
			targets = append(targets, reg.Instances[id].Tags)
		default:
			return nil, &ec2Err{400, "InvalidID", "The ID '" + id + "' is not valid"}
		}
	}
	for _, t := range f.structs("Tag") {
		for _, m := range targets {
			m[t.str("Key")] = t.str("Value")
		}
	}
	return xReturn{rid(), true}, nil
}

// --- snapshots ---

func describeSnapshots(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	ids := f.list("SnapshotId")
	fs := f.filters("Filter")
	var out []xSnapshot
	for _, id := range ids {
		if reg.Snapshots[id] == nil {
			return nil, &ec2Err{400, "InvalidSnapshot.NotFound", "The snapshot '" + id + "' does not exist."}
		}
	}
	for _, s := range reg.Snapshots {
		if len(ids) > 0 && !contains(ids, s.ID) {
			continue
		}
		if s.Status == "pending" && s.polls > 0 {
			s.polls--
			if s.polls == 0 {
				s.Status = "completed"
			}
		}
		ok, e := match(fs, s.Tags, func(name string) (string, bool) {
			switch name {
			case "status":
				return s.Status, true
			case "snapshot-id":
				return s.ID, true
			}
			return "", false
		})
		if e != nil {
			return nil, e
		}
		if !ok {
			continue
		}
		progress := "100%"
		if s.Status != "completed" {
			progress = "0%"
		}
		out = append(out, xSnapshot{SnapshotID: s.ID, VolumeID: "vol-ffffffff", Status: s.Status,
			StartTime: s.Started.UTC().Format(isoMillis), Progress: progress, OwnerID: Account, VolumeSize: s.VolumeSize,
			Description: s.Description, Tags: xTags(s.Tags)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SnapshotID < out[j].SnapshotID })
	return struct {
		reqID
		Snapshots []xSnapshot `xml:"snapshotSet>item"`
	}{rid(), out}, nil
}

func deleteSnapshot(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	id := f.str("SnapshotId")
	s := reg.Snapshots[id]
	if s == nil {
		return nil, &ec2Err{400, "InvalidSnapshot.NotFound", "The snapshot '" + id + "' does not exist."}
	}
	for _, im := range reg.Images {
		for _, m := range im.Mappings {
			if m.SnapshotID == id {
				return nil, &ec2Err{400, "InvalidSnapshot.InUse", "The snapshot " + id + " is currently in use by " + im.ID}
			}
		}
	}
	delete(reg.Snapshots, id)
	s.data.release()
	return xReturn{rid(), true}, nil
}

// --- import ---

type xUserBucket struct {
	S3Bucket string `xml:"s3Bucket"`
	S3Key    string `xml:"s3Key"`
}

type xSnapshotTaskDetail struct {
	Description   string      `xml:"description,omitempty"`
	DiskImageSize float64     `xml:"diskImageSize,omitempty"`
	Format        string      `xml:"format"`
	Progress      string      `xml:"progress,omitempty"`
	SnapshotID    string      `xml:"snapshotId,omitempty"`
	Status        string      `xml:"status"`
	StatusMessage string      `xml:"statusMessage,omitempty"`
	UserBucket    xUserBucket `xml:"userBucket"`
}

type xImportTask struct {
	Description  string              `xml:"description,omitempty"`
	ImportTaskID string              `xml:"importTaskId"`
	Detail       xSnapshotTaskDetail `xml:"snapshotTaskDetail"`
	Tags         []xTag              `xml:"tagSet>item"`
}

func toXTask(t *ImportTask) xImportTask {
	return xImportTask{Description: t.Description, ImportTaskID: t.ID, Tags: xTags(t.Tags), Detail: xSnapshotTaskDetail{
		Description: t.Description, Format: t.Format, Progress: t.Progress, SnapshotID: t.SnapshotID,
		Status: t.Status, StatusMessage: t.StatusMessage, UserBucket: xUserBucket{t.Bucket, t.Key}}}
}

func importSnapshot(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	format := strings.ToUpper(f.str("DiskContainer.Format"))
	if format != "RAW" && format != "VMDK" && format != "VHD" {
		return nil, badParam("DiskContainer.Format %q: use RAW, VHD or VMDK", f.str("DiskContainer.Format"))
	}
	bucket, key := f.str("DiskContainer.UserBucket.S3Bucket"), f.str("DiskContainer.UserBucket.S3Key")
	if bucket == "" || key == "" {
		return nil, badParam("DiskContainer.UserBucket needs S3Bucket and S3Key")
	}
	token := f.str("ClientToken")
	if id, ok := reg.tokens["import:"+token]; ok && token != "" {
		return toXTask(reg.ImportTasks[id]), nil
	}
	tags, e := f.tagSpecs("import-snapshot-task")
	if e != nil {
		return nil, e
	}
	role := f.str("RoleName")
	if role == "" {
		role = "vmimport"
	}
	t := &ImportTask{ID: newID("import-snap"), Bucket: bucket, Key: key, Format: format, Description: f.str("Description"),
		Role: role, Status: "active", StatusMessage: "pending", Progress: "0", Tags: tags, fail: c.importErr}
	reg.ImportTasks[t.ID] = t
	if token != "" {
		reg.tokens["import:"+token] = t.ID
	}
	return struct {
		reqID
		xImportTask
	}{rid(), toXTask(t)}, nil
}

// advanceTask walks an import task one state on per DescribeImportSnapshotTasks:
// active/pending -> active/validating -> active/converting -> completed (or deleted, with
// the failure as its status message).
func (c *Cloud) advanceTask(reg *Region, t *ImportTask) {
	if t.Status != "active" {
		return
	}
	t.step++
	switch t.step {
	case 1:
		t.StatusMessage, t.Progress = "validating", "10"
	case 2:
		t.StatusMessage, t.Progress = "converting", "50"
	default:
		if t.fail != "" {
			t.Status, t.StatusMessage, t.Progress = "deleted", t.fail, ""
			return
		}
		obj, err := c.getObject(t.Bucket, t.Key)
		if err != nil {
			t.Status, t.StatusMessage, t.Progress = "deleted", "ClientError: Unable to read the disk image from s3://"+t.Bucket+"/"+t.Key+": "+err.Error(), ""
			return
		}
		defer obj.Contents.Close()
		data, err := newStore(c.dir)
		if err != nil {
			t.Status, t.StatusMessage = "deleted", "ServerError: "+err.Error()
			return
		}
		buf := make([]byte, BlockSize)
		var off int64
		for {
			n, rerr := io.ReadFull(obj.Contents, buf)
			if n > 0 {
				data.f.WriteAt(buf[:n], off)
				off += int64(n)
			}
			if rerr != nil {
				break
			}
		}
		gib := int32((off + 1<<30 - 1) >> 30)
		if gib == 0 {
			gib = 1
		}
		s := &Snapshot{ID: newID("snap"), Status: "completed", Description: "Created by AWS-VMImport service for " + t.ID,
			VolumeSize: gib, Tags: map[string]string{}, Started: c.now(), data: data}
		reg.Snapshots[s.ID] = s
		t.Status, t.StatusMessage, t.Progress, t.SnapshotID = "completed", "", "", s.ID
	}
}

func describeImportSnapshotTasks(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	var out []xImportTask
	for _, id := range f.list("ImportTaskId") {
		t := reg.ImportTasks[id]
		if t == nil {
			return nil, &ec2Err{400, "InvalidConversionTaskId.Malformed", "The import task '" + id + "' does not exist"}
		}
		c.advanceTask(reg, t)
		out = append(out, toXTask(t))
	}
	return struct {
		reqID
		Tasks []xImportTask `xml:"importSnapshotTaskSet>item"`
	}{rid(), out}, nil
}

// --- instances ---

type xInstanceState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xInstance struct {
	InstanceID   string         `xml:"instanceId"`
	ImageID      string         `xml:"imageId"`
	State        xInstanceState `xml:"instanceState"`
	PrivateIP    string         `xml:"privateIpAddress,omitempty"`
	InstanceType string         `xml:"instanceType"`
	LaunchTime   string         `xml:"launchTime"`
	SubnetID     string         `xml:"subnetId,omitempty"`
	LaunchIndex  int            `xml:"amiLaunchIndex"`
	Tags         []xTag         `xml:"tagSet>item"`
}

var stateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

func toXInstance(in *Instance) xInstance {
	return xInstance{InstanceID: in.ID, ImageID: in.ImageID, State: xInstanceState{stateCodes[in.State], in.State},
		PrivateIP: in.PrivateIP, InstanceType: in.InstanceType, LaunchTime: in.Launched.UTC().Format(isoMillis),
		SubnetID: in.SubnetID, LaunchIndex: in.LaunchIndex, Tags: xTags(in.Tags)}
}

type xReservation struct {
	ReservationID string      `xml:"reservationId"`
	OwnerID       string      `xml:"ownerId"`
	Instances     []xInstance `xml:"instancesSet>item"`
}

// maxUserData is EC2's limit on user-data, before base64.
const maxUserData = 16 * 1024

func runInstances(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	im := reg.Images[f.str("ImageId")]
	if im == nil || im.State != "available" {
		return nil, &ec2Err{400, "InvalidAMIID.NotFound", "The image id '[" + f.str("ImageId") + "]' does not exist or is not available"}
	}
	minC, maxC := f.int("MinCount"), f.int("MaxCount")
	if minC < 1 || maxC < minC {
		return nil, badParam("MinCount %d / MaxCount %d", minC, maxC)
	}
	var userData []byte
	if ud := f.str("UserData"); ud != "" {
		var err error
		if userData, err = base64.StdEncoding.DecodeString(ud); err != nil {
			return nil, badParam("Invalid BASE64 encoding of user data")
		}
		if len(userData) > maxUserData {
			return nil, badParam("User data is limited to 16384 bytes")
		}
	}
	tags, e := f.tagSpecs("instance", "volume", "network-interface")
	if e != nil {
		return nil, e
	}
	res := xReservation{ReservationID: newID("r"), OwnerID: Account}
	now := c.now()
	for i := 0; i < int(maxC); i++ {
		reg.nextIP++
		in := &Instance{ID: newID("i"), ImageID: im.ID, State: "pending", InstanceType: f.str("InstanceType"),
			SubnetID: f.str("SubnetId"), UserData: userData, Tags: copyTags(tags), HTTPTokens: f.str("MetadataOptions.HttpTokens"),
			Launched: now, LaunchIndex: i, PrivateIP: fmt.Sprintf("10.0.%d.%d", reg.nextIP/250, 10+reg.nextIP%250)}
		reg.Instances[in.ID] = in
		res.Instances = append(res.Instances, toXInstance(in))
	}
	return struct {
		reqID
		xReservation
	}{rid(), res}, nil
}

func describeInstances(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	ids := f.list("InstanceId")
	fs := f.filters("Filter")
	res := xReservation{ReservationID: newID("r"), OwnerID: Account}
	var all []*Instance
	for _, in := range reg.Instances {
		all = append(all, in)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	for _, in := range all {
		if len(ids) > 0 && !contains(ids, in.ID) {
			continue
		}
		if in.State == "pending" {
			in.State = "running"
		}
		ok, e := match(fs, in.Tags, func(name string) (string, bool) {
			switch name {
			case "image-id":
				return in.ImageID, true
			case "instance-state-name":
				return in.State, true
			case "instance-id":
				return in.ID, true
			}
			return "", false
		})
		if e != nil {
			return nil, e
		}
		if ok {
			res.Instances = append(res.Instances, toXInstance(in))
		}
	}
	var set []xReservation
	if len(res.Instances) > 0 {
		set = append(set, res)
	}
	return struct {
		reqID
		Reservations []xReservation `xml:"reservationSet>item"`
	}{rid(), set}, nil
}

// --- launch templates ---

type xLaunchTemplate struct {
	ID      string `xml:"launchTemplateId"`
	Name    string `xml:"launchTemplateName"`
	Latest  int    `xml:"latestVersionNumber"`
	Default int    `xml:"defaultVersionNumber"`
}

func describeLaunchTemplates(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	var out []xLaunchTemplate
	for _, lt := range reg.Templates {
		out = append(out, xLaunchTemplate{lt.ID, lt.Name, len(lt.Versions), 1})
	}
	return struct {
		reqID
		Templates []xLaunchTemplate `xml:"launchTemplates>item"`
	}{rid(), out}, nil
}

type xLaunchTemplateVersion struct {
	ID      string `xml:"launchTemplateId"`
	Name    string `xml:"launchTemplateName"`
	Version int    `xml:"versionNumber"`
	Data    struct {
		ImageID string `xml:"imageId,omitempty"`
	} `xml:"launchTemplateData"`
}

func describeLaunchTemplateVersions(c *Cloud, reg *Region, region string, f form) (any, *ec2Err) {
	id, name := f.str("LaunchTemplateId"), f.str("LaunchTemplateName")
	var out []xLaunchTemplateVersion
	found := false
	for _, lt := range reg.Templates {
		if (id != "" && lt.ID != id) || (name != "" && lt.Name != name) {
			continue
		}
		found = true
		for i, img := range lt.Versions {
			v := xLaunchTemplateVersion{ID: lt.ID, Name: lt.Name, Version: i + 1}
			v.Data.ImageID = img
			out = append(out, v)
		}
	}
	if !found && (id != "" || name != "") {
		return nil, &ec2Err{400, "InvalidLaunchTemplateId.NotFound", "The specified launch template, with template ID " + id + ", does not exist."}
	}
	return struct {
		reqID
		Versions []xLaunchTemplateVersion `xml:"launchTemplateVersionSet>item"`
	}{rid(), out}, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
