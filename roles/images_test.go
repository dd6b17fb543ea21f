package roles

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

// fakeCtr stands in for ctr: an import records the name the archive gives its image (from
// $CTR_NAMES, "file ref" lines), ls -q lists what was imported.
const fakeCtr = `#!/bin/sh
state=$CTR_STATE
case "$*" in
"--namespace k8s.io images import "*)
	file=${5##*/}
	awk -v f="$file" '$1 == f {print $2}' "$CTR_NAMES" >> "$state/imported"
	echo "import $file" >> "$state/calls" ;;
"--namespace k8s.io images ls -q")
	echo ls >> "$state/calls"
	cat "$state/imported" 2>/dev/null ;;
*) echo "fake ctr: unexpected $*" >&2; exit 2 ;;
esac
`

// recipeWithImages is a containerd recipe with an archive image and a gomod image, and a
// lock that also bakes kubebake's pause image.
func recipeWithImages(t *testing.T) (*recipes.Recipe, *recipes.Lock) {
	r := goRecipe("go-containerd", "bookworm", recipes.RuntimeContainerd)
	r.Images = []recipes.ContainerImage{
		{Name: "hello", Archive: "images/hello.tar"},
		{Name: "agent", Version: "0.3", Source: &recipes.Source{Type: recipes.SourceGoMod, Module: "example.com/agent", Package: "./cmd/agent"}},
	}
	l := fakeLock(r)
	l.Artifacts = append(l.Artifacts, recipes.LockedArtifact{Name: "image/pause", Kind: recipes.KindImage, Source: "oci", Version: "v1.35.0",
		Package: "busybox", Ref: "kubebake.local/pause:1.35.0", Digest: "sha256:" + strings.Repeat("12", 32), SHA256: strings.Repeat("34", 32), Size: 1000})
	return r, l
}

// The layer carries every image archive of the lock, the recipe's own among kubebake's, and
// kubebake-import-images imports each and checks it is there under the lock's name.
func TestRecipeImagesInLayer(t *testing.T) {
	r, l := recipeWithImages(t)
	layer := mustRender(t, r, l)
	locked := map[string]recipes.LockedArtifact{}
	for _, a := range l.Artifacts {
		locked[a.Name] = a
	}
	for _, n := range []string{"agent", "hello", "pause"} {
		f, ok := layer.File(ImagesDir + "/" + n + ".tar")
		a := locked["image/"+n]
		if !ok || f.Artifact != "image/"+n || f.SHA256 != a.SHA256 || f.Size != a.Size || f.Mode != 0o644 {
			t.Errorf("%s.tar in the layer: %+v (%v), lock %+v", n, f, ok, a)
		}
	}
	script, ok := layer.File(ScriptDir + "/import-images")
	if !ok {
		t.Fatal("no import-images script")
	}
	want := "\nset -- agent.tar kubebake.local/agent:1.0 hello.tar kubebake.local/hello:1.0 pause.tar kubebake.local/pause:1.35.0\n"
	if !strings.Contains(string(script.Content), want) {
		t.Errorf("import list:\n%s\nwant:%s", script.Content, want)
	}

	// Run it against a fake ctr: every archive imported in order, then one listing; an archive
	// that names its image otherwise than the lock stops the unit, naming both.
	testenv.NeedTool(t, "awk")
	dir := t.TempDir()
	lib, _ := layer.File(ScriptDir + "/lib.sh")
	writeFile(t, filepath.Join(dir, "lib", "lib.sh"), string(lib.Content), 0o644)
	writeFile(t, filepath.Join(dir, "lib", "import-images"), string(script.Content), 0o755)
	writeFile(t, filepath.Join(dir, "bin", "ctr"), fakeCtr, 0o755)
	run := func(names string) (string, string, error) {
		state := t.TempDir()
		writeFile(t, filepath.Join(state, "names"), names, 0o644)
		path := filepath.Join(dir, "bin") + ":" + os.Getenv("PATH")
		cmd := exec.Command(filepath.Join(dir, "lib", "import-images"))
		cmd.Env = []string{"PATH=" + path, "KUBEBAKE_PATH=" + path, "CTR_STATE=" + state, "CTR_NAMES=" + filepath.Join(state, "names"), "KUBEBAKE_IMAGES_DIR=/usr/lib/kubebake/images"}
		out, err := cmd.CombinedOutput()
		calls, _ := os.ReadFile(filepath.Join(state, "calls"))
		return string(out), string(calls), err
	}
	out, calls, err := run("agent.tar kubebake.local/agent:1.0\nhello.tar kubebake.local/hello:1.0\npause.tar kubebake.local/pause:1.35.0\n")
	if err != nil || calls != "import agent.tar\nimport hello.tar\nimport pause.tar\nls\n" || !strings.Contains(out, "imported kubebake.local/hello:1.0 from /usr/lib/kubebake/images/hello.tar") {
		t.Errorf("import-images: %v\n%s\ncalls:\n%s", err, out, calls)
	}
	out, _, err = run("agent.tar kubebake.local/agent:1.0\nhello.tar docker.io/library/hello:1.0\npause.tar kubebake.local/pause:1.35.0\n")
	if err == nil || !strings.Contains(out, "containerd has no image kubebake.local/hello:1.0 after importing /usr/lib/kubebake/images/hello.tar") {
		t.Errorf("a misnamed archive passed: %v\n%s", err, out)
	}

	// A lock without one of the recipe's images cannot be rendered: the layer would lack it.
	l.Artifacts = slices.DeleteFunc(l.Artifacts, func(a recipes.LockedArtifact) bool { return a.Name == "image/agent" })
	if _, err := Render(r, l); err == nil || !strings.Contains(err.Error(), "images[1]: the lock has no image image/agent; run \"kubebake lock\"") {
		t.Errorf("render without image/agent: %v", err)
	}
}
