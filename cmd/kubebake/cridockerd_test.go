package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// criDockerdBinary is the binary inside the test's release tarball: a small executable.
var criDockerdBinary = []byte("#!/bin/sh\necho 'cri-dockerd 0.3.16 (test)'\n")

// criDockerdTarball is upstream's release layout: cri-dockerd/cri-dockerd in a gzip'd tar.
func criDockerdTarball(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "cri-dockerd/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "cri-dockerd/cri-dockerd", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(criDockerdBinary))})
	tw.Write(criDockerdBinary)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dockerWithCRIDockerd makes the CLI test recipe a docker one whose cri-dockerd is upstream's
// release tarball (reached through the recipe's mirror rule for https://github.com/).
func dockerWithCRIDockerd(t *testing.T) func(string) string {
	return func(y string) string {
		for _, e := range [][2]string{
			{"  name: containerd\n  packages: [containerd, runc]\n", "  name: docker\n  packages: [docker.io, containerd, runc]\n  sandboxImage: registry.k8s.io/pause:3.10\n"},
			{"  cgroupDriver: systemd\n", "  cgroupDriver: systemd\n  criDockerd:\n    version: \"0.3.16\"\n    source:\n      type: url\n" +
				"      url: https://github.com/Mirantis/cri-dockerd/releases/download/v{version}/cri-dockerd-{version}.{arch}.tgz\n" +
				"      member: cri-dockerd/{name}\n"},
			{"driver: overlayfs", "driver: overlay2"},
			{"      - containerd.service\n", "      - docker.service\n      - cri-docker.service\n"}, // master
			{"      - containerd.service\n", "      - docker.service\n      - cri-docker.service\n"}, // minion
		} {
			if !strings.Contains(y, e[0]) {
				t.Fatalf("edit %q: not in the recipe", e[0])
			}
			y = strings.Replace(y, e[0], e[1], 1)
		}
		return y
	}
}

// kubebake lock pins cri-dockerd's tarball by its first download (upstream publishes no
// checksum), kubebake fetch returns the binary inside it, and a warm fetch needs no server.
func TestLockFetchCRIDockerd(t *testing.T) {
	recipePath, up := cliRecipeWith(t, dockerWithCRIDockerd(t))
	cache := t.TempDir()
	lockPath := strings.TrimSuffix(recipePath, ".yaml") + ".lock"
	t.Setenv("SOURCE_DATE_EPOCH", "")

	if _, logs, err := kb(t, "lock", recipePath, "--update=false", "-o", "text", "--cache-dir", cache); err != nil {
		t.Fatalf("lock: %v\n%s", err, logs)
	} else if !strings.Contains(logs, "no checksum published") {
		t.Errorf("lock does not say cri-dockerd is pinned by its first download:\n%s", logs)
	}
	l, err := recipes.ReadLock(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	tgz := criDockerdTarball(t)
	want := recipes.LockedArtifact{Name: "cri-dockerd", Kind: "binary", Source: "url", Version: "0.3.16",
		URL:    "https://github.com/Mirantis/cri-dockerd/releases/download/v0.3.16/cri-dockerd-0.3.16.amd64.tgz",
		Member: "cri-dockerd/cri-dockerd", SHA256: hexSum(tgz), Size: int64(len(tgz))}
	var got recipes.LockedArtifact
	for _, a := range l.Artifacts {
		if a.Name == "cri-dockerd" {
			got = a
		}
	}
	if got != want {
		t.Errorf("locked\n %+v\nwant\n %+v", got, want)
	}
	if data, _ := os.ReadFile(lockPath); bytes.Contains(data, []byte("127.0.0.1")) {
		t.Error("the lock names the local server")
	}

	fetch := func() (map[string]fetchedArtifact, string) {
		t.Helper()
		out, logs, err := kb(t, "fetch", recipePath, "-o", "json", "--cache-dir", cache)
		if err != nil {
			t.Fatalf("fetch: %v\n%s", err, logs)
		}
		var arts []fetchedArtifact
		if err := json.Unmarshal([]byte(out), &arts); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		m := map[string]fetchedArtifact{}
		for _, a := range arts {
			m[a.Name] = a
		}
		return m, logs
	}
	arts, _ := fetch()
	a, ok := arts["cri-dockerd"]
	if !ok {
		t.Fatalf("fetch lists no cri-dockerd: %v", arts)
	}
	if data, err := os.ReadFile(a.Path); err != nil || !bytes.Equal(data, criDockerdBinary) {
		t.Errorf("fetch gives %s for cri-dockerd (%v), not the binary inside the tarball", a.Path, err)
	}

	up.srv.Close()
	arts, logs := fetch()
	if arts["cri-dockerd"].Path != a.Path || !strings.Contains(logs, "(warm)") {
		t.Errorf("warm fetch with the server gone: %+v\n%s", arts["cri-dockerd"], logs)
	}
}
