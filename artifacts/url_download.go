package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/recipes"
)

// Downloader fetches URLs with bounded retries and exponential backoff. It is shared by the
// url and deb sources. The zero value is usable.
type Downloader struct {
	// Client is the HTTP client; nil means a client with sane timeouts for large downloads.
	Client *http.Client
	// Attempts bounds tries per URL (default 5); Backoff is the first wait (default 500 ms),
	// doubled after each failure up to MaxBackoff (default 10 s).
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Rewrites map URL prefixes to mirrors (the recipe's mirrors:). They are applied to every
	// request; locks keep the upstream URL.
	Rewrites []recipes.URLRewrite
}

var defaultClient = &http.Client{
	Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	},
}

func (d *Downloader) client() *http.Client {
	if d.Client != nil {
		return d.Client
	}
	return defaultClient
}

// Rewrite applies the longest matching mirror rule to u.
func (d *Downloader) Rewrite(u string) string {
	return rewriteURL(d.Rewrites, u)
}

// shown is the rewritten URL as messages and logs show it: without credentials.
func (d *Downloader) shown(u string) string { return redact.URL(d.Rewrite(u)) }

func rewriteURL(rules []recipes.URLRewrite, u string) string {
	best := -1
	for i, r := range rules {
		if r.Prefix != "" && strings.HasPrefix(u, r.Prefix) && (best < 0 || len(r.Prefix) > len(rules[best].Prefix)) {
			best = i
		}
	}
	if best < 0 {
		return u
	}
	return rules[best].Replacement + strings.TrimPrefix(u, rules[best].Prefix)
}

// HTTPError is a response with an unexpected status.
type HTTPError struct {
	URL        string // the URL requested (after mirror rewrites)
	Upstream   string // the URL before rewrites, when it differs
	StatusCode int
	Status     string
}

func (e *HTTPError) Error() string {
	where := e.URL
	if e.Upstream != "" && e.Upstream != e.URL {
		where += " (mirror of " + e.Upstream + ")"
	}
	msg := fmt.Sprintf("GET %s: %s", redact.URLs(where), e.Status)
	switch {
	case e.StatusCode == http.StatusNotFound || e.StatusCode == http.StatusGone:
		msg += "; the file is not there: check the version and the source URL in the recipe"
		if e.Upstream != "" && e.Upstream != e.URL {
			msg += ", and that the mirror holds it"
		}
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden:
		msg += "; the server refused access: check the mirror rules and credentials"
	}
	return msg
}

// retryable reports whether a later attempt may succeed.
func (e *HTTPError) retryable() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusRequestTimeout || e.StatusCode == http.StatusTooManyRequests
}

// permanentError wraps errors that retrying cannot fix.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// retry runs try until it succeeds, fails permanently, runs out of attempts or ctx ends.
func (d *Downloader) retry(ctx context.Context, what string, try func() error) error {
	what = redact.URLs(what) // a mirror URL may carry credentials
	attempts := d.Attempts
	if attempts <= 0 {
		attempts = 5
	}
	wait := d.Backoff
	if wait <= 0 {
		wait = 500 * time.Millisecond
	}
	maxWait := d.MaxBackoff
	if maxWait <= 0 {
		maxWait = 10 * time.Second
	}
	var err error
	for i := 1; ; i++ {
		err = try()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		var he *HTTPError
		if errors.As(err, &he) && !he.retryable() {
			return err
		}
		if i >= attempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempts)
		}
		slog.Warn("download failed, retrying", "what", what, "attempt", i, "of", attempts, "wait", wait, "err", redact.URLs(err.Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
		wait = min(wait*2, maxWait)
	}
}

// get issues one GET of the rewritten URL and returns the response for a 200.
func (d *Downloader) get(ctx context.Context, upstream string) (*http.Response, error) {
	u := d.Rewrite(upstream)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, permanentError{fmt.Errorf("bad URL %q: %w", redact.URL(u), redact.Err(err))}
	}
	req.Header.Set("User-Agent", "kubebake")
	resp, err := d.client().Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, &HTTPError{URL: u, Upstream: upstream, StatusCode: resp.StatusCode, Status: resp.Status}
	}
	return resp, nil
}

// GetSmall downloads a small document (a checksum file, a Release file) into memory; limit
// bounds its size.
func (d *Downloader) GetSmall(ctx context.Context, upstream string, limit int64) ([]byte, error) {
	var data []byte
	err := d.retry(ctx, upstream, func() error {
		resp, err := d.get(ctx, upstream)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return fmt.Errorf("GET %s: reading the body: %w", d.shown(upstream), err)
		}
		if int64(len(data)) > limit {
			return permanentError{fmt.Errorf("GET %s: larger than %d bytes; is this the right URL?", d.shown(upstream), limit)}
		}
		return nil
	})
	return data, err
}

