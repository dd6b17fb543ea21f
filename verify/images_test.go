package verify

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// imagesSpec is a containerd master that imports the baked images: kubebake's pause and a
// recipe's own hello.
func imagesSpec() Spec {
	s := testSpec()
	s.Roles[RoleMaster] = append(s.Roles[RoleMaster], "kubebake-images.service")
	s.Images = []Image{
		{Name: "hello", Ref: "kubebake.local/hello:1.0", Digest: "sha256:" + strings.Repeat("1", 64)},
		{Name: "pause", Ref: "kubebake.local/pause:1.35.0", Digest: "sha256:" + strings.Repeat("2", 64)},
	}
	return s
}

// ctrImagesLS is `ctr --namespace k8s.io images ls` as containerd 1.6 prints it, with
// pause only (the recipe's hello missing) and the sandbox image the CRI plugin added.
var ctrImagesLS = "REF                                  TYPE                                       DIGEST                                                                  SIZE    PLATFORMS   LABELS\n" +
	"kubebake.local/pause:1.35.0          application/vnd.oci.image.manifest.v1+json sha256:" + strings.Repeat("2", 64) + " 1.0 MiB linux/amd64 io.cri-containerd.image=managed\n" +
	"sha256:" + strings.Repeat("9", 64) + " application/vnd.oci.image.manifest.v1+json sha256:" + strings.Repeat("2", 64) + " 1.0 MiB linux/amd64 io.cri-containerd.image=managed\n"

// Every baked image is checked in containerd by name and digest; a missing one, one at
// another digest, or a ctr that fails, each fails its check by name. The scripts run against
// a saved `ctr images ls`.
func TestImageProbes(t *testing.T) {
	ps := Probes(imagesSpec())
	kb := t.TempDir()
	run := func(p Probe, listing string) Output {
		t.Helper()
		os.WriteFile(filepath.Join(kb, "images"), []byte(listing), 0o644)
		cmd := exec.Command("sh", "-c", p.Script)
		cmd.Env = append(os.Environ(), "KB="+kb)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", p.Name, err, out)
		}
		return Output{Text: string(out)}
	}
	pause, hello := probeByName(t, ps, "image/pause"), probeByName(t, ps, "image/hello")
	if pause.Prelude == "" || pause.Prelude != hello.Prelude || !strings.Contains(pause.Prelude, "ctr --namespace k8s.io images ls") {
		t.Errorf("the image checks do not share one listing: %q", pause.Prelude)
	}
	for _, c := range []struct {
		probe   Probe
		listing string
		pass    bool
		got     string
	}{
		{pause, ctrImagesLS, true, "kubebake.local/pause:1.35.0 at sha256:2222"},
		{hello, ctrImagesLS, false, "not in containerd"},
		{hello, strings.Replace(ctrImagesLS, "kubebake.local/pause:1.35.0        ", "kubebake.local/hello:1.0 ", 1), false, "digest sha256:2222"},
		{hello, ctrImagesLS + "kubebake.local/hello:1.0 application/vnd.docker.distribution.manifest.v2+json sha256:" + strings.Repeat("1", 64) + " 2 KiB linux/amd64 -\n", true, "at sha256:1111"},
		{pause, "ctr: failed to dial \"/run/containerd/containerd.sock\"\nctr-failed: exit 1\n", false, "not in containerd (ctr images ls failed: ctr-failed: exit 1)"},
	} {
		got, pass := c.probe.Eval(run(c.probe, c.listing))
		if pass != c.pass || !strings.Contains(got, c.got) {
			t.Errorf("%s: got %q pass=%v, want %q pass=%v", c.probe.Name, got, pass, c.got, c.pass)
		}
	}
	if c := probeByName(t, ps, "image/hello"); !strings.Contains(c.Expected, "kubebake.local/hello:1.0") || len(c.Units) == 0 || c.Units[0] != "kubebake-images.service" {
		t.Errorf("hello check: %+v", c)
	}

	// Docker beside the kubelet on containerd's CRI: containerd has them too.
	if c := probeByName(t, Probes(func() Spec { s := imagesSpec(); s.Runtime = "docker"; return s }()), "image/hello"); c.Name == "" {
		t.Errorf("docker beside containerd: no image check")
	}
	// Only where the role imports them: not on a role without kubebake-images.service, nor
	// under docker behind cri-dockerd.
	for _, s := range []Spec{
		func() Spec { s := imagesSpec(); s.Role = RoleMinion; return s }(),
		func() Spec { s := imagesSpec(); s.Runtime = "docker"; s.CRI = "cri-dockerd"; return s }(),
	} {
		for _, p := range Probes(s) {
			if strings.HasPrefix(p.Name, "image/") {
				t.Errorf("role %s runtime %s: image check %s", s.Role, s.Runtime, p.Name)
			}
		}
	}
}

// The spec's images come from the manifest: its image artifacts whose archive the layer holds.
func TestManifestSpecImages(t *testing.T) {
	doc := strings.Replace(sampleManifest, `"artifacts": [`, `"artifacts": [
    {"name": "image/hello", "kind": "image", "source": "archive", "version": "1.0", "package": "images/hello.tar", "ref": "kubebake.local/hello:1.0", "digest": "sha256:d1", "sourceSha256": "f1", "sha256": "a1"},
    {"name": "image/pause", "kind": "image", "source": "oci", "version": "v1.35.0", "package": "busybox", "ref": "kubebake.local/pause:1.35.0", "digest": "sha256:d2", "sha256": "a2"},
    {"name": "image/unplaced", "kind": "image", "source": "oci", "ref": "kubebake.local/unplaced:1", "digest": "sha256:d3", "sha256": "a3"},`, 1)
	doc = strings.Replace(doc, `"files": [`, `"files": [
    {"path": "/usr/lib/kubebake/images/hello.tar", "type": "file", "mode": 420, "artifact": "image/hello", "sha256": "a1"},
    {"path": "/usr/lib/kubebake/images/pause.tar", "type": "file", "mode": 420, "artifact": "image/pause", "sha256": "a2"},`, 1)
	m, err := ParseManifest([]byte(doc), "sample")
	if err != nil {
		t.Fatal(err)
	}
	s := m.Spec(RoleMaster)
	var got []string
	for _, img := range s.Images {
		got = append(got, img.Name+" "+img.Ref+" "+img.Digest)
	}
	if strings.Join(got, "; ") != "hello kubebake.local/hello:1.0 sha256:d1; pause kubebake.local/pause:1.35.0 sha256:d2" {
		t.Errorf("spec images: %v", got)
	}
	// The archive files themselves are checked by sha256 like every file of an artifact.
	checked := map[string]bool{}
	for _, b := range s.Binaries {
		checked[b.Name+" "+b.Path+" "+b.SHA256] = true
	}
	if !checked["image/hello /usr/lib/kubebake/images/hello.tar a1"] {
		t.Errorf("hello.tar is not checked by sha256: %+v", s.Binaries)
	}
}
