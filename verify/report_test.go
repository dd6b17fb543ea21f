package verify

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	rep := &Report{
		Image:   "out/debian-12/image.qcow2",
		Started: time.Date(2026, 11, 22, 7, 0, 0, 0, time.UTC),
		Results: []Result{
			{Role: "master", UserData: "cloud-init", Accel: "tcg", Seconds: 95.5,
				Stages: []Stage{{"boot", 60}, {"ssh", 5}, {"settle", 20}, {"checks", 10.5}},
				Checks: []Check{
					{Name: "sysctl/net.ipv4.ip_forward", Expected: "1 (from /usr/lib/sysctl.d)", Got: "1 (from /usr/lib/sysctl.d/90-kubebake.conf)", Pass: true},
					{Name: "info/first-boot-time", Expected: "reported", Got: "Startup finished in 43s", Pass: true, Info: true},
				}},
			{Role: "minion", UserData: "ignition", Accel: "tcg", Seconds: 80,
				Checks: []Check{
					{Name: "unit/kubebake-master.service/skipped", Expected: "skipped", Got: "failed/failed result=exit-code condition=yes", Units: []string{"kubebake-master.service"}},
					{Name: "tool/socat", Expected: "on PATH", Got: "/usr/bin/socat", Pass: true},
				},
				Artifacts: []string{"/tmp/x/minion-ignition-serial.log"}},
		},
	}
	rep.Finish()
	return rep
}

func TestReportText(t *testing.T) {
	rep := sampleReport()
	if rep.Pass {
		t.Fatal("report with a failed check passes")
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{
		"== master/cloud-init (tcg, 96s, boot 60s, ssh 5s, settle 20s, checks 10s)",
		"CHECK", "EXPECTED", "GOT", "RESULT",
		"sysctl/net.ipv4.ip_forward", "PASS", "INFO", "FAIL",
		"saved: /tmp/x/minion-ignition-serial.log",
		"FAIL: 3 passed, 1 failed",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("text report lacks %q:\n%s", want, s)
		}
	}
}

func TestReportJSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Pass || len(back.Results) != 2 || back.Results[1].Checks[0].Pass || back.Results[1].Checks[0].Units[0] != "kubebake-master.service" {
		t.Errorf("round trip lost data: %+v", back)
	}
	if !strings.Contains(b.String(), `"userData": "ignition"`) {
		t.Errorf("json field names: %s", b.String())
	}
}

func TestReportJUnit(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJUnit(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName  xml.Name `xml:"testsuites"`
		Tests    int      `xml:"tests,attr"`
		Failures int      `xml:"failures,attr"`
		Suites   []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
			Cases    []struct {
				Name      string `xml:"name,attr"`
				Classname string `xml:"classname,attr"`
				Failure   *struct {
					Message string `xml:"message,attr"`
					Text    string `xml:",chardata"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("invalid XML: %v\n%s", err, b.String())
	}
	if doc.Tests != 4 || doc.Failures != 1 || len(doc.Suites) != 2 {
		t.Fatalf("counts: tests %d failures %d suites %d", doc.Tests, doc.Failures, len(doc.Suites))
	}
	s := doc.Suites[1]
	if s.Name != "kubebake.verify.minion.ignition" || s.Failures != 1 {
		t.Errorf("suite %+v", s)
	}
	f := s.Cases[0].Failure
	if f == nil || !strings.Contains(f.Message, "condition=yes") || !strings.Contains(f.Text, "units:    kubebake-master.service") {
		t.Errorf("failure element: %+v", f)
	}
	if s.Cases[1].Failure != nil {
		t.Error("passing case has a failure element")
	}
	if !strings.HasPrefix(b.String(), `<?xml version="1.0" encoding="UTF-8"?>`) {
		t.Error("no XML header")
	}
}
