package manifest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// testdata holds a real build's manifest.json and the image's copy of it, each trimmed to a
// few entries per list (by re-encoding with the same layout). Parsing and marshalling them
// again must give the same bytes: the in-image copy is part of a reproducible image.
func TestRealManifestsRoundTrip(t *testing.T) {
	for _, name := range []string{"debian-12.manifest.json", "debian-12.in-image.json"} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", name)
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Read(file)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, data) {
				t.Errorf("parse and marshal changed the bytes:\n%s", again)
			}
			if m.APIVersion != APIVersion || m.Kind != Kind || m.Recipe == nil || m.Recipe.Name != "debian-12" ||
				len(m.LockHash) != 64 || len(m.Files) == 0 || len(m.Units) == 0 ||
				len(m.Packages) == 0 || len(m.Artifacts) == 0 || m.Image.RootPartUUID == "" {
				t.Errorf("decoded %+v", m)
			}
			inImage := strings.Contains(name, "in-image")
			if inImage != (m.Outputs == nil && m.Build == nil) {
				t.Errorf("outputs %v, build %v", m.Outputs, m.Build)
			}
		})
	}
}

func sample() *Manifest {
	return &Manifest{
		APIVersion: APIVersion, Kind: Kind,
		Recipe:   &recipes.Recipe{APIVersion: recipes.APIVersion, Kind: recipes.KindRecipe, Name: "r", Sysctls: map[string]string{"a.b": "1"}},
		LockHash: "sha256:ab", SourceDateEpoch: 1767225600,
		Image:     ImageInfo{Size: 4 << 30, Kernel: "6.1.0-1-cloud-amd64", RootPartUUID: "u"},
		Artifacts: []recipes.LockedArtifact{{Name: "kubelet", Kind: "binary", Source: "gomod", Version: "v1.35.4", SHA256: "k1", Size: 3}},
		Files: []File{{Path: "/usr/bin/kubelet", Type: "file", Mode: 0o755, Artifact: "kubelet", SHA256: "k1", Size: 3},
			{Path: "/usr/local/bin/k", Type: "symlink", Mode: 0o777, Target: "/usr/bin/kubelet"}},
		Units:    []Unit{{Name: "kubelet.service", Roles: []string{"minion"}, Enabled: true, Listed: true}, {Name: "containerd.service", Foreign: true}},
		Packages: []DebPackage{{Name: "libc6", Version: "2.36-9", Architecture: "amd64", Source: "glibc"}},
		Outputs:  []OutputFile{{Name: "r.raw", Format: "raw", Size: 4 << 30, SHA256: "cafe"}},
		Build:    &BuildInfo{Kubebake: "v0", Seconds: 1.5, Stages: []StageTime{{Name: "check", Seconds: 0.25}}},
	}
}

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, Name)
	want := sample()
	if err := Write(file, want); err != nil {
		t.Fatal(err)
	}
	got, err := Read(file)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back\n%+v\nwant\n%+v", got, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("Write left %d files", len(entries))
	}
	data, _ := os.ReadFile(file)
	if !strings.HasPrefix(string(data), "{\n  \"apiVersion\": \""+APIVersion+"\",\n  \"kind\": \""+Kind+"\",\n") || !strings.HasSuffix(string(data), "}\n") {
		t.Errorf("layout:\n%s", data)
	}
	// No HTML escaping: the cmdline and recipe text are written as they are.
	m := sample()
	m.Image.Cmdline = "a<b&c>d"
	if data, _ := Marshal(m); !strings.Contains(string(data), `"a<b&c>d"`) {
		t.Errorf("escaped:\n%s", data)
	}
}

func TestMarshalRefusesUnversioned(t *testing.T) {
	m := sample()
	m.APIVersion = ""
	if _, err := Marshal(m); err == nil {
		t.Error("marshalled a manifest without apiVersion")
	}
	m = sample()
	m.Kind = "Lock"
	if err := Write(filepath.Join(t.TempDir(), Name), m); err == nil {
		t.Error("wrote a manifest of kind Lock")
	}
}

