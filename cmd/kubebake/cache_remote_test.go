package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/artifacts/aws/fakeaws"
	"github.com/kubebake/kubebake/artifacts/remotecache"
)

// sharedCacheEnv starts the fake S3 (gofakes3 on 127.0.0.1) with the bucket kubebake-cache and
// points the standard AWS chain at it: the fake's keys in the environment, no shared files,
// no IMDS, KUBEBAKE_S3_ENDPOINT for the endpoint. --cache-remote is reset after the test (the
// cobra tree outlives it).
func sharedCacheEnv(t *testing.T) *fakeaws.Server {
	t.Helper()
	srv := fakeaws.StartS3(t, "kubebake-cache")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": fakeaws.AccessKey, "AWS_SECRET_ACCESS_KEY": fakeaws.SecretKey, "AWS_SESSION_TOKEN": "",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"AWS_PROFILE": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_S3": "",
		remotecache.EnvEndpoint: srv.S3.URL, remotecache.EnvRemote: "",
	} {
		t.Setenv(k, v)
	}
	t.Cleanup(func() { globals.cacheRemote = "" })
	return srv
}

// A bad --cache-remote or $KUBEBAKE_CACHE_REMOTE is refused by the setting's name, with the
// form to give; the flag wins over the variable.
func TestCacheRemoteSettingErrors(t *testing.T) {
	sharedCacheEnv(t)
	dir := t.TempDir()
	for _, tc := range []struct{ flag, env, names, says string }{
		{flag: "https://kubebake-cache/ci", names: "--cache-remote", says: "only s3:// URLs"},
		{flag: "s3:///ci", names: "--cache-remote", says: "no bucket"},
		{env: "kubebake-cache/ci", names: remotecache.EnvRemote, says: "only s3:// URLs"},
		{env: "s3://", names: remotecache.EnvRemote, says: "no bucket"},
		{flag: "s3://", env: "s3://kubebake-cache/ci", names: "--cache-remote", says: "no bucket"},
	} {
		t.Setenv(remotecache.EnvRemote, tc.env)
		_, _, err := kb(t, "cache", "path", "-o", "text", "--cache-dir", dir, "--cache-remote", tc.flag)
		if err == nil || !strings.HasPrefix(err.Error(), tc.names+" ") || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "s3://BUCKET/PREFIX") {
			t.Errorf("flag %q, env %q: %v; want an error naming %s, saying %q and the form to give", tc.flag, tc.env, err, tc.names, tc.says)
		}
	}
	t.Setenv(remotecache.EnvEndpoint, "localhost:9000")
	_, _, err := kb(t, "cache", "path", "-o", "text", "--cache-dir", dir, "--cache-remote", "s3://kubebake-cache/ci")
	if err == nil || !strings.Contains(err.Error(), remotecache.EnvEndpoint) {
		t.Errorf("bad endpoint: %v", err)
	}
}

// The cache commands say which shared cache is behind the local one; `cache path` keeps its
// stdout the one line scripts read.
func TestCacheCommandsNameTheRemote(t *testing.T) {
	sharedCacheEnv(t)
	dir := t.TempDir()
	t.Setenv(remotecache.EnvRemote, "s3://kubebake-cache/from-env")
	out, logs, err := kb(t, "cache", "path", "-o", "text", "--cache-dir", dir, "--cache-remote", "")
	if err != nil || strings.TrimSpace(out) != dir || !strings.Contains(logs, "shared cache: s3://kubebake-cache/from-env") {
		t.Errorf("cache path (remote from the environment): %q %q %v", out, logs, err)
	}
	out, _, err = kb(t, "cache", "path", "-o", "json", "--cache-dir", dir, "--cache-remote", "s3://kubebake-cache/ci")
	var res map[string]string
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res["remote"] != "s3://kubebake-cache/ci" || res["path"] != dir {
		t.Errorf("cache path -o json (the flag wins): %q %v", out, err)
	}
	out, _, err = kb(t, "cache", "verify", "-o", "text", "--cache-dir", dir, "--cache-remote", "s3://kubebake-cache/ci")
	if err != nil || !strings.Contains(out, "the shared cache s3://kubebake-cache/ci was not checked") {
		t.Errorf("cache verify: %q %v", out, err)
	}
	out, _, err = kb(t, "cache", "prune", "--all=false", "-o", "text", "--cache-dir", dir, "--cache-remote", "s3://kubebake-cache/ci")
	if err != nil || !strings.Contains(out, "the shared cache s3://kubebake-cache/ci was left alone") {
		t.Errorf("cache prune: %q %v", out, err)
	}
}

