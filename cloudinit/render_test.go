package cloudinit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ignv34 "github.com/coreos/ignition/v2/config/v3_4"
	"gopkg.in/yaml.v3"

	"github.com/kubebake/kubebake/cloudinit/ignition"
	"github.com/kubebake/kubebake/internal/run"
	"github.com/kubebake/kubebake/internal/testenv"
	"github.com/kubebake/kubebake/recipes"
)

const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ3BkTj1yR1Auho8J4BcJxb98ZjB/Ilunr/p1ZN1SzzG test@kubebake"

// needTool returns the path of a tool; a missing tool skips a -short run (fails it in CI, see
// testenv) and fails a full one.
func needTool(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		return testenv.NeedTool(t, name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run \"make deps\"", name)
	}
	return p
}

func TestNodeFilesPerRole(t *testing.T) {
	b := testBundle(t)
	master, err := NodeFiles(b, RoleMaster, Options{AdvertiseAddress: "10.0.2.15"})
	if err != nil {
		t.Fatal(err)
	}
	minion, err := NodeFiles(b, RoleMinion, Options{})
	if err != nil {
		t.Fatal(err)
	}
	paths := func(fs []File) (out []string) {
		for _, f := range fs {
			out = append(out, f.Path+" "+f.Mode.String())
		}
		return out
	}
	wantMaster := []string{"/etc/kubebake/cluster.env -rw-------", "/etc/kubernetes/pki/ca.crt -rw-r--r--", "/etc/kubernetes/pki/ca.key -rw-------", "/etc/sysconfig/kubernetes-master -rw-r--r--"}
	wantMinion := []string{"/etc/kubebake/cluster.env -rw-------", "/etc/sysconfig/kubernetes-minion -rw-r--r--"}
	if got := paths(master); !slices.Equal(got, wantMaster) {
		t.Errorf("master files %q, want %q", got, wantMaster)
	}
	if got := paths(minion); !slices.Equal(got, wantMinion) {
		t.Errorf("minion files %q, want %q", got, wantMinion)
	}
	env := string(master[0].Content)
	for _, kv := range []string{
		"KUBEBAKE_CLUSTER_NAME=demo\n", "KUBEBAKE_MASTER_ENDPOINT=" + b.MasterEndpoint + "\n",
		"KUBEBAKE_BOOTSTRAP_TOKEN=" + b.BootstrapToken + "\n", "KUBEBAKE_CA_CERT_HASH=" + b.CACertHash + "\n",
		"KUBEBAKE_ADVERTISE_ADDRESS=10.0.2.15\n",
	} {
		if !strings.Contains(env, kv) {
			t.Errorf("master cluster.env lacks %q:\n%s", kv, env)
		}
	}
	if strings.Contains(string(minion[0].Content), "ADVERTISE") {
		t.Error("minion env has an advertise address")
	}
	if _, err := NodeFiles(b, RoleMinion, Options{AdvertiseAddress: "10.0.2.15"}); err == nil {
		t.Error("advertise address accepted for a minion")
	}
	// A host name rides in every format: /etc/hostname before the marker.
	named, err := NodeFiles(b, RoleMinion, Options{Hostname: "demo-minion-1"})
	if err != nil {
		t.Fatal(err)
	}
	wantNamed := []string{"/etc/kubebake/cluster.env -rw-------", "/etc/hostname -rw-r--r--", "/etc/sysconfig/kubernetes-minion -rw-r--r--"}
	if got := paths(named); !slices.Equal(got, wantNamed) || string(named[1].Content) != "demo-minion-1\n" {
		t.Errorf("named minion files %q (%q), want %q", got, named[1].Content, wantNamed)
	}
	cc, err := RenderCloudConfig(b, RoleMinion, Options{Hostname: "demo-minion-1"})
	if err != nil || !strings.Contains(string(cc), "\nhostname: demo-minion-1\n") {
		t.Errorf("cloud-config does not set the host name (%v):\n%s", err, cc)
	}
	for _, bad := range []string{"Upper", "under_score", "-lead", strings.Repeat("a", 64), "a b"} {
		if _, err := NodeFiles(b, RoleMinion, Options{Hostname: bad}); err == nil || !strings.Contains(err.Error(), "node name") {
			t.Errorf("host name %q: %v", bad, err)
		}
	}
}

