package artifacts

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kubebake/kubebake/artifacts/oci"
	"github.com/kubebake/kubebake/recipes"
)

// routedSource sends the inputs and artifacts whose names start with prefix to match, the
// others to rest: a real gomod source for one module, fakes for Kubernetes and the rest.
type routedSource struct {
	prefix      string
	match, rest Source
}

func (r *routedSource) Type() string { return r.rest.Type() }

func (r *routedSource) Resolve(ctx context.Context, inputs []recipes.Input, prev []recipes.LockedArtifact, update bool) ([]recipes.LockedArtifact, error) {
	var mi, ri []recipes.Input
	for _, in := range inputs {
		if strings.HasPrefix(in.Name, r.prefix) {
			mi = append(mi, in)
		} else {
			ri = append(ri, in)
		}
	}
	mp, rp := r.split(prev)
	out, err := r.rest.Resolve(ctx, ri, rp, update)
	if err != nil || len(mi) == 0 {
		return out, err
	}
	more, err := r.match.Resolve(ctx, mi, mp, update)
	return append(out, more...), err
}

func (r *routedSource) Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error) {
	ma, ra := r.split(arts)
	out, err := r.rest.Fetch(ctx, ra)
	if err != nil || len(ma) == 0 {
		return out, err
	}
	more, err := r.match.Fetch(ctx, ma)
	for k, v := range more {
		out[k] = v
	}
	return out, err
}

func (r *routedSource) split(arts []recipes.LockedArtifact) (match, rest []recipes.LockedArtifact) {
	for _, a := range arts {
		if strings.HasPrefix(a.Name, r.prefix) {
			match = append(match, a)
		} else {
			rest = append(rest, a)
		}
	}
	return match, rest
}

// agentModule is a tiny main package served by a module proxy on disk (modProxy).
var agentModule = map[string]string{
	"go.mod":            "module example.com/agent\n\ngo 1.22\n",
	"cmd/agent/main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"agent here\") }\n",
}

