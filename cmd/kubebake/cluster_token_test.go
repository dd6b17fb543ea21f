package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestClusterToken: "kubebake cluster token" creates a Secret bound to the node, expiring after
// the TTL, through kubectl's stdin (never argv), and writes the node's user-data carrying that
// token and name. A kubectl that fails stops it before any user-data is written.
func TestClusterToken(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "demo.bundle.yaml")
	if _, _, err := kb(t, "cluster", "init", "demo", "--key-type", "ecdsa-p256", "--force=false", "--out", bundle, "-o", "text"); err != nil {
		t.Fatal(err)
	}
	// A kubectl that keeps what it was given.
	kubectl := filepath.Join(dir, "kubectl")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >" + filepath.Join(dir, "argv") + "\ncat >" + filepath.Join(dir, "stdin") + "\n"
	if err := os.WriteFile(kubectl, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ud := filepath.Join(dir, "m7.yaml")
	start := time.Now()
	if _, logs, err := kb(t, "cluster", "token", "demo-minion-7", "--bundle", bundle, "--kubeconfig", "/admin.conf", "--kubectl", kubectl,
		"--ttl", "2h", "--format", "shell", "--out", ud, "--role", "minion", "-o", "text"); err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	argv, _ := os.ReadFile(filepath.Join(dir, "argv"))
	if got := strings.Fields(string(argv)); strings.Join(got, " ") != "--kubeconfig /admin.conf apply -f -" {
		t.Errorf("kubectl argv %q", got)
	}
	stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
	var secret struct {
		Metadata struct {
			Name      string
			Namespace string
			Labels    map[string]string
		}
		Type       string
		StringData map[string]string `yaml:"stringData"`
	}
	if err := yaml.Unmarshal(stdin, &secret); err != nil {
		t.Fatalf("%v\n%s", err, stdin)
	}
	id, sec := secret.StringData["token-id"], secret.StringData["token-secret"]
	exp, err := time.Parse(time.RFC3339, secret.StringData["expiration"])
	if err != nil || exp.Before(start.Add(2*time.Hour-time.Second)) || exp.After(time.Now().Add(2*time.Hour+time.Second)) {
		t.Errorf("expiration %q: want two hours from now (%v)", secret.StringData["expiration"], err)
	}
	if secret.Metadata.Name != "bootstrap-token-"+id || secret.Metadata.Namespace != "kube-system" || secret.Type != "bootstrap.kubernetes.io/token" ||
		secret.Metadata.Labels["kubebake.dev/node-name"] != "demo-minion-7" || secret.StringData["auth-extra-groups"] != "system:bootstrappers:kubebake:nodes" ||
		!regexp.MustCompile(`^[a-z0-9]{6}$`).MatchString(id) || !regexp.MustCompile(`^[a-z0-9]{16}$`).MatchString(sec) {
		t.Errorf("token secret:\n%s", stdin)
	}
	data, err := os.ReadFile(ud)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"KUBEBAKE_BOOTSTRAP_TOKEN=" + id + "." + sec, "demo-minion-7", "/etc/sysconfig/kubernetes-minion"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("user-data lacks %q", want)
		}
	}
	if st, _ := os.Stat(ud); st.Mode().Perm() != 0o600 {
		t.Errorf("user-data mode %v", st.Mode().Perm())
	}

	// kubectl fails: no user-data.
	failed := filepath.Join(dir, "failed.yaml")
	_, _, err = kb(t, "cluster", "token", "demo-minion-8", "--bundle", bundle, "--kubeconfig", "/admin.conf", "--kubectl", "false",
		"--ttl", "2h", "--format", "shell", "--out", failed, "--role", "minion", "-o", "text")
	if err == nil || !strings.Contains(err.Error(), "creating the join token") {
		t.Errorf("a failed kubectl: %v", err)
	}
	if _, err := os.Stat(failed); err == nil {
		t.Errorf("user-data written though the token was not created")
	}
	// The master joins with no token.
	if _, _, err := kb(t, "cluster", "token", "demo-master", "--bundle", bundle, "--kubeconfig", "/admin.conf", "--kubectl", kubectl,
		"--ttl", "2h", "--format", "shell", "--out", "", "--role", "master", "-o", "text"); err == nil || !strings.Contains(err.Error(), "--role master") {
		t.Errorf("--role master: %v", err)
	}
}