func TestUnknownRole(t *testing.T) {
	b := testBundle(t)
	for _, f := range Formats {
		_, err := Render(b, "worker", f, Options{})
		if err == nil || !strings.Contains(err.Error(), `unknown role "worker": known roles are master, minion`) {
			t.Errorf("%s: %v", f, err)
		}
	}
	if err := ValidateRole("", nil); err == nil || !strings.Contains(err.Error(), "master, minion") {
		t.Errorf("empty role: %v", err)
	}
	// A recipe's custom role becomes known.
	r := &recipes.Recipe{Roles: []recipes.Role{{Name: "master"}, {Name: "minion"}, {Name: "ingress"}}}
	roles := RolesFromRecipe(r)
	if !slices.Equal(roles, []string{"ingress", "master", "minion"}) {
		t.Errorf("roles %v", roles)
	}
	files, err := NodeFiles(b, "ingress", Options{Roles: roles})
	if err != nil {
		t.Fatal(err)
	}
	if files[len(files)-1].Path != "/etc/sysconfig/kubernetes-ingress" {
		t.Errorf("custom role files %v", files)
	}
	for _, f := range files {
		if f.Path == CAKeyPath {
			t.Error("a custom role got the CA key")
		}
	}
	if _, err := Render(b, "Bad_Role", FormatShell, Options{Roles: []string{"Bad_Role"}}); err == nil {
		t.Error("an invalid role name was accepted")
	}
	if _, err := ParseFormat("yaml"); err == nil || !strings.Contains(err.Error(), "cloud-config") {
		t.Errorf("format yaml: %v", err)
	}
}

// TestRoleNameGrammar: user-data checks role names with recipes.CheckRoleName, the grammar
// lint and the node layer use: a role no recipe can declare (longer than
// recipes.MaxRoleNameLen, though a DNS label) gets no user-data in any format.
func TestRoleNameGrammar(t *testing.T) {
	b := testBundle(t)
	ok := strings.Repeat("r", recipes.MaxRoleNameLen)
	for _, role := range []string{strings.Repeat("r", recipes.MaxRoleNameLen+1), strings.Repeat("r", 63)} {
		if recipes.CheckRoleName(role) == nil {
			t.Fatalf("recipes.CheckRoleName accepts %q", role)
		}
		for _, f := range Formats {
			if _, err := Render(b, role, f, Options{Roles: []string{role, ok}}); err == nil || !strings.Contains(err.Error(), "is not a role name") {
				t.Errorf("%s, role %q: %v", f, role, err)
			}
		}
	}
	for _, f := range Formats {
		if _, err := Render(b, ok, f, Options{Roles: []string{ok}}); err != nil {
			t.Errorf("%s, role of %d characters: %v", f, len(ok), err)
		}
	}
}

func TestMinionNeverGetsTheCAKey(t *testing.T) {
	b := testBundle(t)
	for _, f := range Formats {
		data, err := Render(b, RoleMinion, f, Options{SSHAuthorizedKeys: []string{testSSHKey}})
		if err != nil {
			t.Fatal(f, err)
		}
		if strings.Contains(string(data), keyBody(b.CAKey)) || strings.Contains(string(data), "PRIVATE KEY") || strings.Contains(string(data), "ca.key") {
			t.Errorf("%s minion user-data carries the CA key", f)
		}
		// The Ignition form is URL-encoded or gzipped: look at what it writes instead.
		if f == FormatIgnition {
			root := applyIgnition(t, data)
			if _, err := os.Stat(filepath.Join(root, CAKeyPath)); err == nil {
				t.Error("Ignition minion config writes ca.key")
			}
		}
	}
}

