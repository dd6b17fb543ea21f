package roles

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/recipes"
)

// hostileTemplateValue breaks hand-made quoting inside and outside here-documents.
const hostileTemplateValue = "x'y \"$(touch PWNED)\" `touch PWNED` $HOME ${HOME} \\ \\$ \\\\ *?[a] ~ ;|&& -e"

func hostileData() *templateData {
	v := hostileTemplateValue
	return &templateData{KubernetesVersion: "v1" + v, CRISocket: "unix://" + v, DNSDomain: "dom" + v, PodCIDR: "pod" + v, ServiceCIDR: "svc" + v}
}

// TestScriptTemplatesQuoteValues: every value a script template carries goes through the sh
// or heredoc template function; a bare {{.Field}} in a script would be spliced into shell.
func TestScriptTemplatesQuoteValues(t *testing.T) {
	action := regexp.MustCompile(`{{-?\s*([^}]*?)\s*-?}}`)
	allowed := regexp.MustCompile(`^(sh|heredoc) \.[A-Za-z]+$|^(end|else)$|^(if|range) `)
	err := fs.WalkDir(templateFS, "templates/scripts", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		src, _ := templateFS.ReadFile(p)
		for _, m := range action.FindAllStringSubmatch(string(src), -1) {
			if !allowed.MatchString(m[1]) {
				t.Errorf("%s: %s puts a value into the script unquoted: use {{sh ...}} or {{heredoc ...}}", p, m[0])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLibShHostileValues renders lib.sh with values no recipe passes today and runs it: the
// version variable and the kubeadm configuration (an unquoted here-document) hold each value
// exactly, and nothing in them runs.
func TestLibShHostileValues(t *testing.T) {
	d := hostileData()
	lib, err := d.execute("scripts/lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "lib.sh"), string(lib), 0o644)
	if out, err := exec.Command("sh", "-n", filepath.Join(dir, "lib.sh")).CombinedOutput(); err != nil {
		t.Fatalf("sh -n lib.sh: %v %s", err, out)
	}
	script := `. ./lib.sh
printf '%s' "$KUBEBAKE_K8S_VERSION" > version
ADVERTISE=10.0.0.1 NODE_NAME=n CLUSTER_NAME=c ENDPOINT=10.0.0.1:6443
write_kubeadm_config "$PWD/kubeadm.yaml"
`
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KUBEBAKE_PATH=" + os.Getenv("PATH"), "HOME=/home/nobody", "KUBEBAKE_RUN=" + dir, "KUBEBAKE_K8S_DIR=" + dir}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "version")); string(got) != d.KubernetesVersion {
		t.Errorf("KUBEBAKE_K8S_VERSION = %q, want %q", got, d.KubernetesVersion)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, "kubeadm.yaml"))
	for _, line := range []string{
		`criSocket: "` + d.CRISocket + `"`,
		`kubernetesVersion: "` + d.KubernetesVersion + `"`,
		"dnsDomain: " + d.DNSDomain,
		`podSubnet: "` + d.PodCIDR + `"`,
		`serviceSubnet: "` + d.ServiceCIDR + `"`,
	} {
		if !strings.Contains(string(cfg), "\n  "+line+"\n") && !strings.Contains(string(cfg), "\n"+line+"\n") {
			t.Errorf("kubeadm.yaml lacks %q:\n%s", line, cfg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "PWNED")); err == nil {
		t.Error("a value ran a command")
	}
}

func TestNodeEnvHostileValue(t *testing.T) {
	d := hostileData()
	out, err := d.execute("scripts/node-env")
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("sh", "-n", "-c", string(out)).Run(); err != nil {
		t.Errorf("sh -n node-env: %v", err)
	}
	if !strings.Contains(string(out), "printf '%s\\n' "+shell.Quote(d.ServiceCIDR)+" |") {
		t.Errorf("node-env does not quote the service range")
	}
}

// TestTemplateRefusesUnpassableValues: a line break inside a here-document, or a NUL byte
// anywhere, fails the render instead of producing a broken script.
func TestTemplateRefusesUnpassableValues(t *testing.T) {
	d := hostileData()
	d.CRISocket = "unix:///x\nCONFIG\ntouch PWNED"
	if _, err := d.execute("scripts/lib.sh"); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Errorf("a line break in a here-document value: %v", err)
	}
	d = hostileData()
	d.KubernetesVersion = "v1\x00"
	if _, err := d.execute("scripts/lib.sh"); !errors.Is(err, shell.ErrNUL) {
		t.Errorf("a NUL byte: %v", err)
	}
}

// TestReleaseFileSourcesBack: /etc/kubebake/release, sourced by sh, gives every value back,
// whatever it holds.
func TestReleaseFileSourcesBack(t *testing.T) {
	v := hostileTemplateValue + "\nnext line"
	r := &recipes.Recipe{Name: "recipe" + v}
	r.Etcd.Version = "~root"
	r.CNI.Version = ""
	r.Runtime.Packages = []string{"0ad", "containerd"}
	d := &templateData{KubernetesVersion: "v1.35.4", Runtime: recipes.RuntimeContainerd}
	data, err := releaseFile(r, nil, d)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", string(data)+`printf '%s\0' "$KUBEBAKE_RECIPE" "$ETCD_VERSION" "$CNI_VERSION" "$KUBERNETES_VERSION" "$_0AD_VERSION"`)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s\n%s", err, out, data)
	}
	want := []string{r.Name, "~root", "", "v1.35.4", ""}
	if got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("sourced values %q, want %q\n%s", got, want, data)
	}
	if !strings.Contains(string(data), "\nKUBERNETES_VERSION=v1.35.4\n") || !strings.Contains(string(data), "\nKUBEBAKE_INPUTS_DIGEST=\n") {
		t.Errorf("plain values changed form:\n%s", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "PWNED")); err == nil {
		t.Error("a value ran a command")
	}
	r.Name = "a\x00"
	if _, err := releaseFile(r, nil, d); !errors.Is(err, shell.ErrNUL) {
		t.Errorf("a NUL byte: %v", err)
	}
}