// refusal parses doc as file and returns the error, which must be an *Error naming file.
func refusal(t *testing.T, doc string) (*Error, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "out", Name)
	os.MkdirAll(filepath.Dir(file), 0o755)
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Read(file)
	if err == nil {
		t.Fatalf("accepted %s: %+v", doc, m)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%T %v, want *Error", err, err)
	}
	if !strings.HasPrefix(err.Error(), file+": ") || e.File != file {
		t.Errorf("the error does not start with the file: %v", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("more than one line: %q", err)
	}
	return e, err.Error()
}

func wantAll(t *testing.T, msg string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("%q lacks %q", msg, p)
		}
	}
}

func TestRefusesUnknownAPIVersion(t *testing.T) {
	data, _ := Marshal(sample())
	// A later version may change the shape: the version is refused, not the shape.
	doc := strings.Replace(string(data), `"apiVersion": "`+APIVersion+`"`, `"apiVersion": "kubebake.dev/v1alpha2"`, 1)
	doc = strings.Replace(doc, `"sourceDateEpoch": 1767225600`, `"sourceDateEpoch": "2026-01-01"`, 1)
	if !strings.Contains(doc, "2026-01-01") || !strings.Contains(doc, "v1alpha2") {
		t.Fatalf("the test did not change the document:\n%s", doc)
	}
	e, msg := refusal(t, doc)
	if e.Field != "apiVersion" || e.Found != "kubebake.dev/v1alpha2" {
		t.Errorf("%+v", e)
	}
	wantAll(t, msg, `apiVersion "kubebake.dev/v1alpha2"`, "reads only "+APIVersion,
		"use a kubebake that reads kubebake.dev/v1alpha2", "rebuild the image with this kubebake")
}

func TestRefusesWrongKind(t *testing.T) {
	for _, kind := range []string{"Lock", "Recipe", "imagemanifest"} {
		data, _ := Marshal(sample())
		doc := strings.Replace(string(data), `"kind": "`+Kind+`"`, `"kind": "`+kind+`"`, 1)
		e, msg := refusal(t, doc)
		if e.Field != "kind" || e.Found != kind {
			t.Errorf("%+v", e)
		}
		wantAll(t, msg, `kind "`+kind+`"`, "want "+Kind, "give the manifest.json a kubebake build wrote")
	}
}

func TestRefusesMissingHeader(t *testing.T) {
	data, _ := Marshal(sample())
	noVersion := strings.Replace(string(data), `"apiVersion": "`+APIVersion+`",`, ``, 1)
	for _, doc := range []string{noVersion, `{}`, `null`, `{"apiVersion": "", "kind": "ImageManifest"}`} {
		e, msg := refusal(t, doc)
		if e.Field != "apiVersion" || e.Found != "" {
			t.Errorf("%s: %+v", doc, e)
		}
		wantAll(t, msg, "apiVersion: missing", "this kubebake reads "+APIVersion, "rebuild the image with this kubebake")
	}
	e, msg := refusal(t, `{"apiVersion": "`+APIVersion+`", "files": []}`)
	if e.Field != "kind" {
		t.Errorf("%+v", e)
	}
	wantAll(t, msg, "kind: missing", "want "+Kind)
}

func TestRefusesOtherDocuments(t *testing.T) {
	for _, doc := range []string{``, `[1]`, `{"apiVersion": 1}`, "apiVersion: kubebake.dev/v1alpha1\nkind: Recipe\n"} {
		_, msg := refusal(t, doc)
		wantAll(t, msg, "not a kubebake image manifest", "give the manifest.json of a kubebake build")
	}
	// The right header over a wrong shape.
	_, msg := refusal(t, `{"apiVersion": "`+APIVersion+`", "kind": "`+Kind+`", "files": 3}`)
	wantAll(t, msg, "not a "+APIVersion+" "+Kind, "rebuild the image with this kubebake")
	if _, err := Read(filepath.Join(t.TempDir(), "none.json")); err == nil || !strings.Contains(err.Error(), "none.json") {
		t.Errorf("a missing file: %v", err)
	}
}