func TestCloudConfigPassesCloudInitSchema(t *testing.T) {
	cloudInit := needTool(t, "cloud-init")
	b := testBundle(t)
	cases := map[string]struct {
		role string
		opts Options
	}{
		"master":              {RoleMaster, Options{AdvertiseAddress: "10.0.2.15"}},
		"minion":              {RoleMinion, Options{}},
		"master-root-key":     {RoleMaster, Options{SSHAuthorizedKeys: []string{testSSHKey}}},
		"minion-user-key":     {RoleMinion, Options{SSHAuthorizedKeys: []string{testSSHKey}, SSHUser: "kube"}},
		"custom-role-has-key": {"ingress", Options{Roles: []string{"ingress"}, SSHAuthorizedKeys: []string{testSSHKey}}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			data, err := RenderCloudConfig(b, c.role, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, []byte("#cloud-config\n")) {
				t.Fatalf("no #cloud-config header:\n%s", data)
			}
			p := filepath.Join(t.TempDir(), "user-data")
			os.WriteFile(p, data, 0o600)
			out, err := run.Command(cloudInit, "schema", "--config-file", p).Output(context.Background())
			if err != nil {
				t.Fatalf("cloud-init schema: %v\n%s", err, data)
			}
			if !strings.Contains(string(out), "Valid cloud-config") {
				t.Errorf("cloud-init schema said %q", out)
			}
			// The files cloud-init writes are NodeFiles, byte for byte.
			var cc struct {
				WriteFiles  []struct{ Path, Content, Owner, Permissions string } `yaml:"write_files"`
				SSH         []string                                             `yaml:"ssh_authorized_keys"`
				DisableRoot *bool                                                `yaml:"disable_root"`
				Users       []any                                                `yaml:"users"`
			}
			if err := yaml.Unmarshal(data, &cc); err != nil {
				t.Fatal(err)
			}
			files, _ := NodeFiles(b, c.role, c.opts)
			if len(cc.WriteFiles) != len(files) {
				t.Fatalf("write_files has %d entries, want %d", len(cc.WriteFiles), len(files))
			}
			for i, f := range files {
				w := cc.WriteFiles[i]
				perm := fmt.Sprintf("%04o", f.Mode.Perm())
				if w.Path != f.Path || w.Content != string(f.Content) || w.Permissions != perm || w.Owner != "root:root" {
					t.Errorf("write_files[%d] = %s %s, want %s %s", i, w.Path, w.Permissions, f.Path, perm)
				}
			}
			switch {
			case len(c.opts.SSHAuthorizedKeys) == 0:
				if cc.SSH != nil || cc.Users != nil || cc.DisableRoot != nil {
					t.Error("SSH settings without --ssh-key")
				}
			case c.opts.SSHUser == "":
				if !slices.Equal(cc.SSH, c.opts.SSHAuthorizedKeys) || cc.DisableRoot == nil || *cc.DisableRoot {
					t.Errorf("root keys: %v disable_root %v", cc.SSH, cc.DisableRoot)
				}
			default:
				if len(cc.Users) != 2 || !strings.Contains(string(data), "name: kube") {
					t.Errorf("users: %v", cc.Users)
				}
			}
		})
	}
	// And the real schema check does reject a broken document, so the test means something.
	p := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(p, []byte("#cloud-config\nwrite_files:\n  - path: /x\n    permissions: 0600\n"), 0o600)
	if err := run.Command(cloudInit, "schema", "--config-file", p).Run(context.Background()); err == nil {
		t.Error("cloud-init schema accepted an integer permissions")
	}
}

