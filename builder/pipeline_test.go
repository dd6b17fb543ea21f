package builder

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
)

// copyRecipe copies an embedded recipe and its lock into a folder, with edit applied to the
// recipe's text.
func copyRecipe(t *testing.T, name string, edit func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	for _, ext := range []string{".yaml", ".lock"} {
		data, err := os.ReadFile(filepath.Join("..", "recipes", name+ext))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		if ext == ".yaml" {
			text = edit(text)
		}
		if err := os.WriteFile(filepath.Join(dir, name+ext), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, name+".yaml")
}

// runFront runs the pipeline on a recipe whose build must stop before the bake: no source is
// given, so reaching fetch would fail loudly.
func runFront(t *testing.T, recipe string, allowDrift bool) ([]Event, error) {
	t.Helper()
	cache, err := artifacts.OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var events []Event
	out := filepath.Join(t.TempDir(), "out")
	_, err = Run(context.Background(), Request{Recipe: recipe, OutDir: out, Cache: cache, AllowDrift: allowDrift,
		Sources: map[string]artifacts.Source{}, Progress: func(e Event) { events = append(events, e) }})
	assertEmpty(t, out)
	return events, err
}

// A locked recipe edited to a pitfall is refused by the build's lint stage, with the
// position of the field, even when drift from the lock is allowed.
func TestRunRefusesLintErrors(t *testing.T) {
	recipe := copyRecipe(t, "debian-12", func(s string) string {
		return strings.Replace(s, `net.ipv4.ip_forward: "1"`, `net.ipv4.ip_forward: "0"`, 1)
	})
	events, err := runFront(t, recipe, true)
	if err == nil {
		t.Fatal("built a recipe with ip_forward 0")
	}
	msg := err.Error()
	for _, want := range []string{"build lint:", recipe + ":104:", "net.ipv4.ip_forward", "nothing built"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	var stages []string
	for _, e := range events {
		if e.Kind == EventStart {
			stages = append(stages, e.Stage)
		}
	}
	if strings.Join(stages, ",") != "load,lint" {
		t.Errorf("stages run: %v", stages)
	}
	if events[0].Stages != len(StageNames()) {
		t.Errorf("progress says %d stages, the pipeline has %d", events[0].Stages, len(StageNames()))
	}
}

// A recipe that no longer matches its lock (here a sysctl the lint accepts) is refused with
// the drift, and with AllowDrift goes on to fetch.
func TestRunChecksTheLock(t *testing.T) {
	recipe := copyRecipe(t, "debian-12", func(s string) string {
		return strings.Replace(s, "sysctls:\n", "sysctls:\n  vm.max_map_count: \"262144\"\n", 1)
	})
	_, err := runFront(t, recipe, false)
	var drift *recipes.DriftError
	if err == nil || !strings.Contains(err.Error(), "build lock:") || !strings.Contains(err.Error(), "sysctls or modules") {
		t.Fatalf("drifted recipe: %v", err)
	}
	if !errors.As(err, &drift) {
		t.Errorf("not a DriftError: %T", err)
	}
	events, err := runFront(t, recipe, true)
	if err == nil || !strings.Contains(err.Error(), "build fetch:") {
		t.Fatalf("with drift allowed, want a fetch failure (no sources here): %v", err)
	}
	warned := false
	for _, e := range events {
		warned = warned || (e.Kind == EventLog && e.Stage == "lock" && strings.Contains(e.Message, "does not match"))
	}
	if !warned {
		t.Error("building from a drifted lock without a warning")
	}
}

func TestStageNames(t *testing.T) {
	want := "load,lint,lock,fetch,render,prepare,rootfs,merge,root-ext4,esp,outputs,publish"
	if got := strings.Join(StageNames(), ","); got != want {
		t.Errorf("stages %s, want %s", got, want)
	}
}

// A url artifact taken out of an archive (cri-dockerd out of upstream's tarball): the lock
// pins the archive, the layer gets the file fetch took out, and writes it checked.
func TestPinMembers(t *testing.T) {
	dir := t.TempDir()
	binary := []byte("#!/bin/sh\necho cri-dockerd 0.3.16\n")
	path := filepath.Join(dir, "cri-dockerd")
	os.WriteFile(path, binary, 0o755)
	tarball := strings.Repeat("ab", 32)
	l := &recipes.Lock{Artifacts: []recipes.LockedArtifact{
		{Name: "cri-dockerd", Source: recipes.SourceURL, Member: "cri-dockerd/cri-dockerd", SHA256: tarball, Size: 9999},
		{Name: "kubelet", Source: recipes.SourceGoMod, SHA256: strings.Repeat("cd", 32), Size: 5},
	}}
	layer := &roles.Layer{Files: []roles.File{
		{Path: "/usr/bin/cri-dockerd", Type: roles.TypeFile, Mode: 0o755, Artifact: "cri-dockerd", SHA256: tarball, Size: 9999},
		{Path: "/usr/bin/kubelet", Type: roles.TypeFile, Mode: 0o755, Artifact: "kubelet", SHA256: strings.Repeat("cd", 32), Size: 5},
	}}
	paths := map[string]string{"cri-dockerd": path, "kubelet": filepath.Join(dir, "kubelet")}
	if err := pinMembers(context.Background(), layer, l, paths); err != nil {
		t.Fatal(err)
	}
	f, _ := layer.File("/usr/bin/cri-dockerd")
	if want := sha256Hex(binary); f.SHA256 != want || f.Size != int64(len(binary)) {
		t.Errorf("cri-dockerd in the layer: %s %d, want %s %d", f.SHA256, f.Size, want, len(binary))
	}
	if k, _ := layer.File("/usr/bin/kubelet"); k.SHA256 != strings.Repeat("cd", 32) {
		t.Errorf("kubelet changed: %+v", k)
	}
	// The layer writes the binary, checked against what pinMembers set.
	only := &roles.Layer{Files: layer.Files[:1]}
	var b bytes.Buffer
	if err := only.WriteTar(&b, openFrom(paths), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b.Bytes(), binary) {
		t.Error("the layer does not hold the binary")
	}
	// A member that was not fetched is an error naming it.
	delete(paths, "cri-dockerd")
	if err := pinMembers(context.Background(), layer, l, paths); err == nil || !strings.Contains(err.Error(), "cri-dockerd was not fetched") {
		t.Errorf("unfetched member: %v", err)
	}
}
