package artifacts

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A mirror URL with credentials: Go's client sends them, and no log line or error shows them.
func TestDownloadHidesURLCredentials(t *testing.T) {
	const pass = "Hunter22-secret"
	body := []byte(strings.Repeat("deb", 1000))
	var fails atomic.Int32
	fails.Store(1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "apt" || p != pass {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/debian/missing" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if fails.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	var logs bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)

	mirror := strings.Replace(srv.URL, "http://", "http://apt:"+pass+"@", 1) + "/debian"
	d := &Downloader{Backoff: time.Millisecond, MaxBackoff: time.Millisecond, Attempts: 3}
	c := newCache(t)
	if _, err := d.Fetch(context.Background(), c, mirror+"/pool/x.deb", sum(body), int64(len(body))); err != nil {
		t.Fatalf("fetch with credentials: %v", err)
	}
	_, err := d.Fetch(context.Background(), c, mirror+"/missing", sum([]byte("other")), 5)
	if err == nil {
		t.Fatal("a 404 succeeded")
	}
	bad := mirror + "/%zz"
	_, err2 := d.GetSmall(context.Background(), bad, 10)
	all := logs.String() + "\n" + err.Error() + "\n" + err2.Error()
	if strings.Contains(all, pass) {
		t.Errorf("the password reached a log line or an error:\n%s", all)
	}
	if !strings.Contains(all, "http://***@127.0.0.1") || !strings.Contains(logs.String(), "retrying") {
		t.Errorf("logs and errors:\n%s", all)
	}
	if mirrorKey(mirror) != mirrorKey(strings.Replace(mirror, pass, "other", 1)) {
		t.Error("the index cache key depends on the mirror's password")
	}
}