func TestShellRunsInAChroot(t *testing.T) {
	b := testBundle(t)
	data, err := RenderShell(b, RoleMaster, Options{SSHAuthorizedKeys: []string{testSSHKey}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("#!/bin/sh\n")) || !bytes.Contains(data, []byte("touch /etc/sysconfig/kubernetes-master\n")) {
		t.Fatalf("not the seed document's style:\n%s", data)
	}
	if err := exec.Command("sh", "-n", "-c", string(data)).Run(); err != nil {
		t.Fatalf("sh -n: %v", err)
	}
	testenv.NeedRoot(t) // running the script needs chroot
	bb := needTool(t, "busybox")
	root := t.TempDir()
	for _, d := range []string{"bin", "etc", "root", "tmp"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	bin, _ := os.ReadFile(bb)
	os.WriteFile(filepath.Join(root, "bin/busybox"), bin, 0o755)
	if out, err := exec.Command("chroot", root, "/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
		testenv.Missing(t, "chroot", fmt.Sprintf("run as root where chroot works (%v %s)", err, strings.TrimSpace(string(out))))
	}
	os.WriteFile(filepath.Join(root, "user-data"), data, 0o700)
	cmd := exec.Command("chroot", root, "/bin/sh", "/user-data")
	cmd.Env = []string{"PATH=/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the script failed: %v\n%s", err, out)
	}
	files, _ := NodeFiles(b, RoleMaster, Options{})
	for _, f := range files {
		checkFile(t, root, f)
	}
	for _, d := range []string{"/etc/kubebake", "/etc/kubernetes/pki", "/etc/sysconfig"} {
		if st, err := os.Stat(filepath.Join(root, d)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("folder %s: %v %v", d, st.Mode(), err)
		}
	}
	checkFile(t, root, File{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Content: []byte(testSSHKey + "\n")})
}

// checkFile compares a file under root with what NodeFiles says.
func checkFile(t *testing.T, root string, f File) {
	t.Helper()
	p := filepath.Join(root, f.Path)
	st, err := os.Stat(p)
	if err != nil {
		t.Errorf("%s: %v", f.Path, err)
		return
	}
	if st.Mode().Perm() != f.Mode.Perm() {
		t.Errorf("%s: mode %04o, want %04o", f.Path, st.Mode().Perm(), f.Mode.Perm())
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, f.Content) {
		t.Errorf("%s: content differs:\n%s\nwant:\n%s", f.Path, got, f.Content)
	}
}

// applyIgnition applies an Ignition config with kubebake-ignition's library to a fresh root.
func applyIgnition(t *testing.T, cfg []byte) string {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "root"), 0o700)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	p := filepath.Join(t.TempDir(), "config.ign")
	os.WriteFile(p, cfg, 0o600)
	res, err := ignition.Run(context.Background(), ignition.Options{Root: root, Sources: []ignition.Source{ignition.FileSource{Path: p}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "applied" {
		t.Fatalf("status %s", res.Status)
	}
	return root
}

func TestIgnitionValidAndAppliesNodeFiles(t *testing.T) {
	b := testBundle(t)
	// "edge" is a recipe's custom role: its marker arrives through Ignition as through cloud-init.
	for _, role := range []string{RoleMaster, RoleMinion, "edge"} {
		t.Run(role, func(t *testing.T) {
			opts := Options{SSHAuthorizedKeys: []string{testSSHKey}, Roles: []string{"edge", RoleMaster, RoleMinion}}
			ign, err := RenderIgnition(b, role, opts)
			if err != nil {
				t.Fatal(err)
			}
			// ignition/v2 at the exact spec: no errors, no warnings.
			cfg, rpt, err := ignv34.Parse(ign)
			if err != nil || len(rpt.Entries) > 0 {
				t.Fatalf("ignition/v2 v3_4: %v %s", err, rpt.String())
			}
			if cfg.Ignition.Version != IgnitionVersion {
				t.Errorf("version %s", cfg.Ignition.Version)
			}
			if err := ValidateIgnition(ign); err != nil {
				t.Fatal(err)
			}
			// The applier writes exactly NodeFiles, and the key for root.
			root := applyIgnition(t, ign)
			files, _ := NodeFiles(b, role, opts)
			for _, f := range files {
				checkFile(t, root, f)
			}
			checkFile(t, root, File{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Content: []byte(testSSHKey + "\n")})
			// Deterministic.
			again, _ := RenderIgnition(b, role, opts)
			if !bytes.Equal(again, ign) {
				t.Error("RenderIgnition is not deterministic")
			}
		})
	}
}

func TestButaneRoundTrips(t *testing.T) {
	b := testBundle(t)
	opts := Options{SSHAuthorizedKeys: []string{testSSHKey}}
	by, err := RenderButane(b, RoleMaster, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Butane YAML reads back to the same files.
	var doc struct {
		Variant, Version string
		Storage          struct {
			Files []struct {
				Path      string
				Mode      int
				Overwrite bool
				Contents  struct{ Inline string }
			}
		}
		Passwd struct {
			Users []struct {
				Name string
				Keys []string `yaml:"ssh_authorized_keys"`
			}
		}
	}
	if err := yaml.Unmarshal(by, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Variant != ButaneVariant || doc.Version != ButaneVersion {
		t.Errorf("variant %s %s", doc.Variant, doc.Version)
	}
	files, _ := NodeFiles(b, RoleMaster, opts)
	if len(doc.Storage.Files) != len(files) {
		t.Fatalf("%d files, want %d", len(doc.Storage.Files), len(files))
	}
	for i, f := range files {
		g := doc.Storage.Files[i]
		if g.Path != f.Path || g.Mode != int(f.Mode.Perm()) || g.Contents.Inline != string(f.Content) || !g.Overwrite {
			t.Errorf("file %d: %s %o, want %s %o", i, g.Path, g.Mode, f.Path, f.Mode.Perm())
		}
	}
	if len(doc.Passwd.Users) != 1 || doc.Passwd.Users[0].Name != "root" || !slices.Equal(doc.Passwd.Users[0].Keys, opts.SSHAuthorizedKeys) {
		t.Errorf("users %+v", doc.Passwd.Users)
	}
	// Butane -> Ignition through the library gives what RenderIgnition gives.
	ign, err := ButaneToIgnition(by)
	if err != nil {
		t.Fatal(err)
	}
	direct, _ := RenderIgnition(b, RoleMaster, opts)
	if !bytes.Equal(ign, direct) {
		t.Error("translating RenderButane's output differs from RenderIgnition")
	}
	var generic map[string]any
	if err := json.Unmarshal(ign, &generic); err != nil {
		t.Fatal(err)
	}
	// A warning from Butane is an error for our own configs.
	if _, err := ButaneToIgnition([]byte("variant: flatcar\nversion: 1.1.0\nstorage:\n  files:\n    - path: /x\n      mode: 0644\n      contents:\n        inline: a\n        local: b\n")); err == nil {
		t.Error("butane accepted inline+local")
	}
	if _, err := ButaneToIgnition([]byte("variant: nope\nversion: 1.1.0\n")); err == nil {
		t.Error("unknown variant accepted")
	}
}

func TestValidateIgnitionRefusesWhatTheApplierCannotDo(t *testing.T) {
	for name, cfg := range map[string]string{
		"remote": `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/x","contents":{"source":"https://example.com/x"}}]}}`,
		"disks":  `{"ignition":{"version":"3.4.0"},"storage":{"disks":[{"device":"/dev/vda","wipeTable":true}]}}`,
		"spec35": `{"ignition":{"version":"3.5.0"}}`,
	} {
		if err := ValidateIgnition([]byte(cfg)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
