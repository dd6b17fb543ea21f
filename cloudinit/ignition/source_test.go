package ignition

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const minimalConfig = `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/from-source","contents":{"source":"data:,hello"}}]}}`

func TestFwCfg(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "raw")
	loaded := 0
	s := FwCfg{Path: p, LoadModule: func(context.Context) error {
		loaded++
		return os.WriteFile(p, []byte(minimalConfig), 0o400) // as if the module showed it
	}}
	data, err := s.Fetch(context.Background())
	if err != nil || string(data) != minimalConfig || loaded != 1 {
		t.Fatalf("fetch after module load: %q %v loaded=%d", data, err, loaded)
	}
	data, err = s.Fetch(context.Background())
	if err != nil || string(data) != minimalConfig || loaded != 1 {
		t.Errorf("second fetch loaded the module again or failed: %v %d", err, loaded)
	}
	none := FwCfg{Path: filepath.Join(dir, "absent"), LoadModule: func(context.Context) error { return os.ErrPermission }}
	if data, err := none.Fetch(context.Background()); data != nil || err != nil {
		t.Errorf("absent fw_cfg: %q %v", data, err)
	}
	// Applied end to end from fw_cfg.
	root := newRoot(t)
	res, err := Run(context.Background(), Options{Root: root, Sources: []Source{s}})
	if err != nil || res.Status != "applied" || !strings.Contains(res.Source, "fw_cfg") {
		t.Fatalf("%+v %v", res, err)
	}
	if got, _ := readFile(t, root, "/etc/from-source"); got != "hello" {
		t.Errorf("got %q", got)
	}
}

// fakeIMDS serves the EC2 metadata paths kubebake-ignition uses.
type fakeIMDS struct {
	userData  []byte
	v1Only    bool // the token call is refused, as on IMDSv1-only hosts
	noData    bool
	delay     time.Duration
	tokenSeen atomic.Bool
}

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
		if f.v1Only {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Write([]byte("TOKEN123"))
	case r.Method == http.MethodGet && r.URL.Path == "/latest/user-data":
		if !f.v1Only {
			if r.Header.Get("X-aws-ec2-metadata-token") != "TOKEN123" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			f.tokenSeen.Store(true)
		}
		if f.noData {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Write(f.userData)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestIMDS(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(minimalConfig))
	zw.Close()
	cases := []struct {
		name    string
		srv     *fakeIMDS
		want    string // "" means no config
		wantErr bool
	}{
		{"IMDSv2 Ignition", &fakeIMDS{userData: []byte(minimalConfig)}, minimalConfig, false},
		{"IMDSv1 fallback", &fakeIMDS{userData: []byte(minimalConfig), v1Only: true}, minimalConfig, false},
		{"gzipped user-data", &fakeIMDS{userData: gz.Bytes()}, minimalConfig, false},
		{"cloud-config is cloud-init's", &fakeIMDS{userData: []byte("#cloud-config\nwrite_files: []\n")}, "", false},
		{"JSON that is not Ignition", &fakeIMDS{userData: []byte(`{"a":1}`)}, "", false},
		{"no user-data", &fakeIMDS{noData: true}, "", false},
		{"too slow: not on EC2", &fakeIMDS{userData: []byte(minimalConfig), delay: 2 * time.Second}, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.srv)
			defer srv.Close()
			s := IMDS{Endpoint: srv.URL, Timeout: 500 * time.Millisecond}
			data, err := s.Fetch(context.Background())
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v", err)
			}
			if string(data) != c.want {
				t.Errorf("got %q, want %q", data, c.want)
			}
			if c.name == "IMDSv2 Ignition" && !c.srv.tokenSeen.Load() {
				t.Error("the token was not sent")
			}
		})
	}
	// Nothing listening: no config, quickly.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	start := time.Now()
	if data, err := (IMDS{Endpoint: url, Timeout: time.Second}).Fetch(context.Background()); data != nil || err != nil {
		t.Errorf("closed endpoint: %q %v", data, err)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("a closed endpoint took too long")
	}
	// A server error is an error, not "no config".
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	defer bad.Close()
	if _, err := (IMDS{Endpoint: bad.URL}).Fetch(context.Background()); err == nil {
		t.Error("HTTP 500 was taken for no config")
	}
	// fw_cfg first, then IMDS, end to end.
	imds := httptest.NewServer(&fakeIMDS{userData: []byte(minimalConfig)})
	defer imds.Close()
	root := newRoot(t)
	res, err := Run(context.Background(), Options{Root: root, Sources: []Source{
		FwCfg{Path: filepath.Join(root, "absent"), LoadModule: func(context.Context) error { return nil }},
		IMDS{Endpoint: imds.URL},
	}})
	if err != nil || res.Status != "applied" || !strings.Contains(res.Source, "EC2") {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestIsIgnitionJSON(t *testing.T) {
	for s, want := range map[string]bool{
		minimalConfig:                        true,
		`  {"ignition":{"version":"3.0.0"}}`: true,
		`{"ignition":{}}`:                    false,
		`{"ignition":"x"}`:                   false,
		"#cloud-config\n":                    false,
		"#!/bin/sh\n":                        false,
		"":                                   false,
	} {
		if got := IsIgnitionJSON([]byte(s)); got != want {
			t.Errorf("%q: %v", s, got)
		}
	}
}