// writeDockerSave writes a docker save tarball of a tiny image tagged ref at p.
func writeDockerSave(t *testing.T, p, ref, content string) {
	t.Helper()
	img, err := oci.Build(oci.Spec{Files: []oci.File{{Path: "/hello.txt", Mode: 0o644, Open: oci.FromBytes([]byte(content))}}, SourceDateEpoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(p, tag, img); err != nil {
		t.Fatal(err)
	}
}

// extraSources are the fake sources with a real gomod source for image-bin/* (the agent
// module from a proxy on disk), the real archive source for the recipe's folder and a fresh
// cache for each.
func extraSources(t *testing.T, dir string) map[string]Source {
	srcs, fakes := fakeSources(t)
	srcs[recipes.SourceGoMod] = &routedSource{prefix: "image-bin/", rest: fakes[recipes.SourceGoMod],
		match: modProxy(t, openTestCache(t), "example.com/agent", "v0.3.1", agentModule)}
	srcs[recipes.SourceArchive] = NewArchiveSource(openTestCache(t), dir)
	return srcs
}

// A recipe's own images, end to end without a network: an archive beside the recipe and a
// gomod main package are pinned by the lock (file and image sha256, digest, reference; module
// version, binary sha256, image sha256), locking again changes nothing, a machine with a cold
// cache gets byte-identical archives, and a changed archive is drift until locked again.
func TestExtraImagesLockAndFetch(t *testing.T) {
	dir := t.TempDir()
	data, err := recipes.EmbeddedFile("debian-12.yaml")
	if err != nil {
		t.Fatal(err)
	}
	yaml := string(data) + `
images:
  - name: hello
    archive: images/hello.tar
  - name: agent
    version: "0.3"
    source: {type: gomod, module: example.com/agent, package: ./cmd/agent}
`
	recipePath := filepath.Join(dir, "r.yaml")
	if err := os.WriteFile(recipePath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	archivePath := filepath.Join(dir, "images", "hello.tar")
	writeDockerSave(t, archivePath, "hello:1.0", "hello\n")
	r, err := recipes.Load(recipePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := recipes.LintError(recipes.Lint(r)); err != nil {
		t.Fatal(err)
	}
	setClock(t, time.Date(2026, 11, 22, 15, 4, 5, 0, time.UTC))
	ctx := context.Background()

	start := time.Now()
	l, err := Lock(ctx, r, nil, false, extraSources(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("locked (with one go build) in %v", time.Since(start).Round(time.Millisecond))
	arts := map[string]recipes.LockedArtifact{}
	for _, a := range l.Artifacts {
		arts[a.Name] = a
	}
	_, fileSum, _ := recipes.HashImageArchive(dir, "images/hello.tar")
	hello := arts["image/hello"]
	if hello.Kind != recipes.KindImage || hello.Source != recipes.SourceArchive || hello.Package != "images/hello.tar" || hello.SourceSHA256 != fileSum ||
		hello.Ref != "kubebake.local/hello:1.0" || hello.Version != "1.0" || !strings.HasPrefix(hello.Digest, "sha256:") || !ValidSHA256(hello.SHA256) || hello.SHA256 == fileSum {
		t.Errorf("image/hello %+v", hello)
	}
	bin := arts["image-bin/agent"]
	if bin.Source != recipes.SourceGoMod || bin.Module != "example.com/agent@v0.3.1" || bin.Package != "example.com/agent/cmd/agent" || bin.Version != "v0.3.1" || !strings.HasPrefix(bin.ModuleSum, "h1:") {
		t.Errorf("image-bin/agent %+v", bin)
	}
	agent := arts["image/agent"]
	if agent.Source != SourceOCI || agent.Package != "image-bin/agent" || agent.Ref != "kubebake.local/agent:v0.3.1" || agent.Version != "v0.3.1" || !strings.HasPrefix(agent.Digest, "sha256:") {
		t.Errorf("image/agent %+v", agent)
	}
	if drift := imageDrifts(recipes.CheckLock(r, l)); len(drift) != 0 {
		t.Errorf("a fresh lock's images drift: %v", drift)
	}

	// Idempotent: locking again keeps every entry (and builds nothing).
	again, err := Lock(ctx, r, l, false, extraSources(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := recipes.MarshalLock(l)
	b, _ := recipes.MarshalLock(again)
	if string(a) != string(b) {
		t.Errorf("locking again changed the lock: %v", Diff(l, again))
	}

	// Another machine: every cache is cold. The program is built again, the image made again
	// from it, the archive rewritten from the recipe's file; each is the locked bytes.
	start = time.Now()
	paths, err := Fetch(ctx, l, extraSources(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fetched on a cold cache in %v", time.Since(start).Round(time.Millisecond))
	for _, n := range []string{"image/hello", "image/agent", "image-bin/agent"} {
		got, err := os.ReadFile(paths[n])
		if err != nil || sum(got) != arts[n].SHA256 {
			t.Errorf("%s fetched at %s: not the locked bytes (%v)", n, paths[n], err)
		}
	}
	for _, n := range []string{"image/hello", "image/agent"} {
		checked, err := oci.Validate(paths[n])
		if err != nil || len(checked) != 1 || checked[0].Ref != arts[n].Ref || checked[0].Digest != arts[n].Digest {
			t.Errorf("%s: %+v %v", n, checked, err)
		}
		if n == "image/agent" && strings.Join(checked[0].Config.Config.Entrypoint, " ") != "/agent" {
			t.Errorf("agent entrypoint %v", checked[0].Config.Config.Entrypoint)
		}
	}
	if out, err := exec.Command(executable(t, paths["image-bin/agent"], "agent")).Output(); err != nil || string(out) != "agent here\n" {
		t.Errorf("the agent built: %q %v", out, err)
	}

	// The archive changes: drift, a cold fetch refuses it, and locking pins the new one.
	writeDockerSave(t, archivePath, "hello:1.1", "hello again\n")
	if drift := imageDrifts(recipes.CheckLock(r, l)); len(drift) != 1 || !strings.Contains(drift[0], "image/hello archive images/hello.tar changed since the lock was written") {
		t.Errorf("changed archive: %v", drift)
	}
	if _, err := Fetch(ctx, l, extraSources(t, dir)); err == nil || !strings.Contains(err.Error(), "the archive changed since the lock was written; run \"kubebake lock\"") {
		t.Errorf("cold fetch of a changed archive: %v", err)
	}
	relocked, err := Lock(ctx, r, l, false, extraSources(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	var changes []string
	for _, c := range Diff(l, relocked) {
		changes = append(changes, c.String())
	}
	if !strings.Contains(strings.Join(changes, "\n"), "image/hello 1.0 -> 1.1") {
		t.Errorf("relocked changes: %v", changes)
	}
	if drift := imageDrifts(recipes.CheckLock(r, relocked)); len(drift) != 0 {
		t.Errorf("the new lock's images drift: %v", drift)
	}
}

// imageDrifts are the drifts of a CheckLock error about images (the fake sources pin
// made-up versions, so the others are not looked at).
func imageDrifts(err error) []string {
	var de *recipes.DriftError
	if !errors.As(err, &de) {
		return nil
	}
	var out []string
	for _, d := range de.Drifts {
		if strings.HasPrefix(d.Name, "image") {
			out = append(out, d.Name+" "+d.Detail)
		}
	}
	return out
}