// Head returns the Content-Length of a URL, or -1 when the server does not say.
func (d *Downloader) Head(ctx context.Context, upstream string) (int64, error) {
	var size int64 = -1
	err := d.retry(ctx, upstream, func() error {
		u := d.Rewrite(upstream)
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
		if err != nil {
			return permanentError{redact.Err(err)}
		}
		req.Header.Set("User-Agent", "kubebake")
		resp, err := d.client().Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return &HTTPError{URL: u, Upstream: upstream, StatusCode: resp.StatusCode, Status: resp.Status}
		}
		size = resp.ContentLength
		return nil
	})
	return size, err
}

// Fetch downloads upstream (through the mirror rules) into the cache as the blob sha256hex,
// unless the cache already holds it. size, when > 0, is the expected length: a shorter body
// is treated as truncated and retried, any other mismatch is refused at once. A body that
// ends before its Content-Length is retried too. Nothing partial is ever left in the cache.
func (d *Downloader) Fetch(ctx context.Context, c *Cache, upstream, sha256hex string, size int64) (string, error) {
	if p, ok, err := c.Lookup(sha256hex); err != nil || ok {
		return p, err
	}
	var path string
	var got int64
	start := time.Now()
	err := d.retry(ctx, upstream, func() error {
		resp, err := d.get(ctx, upstream)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if size > 0 && resp.ContentLength >= 0 && resp.ContentLength != size {
			return permanentError{fmt.Errorf("GET %s: the server sends %d bytes, %d are pinned; the file changed at its source: if that is intended, re-pin it (kubebake lock --update), otherwise the mirror serves bad content", d.shown(upstream), resp.ContentLength, size)}
		}
		cr := &countingReader{r: resp.Body, url: d.shown(upstream), total: max(size, resp.ContentLength), start: time.Now(), last: time.Now()}
		path, err = c.Put(sha256hex, cr)
		var ce *ChecksumError
		switch {
		case errors.As(err, &ce):
			if size > 0 && ce.Size < size {
				return fmt.Errorf("GET %s: truncated body (%d of %d bytes)", d.shown(upstream), ce.Size, size)
			}
			return permanentError{fmt.Errorf("GET %s: %w; the file does not match its pinned checksum: if it changed at its source on purpose, re-pin it (kubebake lock --update), otherwise the mirror serves bad content", d.shown(upstream), err)}
		case err != nil:
			return fmt.Errorf("GET %s: after %d bytes: %w", d.shown(upstream), cr.n, err)
		}
		got = cr.n
		return nil
	})
	if err != nil {
		return "", err
	}
	slog.Info("downloaded", "url", d.shown(upstream), "bytes", got, "elapsed", time.Since(start).Round(time.Millisecond))
	return path, nil
}

// FetchNew downloads upstream (through the mirror rules) into the cache when nothing pins its
// content yet, and returns the sha256, size and cache path of what arrived: the lock then pins
// them (trust on first use, for files published without a checksum). A body that ends before
// its Content-Length is retried; nothing partial is kept. An empty body is refused: no
// release file is empty, an empty answer is a server's mistake.
func (d *Downloader) FetchNew(ctx context.Context, c *Cache, upstream string) (sha256hex string, size int64, path string, err error) {
	start := time.Now()
	err = d.retry(ctx, upstream, func() error {
		resp, err := d.get(ctx, upstream)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		cr := &countingReader{r: resp.Body, url: d.shown(upstream), total: resp.ContentLength, start: time.Now(), last: time.Now()}
		sum, p, err := c.put(cr, "")
		if err != nil {
			return fmt.Errorf("GET %s: after %d bytes: %w", d.shown(upstream), cr.n, err)
		}
		if cr.n == 0 {
			return permanentError{fmt.Errorf("GET %s: empty body; is this the right URL?", d.shown(upstream))}
		}
		sha256hex, size, path = sum, cr.n, p
		return nil
	})
	if err != nil {
		return "", 0, "", err
	}
	c.shareBlob(sha256hex, path)
	slog.Info("downloaded", "url", d.shown(upstream), "bytes", size, "elapsed", time.Since(start).Round(time.Millisecond))
	return sha256hex, size, path, nil
}

// countingReader counts the bytes of a download and logs its progress every few seconds, so
// a long download shows bytes and elapsed time (plain log lines, terminal or not).
type countingReader struct {
	r     io.Reader
	n     int64
	url   string
	total int64 // -1 or 0 when unknown
	start time.Time
	last  time.Time
}

const progressEvery = 5 * time.Second

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if now := time.Now(); now.Sub(c.last) >= progressEvery {
		c.last = now
		args := []any{"url", c.url, "bytes", c.n, "elapsed", now.Sub(c.start).Round(time.Second)}
		if c.total > 0 {
			args = append(args, "percent", c.n*100/c.total)
		}
		slog.Info("downloading", args...)
	}
	return n, err
}
