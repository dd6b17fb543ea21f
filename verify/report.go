package verify

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of verifying one image: one Result per role and user-data kind.
type Report struct {
	Image    string    `json:"image"`
	Manifest string    `json:"manifest,omitempty"`
	Started  time.Time `json:"started"`
	Results  []Result  `json:"results"`
	Pass     bool      `json:"pass"`
	// ArtifactsDir holds serial logs and journals saved for failures.
	ArtifactsDir string `json:"artifactsDir,omitempty"`

	// VMs left running by --keep, what else to stop after them (the cluster switch), and
	// the work folder to remove last.
	kept      []*Machine
	keptStops []func()
	keptDir   string
}

// Kept reports whether VMs were left running (--keep).
func (rep *Report) Kept() bool { return len(rep.kept) > 0 }

// StopKept stops the VMs --keep left running and removes their work folder.
func (rep *Report) StopKept() {
	for _, m := range rep.kept {
		m.Stop()
	}
	for _, stop := range rep.keptStops {
		stop()
	}
	rep.kept, rep.keptStops = nil, nil
	if rep.keptDir != "" {
		os.RemoveAll(rep.keptDir)
	}
}

// Result is one booted node: its checks and how long each stage took. A cluster run also
// has one Result for the whole cluster (Role "cluster"), whose checks are its smoke steps.
type Result struct {
	Role     string `json:"role"`
	UserData string `json:"userData"`
	// Node is the node's host name in a cluster run ("cluster" for the cluster's Result).
	Node   string  `json:"node,omitempty"`
	Accel  string  `json:"accel"`
	Checks []Check `json:"checks"`
	Pass   bool    `json:"pass"`
	// Stages are the stage durations in seconds, in order (boot, ssh, settle, checks).
	Stages []Stage `json:"stages"`
	// Seconds is boot to verdict.
	Seconds float64 `json:"seconds"`
	// Artifacts are files saved to explain failures (serial log, journals).
	Artifacts []string `json:"artifacts,omitempty"`
	// SSH, with --keep, is the command that logs into the VM left running.
	SSH string `json:"ssh,omitempty"`
}

// Stage is one timed step of a node's verification.
type Stage struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Name is "role/userdata", e.g. master/cloud-init, or the node's name in a cluster run.
func (r *Result) Name() string {
	if r.Node != "" {
		return r.Node
	}
	return r.Role + "/" + r.UserData
}

// Finish sets Pass from the checks.
func (r *Result) Finish() {
	r.Pass = len(r.Checks) > 0
	for _, c := range r.Checks {
		if !c.Pass {
			r.Pass = false
		}
	}
}

// Finish sets the report's Pass from its results.
func (rep *Report) Finish() {
	rep.Pass = len(rep.Results) > 0
	for i := range rep.Results {
		rep.Results[i].Finish()
		if !rep.Results[i].Pass {
			rep.Pass = false
		}
	}
}

// Counts returns how many checks passed and failed over all results (info checks count as
// passed).
func (rep *Report) Counts() (passed, failed int) {
	for _, r := range rep.Results {
		for _, c := range r.Checks {
			if c.Pass {
				passed++
			} else {
				failed++
			}
		}
	}
	return
}

// WriteText writes the human-readable table: one block per node.
func (rep *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "image %s\n", rep.Image)
	for _, r := range rep.Results {
		fmt.Fprintf(w, "\n== %s (", r.Name())
		if r.Node != "" && r.UserData != "" {
			fmt.Fprintf(w, "%s/%s, ", r.Role, r.UserData)
		}
		fmt.Fprintf(w, "%s, %.0fs", r.Accel, r.Seconds)
		for _, s := range r.Stages {
			fmt.Fprintf(w, ", %s %.0fs", s.Name, s.Seconds)
		}
		fmt.Fprintln(w, ")")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CHECK\tEXPECTED\tGOT\tRESULT")
		for _, c := range r.Checks {
			res := "PASS"
			switch {
			case c.Info:
				res = "INFO"
			case !c.Pass:
				res = "FAIL"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, cell(c.Expected, 60), cell(c.Got, 80), res)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		// The table cuts long cells: failures are spelled out in full below it.
		for _, c := range r.Checks {
			if !c.Pass && (len(c.Got) > 80 || len(c.Expected) > 60) {
				fmt.Fprintf(w, "FAIL %s\n  expected: %s\n  got:      %s\n", c.Name, c.Expected, c.Got)
			}
		}
		for _, a := range r.Artifacts {
			fmt.Fprintf(w, "saved: %s\n", a)
		}
		if r.SSH != "" {
			fmt.Fprintf(w, "kept running: %s\n", r.SSH)
		}
	}
	passed, failed := rep.Counts()
	verdict := "PASS"
	if !rep.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n%s: %d passed, %d failed\n", verdict, passed, failed)
	return nil
}

func cell(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	if s == "" {
		s = "-"
	}
	return s
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// JUnit XML, as CI systems (Jenkins, GitLab, GitHub actions) read it.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Time     float64      `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string          `xml:"name,attr"`
	Tests     int             `xml:"tests,attr"`
	Failures  int             `xml:"failures,attr"`
	Time      float64         `xml:"time,attr"`
	Timestamp string          `xml:"timestamp,attr,omitempty"`
	Props     []junitProperty `xml:"properties>property,omitempty"`
	Cases     []junitCase     `xml:"testcase"`
	SystemOut string          `xml:"system-out,omitempty"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      float64       `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes one test suite per node and one test case per check.
func (rep *Report) WriteJUnit(w io.Writer) error {
	all := junitSuites{Name: "kubebake verify " + rep.Image}
	for _, r := range rep.Results {
		s := junitSuite{
			Name:  "kubebake.verify." + r.Role + "." + r.UserData,
			Tests: len(r.Checks),
			Time:  r.Seconds,
			Props: []junitProperty{{"image", rep.Image}, {"role", r.Role}, {"userdata", r.UserData}, {"accel", r.Accel}},
		}
		switch {
		case r.Role == RoleCluster:
			s.Name = "kubebake.verify.cluster"
		case r.Node != "":
			s.Name = "kubebake.verify.cluster." + r.Node
			s.Props = append(s.Props, junitProperty{"node", r.Node})
		}
		if !rep.Started.IsZero() {
			s.Timestamp = rep.Started.UTC().Format("2006-01-02T15:04:05")
		}
		for _, st := range r.Stages {
			s.Props = append(s.Props, junitProperty{"stage." + st.Name + ".seconds", fmt.Sprintf("%.1f", st.Seconds)})
		}
		for _, c := range r.Checks {
			tc := junitCase{Name: c.Name, Classname: s.Name}
			if c.Info {
				tc.SystemOut = c.Got
			}
			if !c.Pass {
				s.Failures++
				tc.Failure = &junitFailure{
					Message: fmt.Sprintf("expected %s, got %s", c.Expected, c.Got),
					Type:    "CheckFailed",
					Text:    fmt.Sprintf("check:    %s\nexpected: %s\ngot:      %s\n", c.Name, c.Expected, c.Got),
				}
				if len(c.Units) > 0 {
					tc.Failure.Text += "units:    " + strings.Join(c.Units, " ") + "\n"
				}
			}
			s.Cases = append(s.Cases, tc)
		}
		if len(r.Artifacts) > 0 {
			s.SystemOut = "saved:\n" + strings.Join(r.Artifacts, "\n")
		}
		all.Tests += s.Tests
		all.Failures += s.Failures
		all.Time += s.Time
		all.Suites = append(all.Suites, s)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(all); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
