package verify

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/internal/testimage"
)

// defaultTestImage returns the path of the default image's output folder or file
// (testimage.Default: $KUBEBAKE_TEST_IMAGE, or `kubebake build debian-12` once per test
// binary). verify never imports the builder: the image is built by the command, as a user would.
func defaultTestImage(t *testing.T) string {
	t.Helper()
	requireQEMU(t)
	path, err := testimage.Default()
	if err != nil {
		t.Fatalf("building the default image: %v", err)
	}
	return path
}

// dockerTestImage returns the output folder of `kubebake build debian-12-docker` (the embedded
// recipe with docker beside the kubelet), built once per test binary like the default image.
func dockerTestImage(t *testing.T) string {
	t.Helper()
	requireQEMU(t)
	path, err := testimage.Embedded(dockerRecipe)
	if err != nil {
		t.Fatalf("building the docker image: %v", err)
	}
	return path
}

// dockerRecipe is the embedded recipe with the docker runtime.
const dockerRecipe = "debian-12-docker"

// customRole is the third role of the custom-role test image: a recipe's own name for nodes
// that join a master, with the minion's units.
const customRole = "edge"

// customImage is the custom-role test recipe's own image (images: [{name: hello, archive: ...}]).
const customImage = "hello"

// customRoleBase is the embedded recipe the custom-role test image extends: debian-13, so
// that the lone boots prove the second embedded recipe while the cluster test proves the
// default one.
const customRoleBase = "debian-13"

// customRoleRecipe writes customRoleBase's recipe with one more role, customRole, and one
// image of its own (customImage: an image archive beside the recipe, kubebake's busybox
// archive from the cache, so no network is needed), locked from customRoleBase's lock
// (nothing else moves), and returns its file. Its rootfs and binaries are customRoleBase's,
// so the builder's caches make its build quick. Its master proves customRoleBase's control
// plane; one boot of its customRole node proves the custom role and the import of a
// recipe's own image.
func customRoleRecipe(t *testing.T) string {
	t.Helper()
	file, err := writeCustomRoleRecipe()
	if err != nil {
		t.Fatalf("the custom-role recipe: %v", err)
	}
	return file
}

func writeCustomRoleRecipe() (string, error) {
	base := testimage.Dir()
	dir := filepath.Join(base, "recipe-"+customRole)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	recipe, err := os.ReadFile(filepath.Join(testimage.RepoRoot(), "recipes", customRoleBase+".yaml"))
	if err != nil {
		return "", err
	}
	text := string(recipe)
	if strings.Count(text, "\nname: "+customRoleBase+"\n") != 1 || strings.Count(text, "\nimage:") != 1 {
		return "", fmt.Errorf("recipes/%s.yaml no longer has the shape this test edits (one name, image after roles)", customRoleBase)
	}
	text = strings.Replace(text, "\nname: "+customRoleBase+"\n", "\nname: "+customRoleBase+"-"+customRole+"\n", 1)
	text = strings.Replace(text, "\nimage:", "\n  - name: "+customRole+"\n    units: [containerd.service, kubelet.service, kube-proxy.service, flanneld.service, kubebake-minion-join.service]\n\nimages:\n  - name: "+customImage+"\n    archive: images/"+customImage+".tar\n\nimage:", 1)
	file := filepath.Join(dir, customRoleBase+"-"+customRole+".yaml")
	lock, err := os.ReadFile(filepath.Join(testimage.RepoRoot(), "recipes", customRoleBase+".lock"))
	if err != nil {
		return "", err
	}
	// The archive: kubebake's own busybox image archive, which fetch puts in the cache.
	if err := testimage.Kubebake(30*time.Minute, "fetch", customRoleBase); err != nil {
		return "", err
	}
	var locked struct {
		Artifacts []struct{ Name, SHA256 string }
	}
	if err := json.Unmarshal(lock, &locked); err != nil {
		return "", fmt.Errorf("recipes/%s.lock: %w", customRoleBase, err)
	}
	busybox := ""
	for _, a := range locked.Artifacts {
		if a.Name == "image/busybox" {
			busybox = filepath.Join(artifacts.DefaultCacheDir(), "blobs", "sha256", a.SHA256)
		}
	}
	archive, err := os.ReadFile(busybox)
	if err != nil || busybox == "" {
		return "", fmt.Errorf("kubebake's busybox image archive from the cache (%q): %v", busybox, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "images", customImage+".tar"), archive, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(strings.TrimSuffix(file, ".yaml")+".lock", lock, 0o644); err != nil {
		return "", err
	}
	// Locking again renames the lock's recipe, keeps every entry (none moves) and pins the
	// recipe's own image.
	return file, testimage.Kubebake(10*time.Minute, "lock", file)
}