// Two CI runners: the first locks and fetches the recipe with --cache-remote, which uploads
// every artifact; the second, with an empty cache of its own, fetches everything from the
// bucket and sends not one request upstream.
func TestFetchThroughTheSharedCache(t *testing.T) {
	srv := sharedCacheEnv(t)
	recipePath, up := cliRecipe(t)
	t.Setenv("SOURCE_DATE_EPOCH", "")
	remote := []string{"--cache-remote", "s3://kubebake-cache/ci"}

	first := t.TempDir()
	if _, logs, err := kb(t, append([]string{"lock", recipePath, "--update=false", "-o", "text", "--cache-dir", first}, remote...)...); err != nil {
		t.Fatalf("lock: %v\n%s", err, logs)
	}
	if _, logs, err := kb(t, append([]string{"fetch", recipePath, "-o", "json", "--cache-dir", first}, remote...)...); err != nil {
		t.Fatalf("first runner's fetch: %v\n%s", err, logs)
	}
	objects := srv.ObjectCount("kubebake-cache")
	if objects == 0 {
		t.Fatal("the first runner uploaded nothing")
	}

	second := t.TempDir()
	before := up.requests()
	out, logs, err := kb(t, append([]string{"fetch", recipePath, "-o", "json", "--cache-dir", second}, remote...)...)
	if err != nil {
		t.Fatalf("second runner's fetch: %v\n%s", err, logs)
	}
	var fetched []fetchedArtifact
	if err := json.Unmarshal([]byte(out), &fetched); err != nil || len(fetched) == 0 {
		t.Fatalf("fetch -o json: %v\n%s", err, out)
	}
	for _, a := range fetched {
		if !strings.HasPrefix(a.Path, second) {
			t.Errorf("%s is at %s, outside the second runner's cache", a.Name, a.Path)
		}
	}
	if n := up.requests() - before; n != 0 {
		t.Errorf("the second runner sent %d requests upstream\n%s", n, logs)
	}
	if !strings.Contains(logs, "shared cache s3://kubebake-cache/ci:") || !strings.Contains(logs, "downloaded, 0 uploaded") || strings.Contains(logs, "WARN") {
		t.Errorf("second runner's stderr:\n%s", logs)
	}
	if srv.ObjectCount("kubebake-cache") != objects {
		t.Errorf("the second runner changed the bucket: %d objects, then %d", objects, srv.ObjectCount("kubebake-cache"))
	}
	t.Logf("%d objects shared; second runner: %s", objects, strings.TrimSpace(logs))
}

// An s3:// URL given where the local cache folder goes is refused with the setting to use.
func TestCacheDirIsNoURL(t *testing.T) {
	t.Cleanup(func() { globals.cacheDir = "" }) // flags outlive a command run in tests
	_, _, err := kb(t, "cache", "verify", "-o", "text", "--cache-dir", "s3://ci-cache/runners")
	if err == nil || !strings.Contains(err.Error(), "--cache-dir") || !strings.Contains(err.Error(), "--cache-remote") {
		t.Errorf("--cache-dir s3://: err = %v", err)
	}
	t.Setenv("KUBEBAKE_CACHE", "s3://ci-cache/runners")
	_, _, err = kb(t, "cache", "verify", "-o", "text", "--cache-dir=")
	if err == nil || !strings.Contains(err.Error(), "KUBEBAKE_CACHE ") || !strings.Contains(err.Error(), "KUBEBAKE_CACHE_REMOTE") {
		t.Errorf("KUBEBAKE_CACHE=s3://: err = %v", err)
	}
}
