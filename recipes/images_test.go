package recipes

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/kubebake/kubebake/artifacts/oci"
)

// writeImageArchive writes an OCI image archive holding n tiny images at dir/rel.
func writeImageArchive(t *testing.T, dir, rel string, n int) {
	t.Helper()
	var imgs []oci.NamedImage
	for i := range n {
		img, err := oci.Build(oci.Spec{Files: []oci.File{{Path: "/hello", Mode: 0o644, Open: oci.FromBytes([]byte{byte('a' + i)})}}, SourceDateEpoch: 1})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, oci.NamedImage{Ref: "registry.example.com/hello:" + string(rune('a'+i)), Image: img})
	}
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := oci.WriteArchive(p, imgs); err != nil {
		t.Fatal(err)
	}
}

// helloAndAgent are two images: an archive beside the recipe and a gomod main package.
const helloAndAgent = `images:
  - name: hello
    archive: images/hello.tar
  - name: agent
    version: "0.3"
    source: {type: gomod, module: example.com/agent, package: ./cmd/agent}
`

// imageRecipe writes the minimal recipe with images appended into a folder of its own that
// holds images/hello.tar, and loads it.
func imageRecipe(t *testing.T, images string) (*Recipe, string, error) {
	t.Helper()
	dir := t.TempDir()
	writeImageArchive(t, dir, "images/hello.tar", 1)
	src := minimal + images
	p := filepath.Join(dir, "r.yaml")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Load(p)
	return r, src, err
}

// The two kinds of image: an archive is an input as it is (its path, relative to the
// recipe), a gomod image's program is a binary input and the image is built from it.
func TestImagesInputs(t *testing.T) {
	r, _, err := imageRecipe(t, helloAndAgent)
	if err != nil {
		t.Fatal(err)
	}
	if fs := Lint(r); len(fs) != 0 {
		t.Fatalf("findings: %v", fs)
	}
	byName := map[string]Input{}
	for _, in := range r.Inputs() {
		byName[in.Name] = in
	}
	if got, want := byName["image/hello"], (Input{Name: "image/hello", Kind: KindImage, Source: Source{Type: SourceArchive}, Package: "images/hello.tar", Arch: "amd64"}); !reflect.DeepEqual(got, want) {
		t.Errorf("archive input %+v, want %+v", got, want)
	}
	if got, want := byName["image-bin/agent"], (Input{Name: "image-bin/agent", Kind: InputBinary, Source: Source{Type: SourceGoMod, Module: "example.com/agent"}, Version: "0.3", Package: "example.com/agent/cmd/agent", Arch: "amd64"}); !reflect.DeepEqual(got, want) {
		t.Errorf("gomod input %+v, want %+v", got, want)
	}
	var baked []string
	for _, b := range r.BakedImages() {
		baked = append(baked, b.Name+"<"+strings.Join(b.Inputs, ","))
	}
	if got := strings.Join(baked, " "); got != "image/busybox<busybox image/pause<busybox image/coredns<coredns image/agent<image-bin/agent" {
		t.Errorf("baked images %s", got)
	}
	plain, err := Parse("mini.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if plain.InputsDigest() == r.InputsDigest() {
		t.Error("adding images left the inputs digest as it was")
	}
	for _, c := range []struct{ module, pkg, want string }{
		{"example.com/agent", ".", "example.com/agent"},
		{"example.com/agent", "./cmd/agent", "example.com/agent/cmd/agent"},
		{"example.com/agent", "example.com/agent/cmd/x", "example.com/agent/cmd/x"},
	} {
		if got := GoMainPackage(c.module, c.pkg); got != c.want {
			t.Errorf("GoMainPackage(%s, %s) = %s", c.module, c.pkg, got)
		}
	}
}

// images: is decoded strictly like the rest: unknown fields, missing names and a source
// without its type are reported at the user's line:col, with the fix.
func TestImagesDecode(t *testing.T) {
	line := strings.Count(minimal, "\n") + 1
	for _, c := range []struct{ name, images, want string }{
		{"misspelt field", "images:\n  - name: hello\n    archve: images/hello.tar\n", `e.yaml:` + strconv.Itoa(line+2) + `:5: images[0].archve: unknown field; did you mean "archive"?`},
		{"no name", "images:\n  - archive: images/hello.tar\n", `e.yaml:` + strconv.Itoa(line+1) + `:5: images[0].name: missing required field; add name: my-agent under images[0]`},
		{"source without type", "images:\n  - name: agent\n    version: \"0.3\"\n    source: {module: example.com/agent, package: .}\n", `e.yaml:` + strconv.Itoa(line+3) + `:5: images[0].source.type: missing required field; add type: gomod under images[0].source`},
		{"not a list", "images: hello.tar\n", `e.yaml:` + strconv.Itoa(line) + `:9: images: want a list, got the string "hello.tar"; write [hello.tar] or one "- item" per line`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("e.yaml", []byte(minimal+c.images))
			if err == nil || err.Error() != c.want {
				t.Errorf("got  %v\nwant %s", err, c.want)
			}
		})
	}
}

// Each mistake in images: is one finding at the field, saying what to do.
func TestImagesLint(t *testing.T) {
	for _, c := range []struct {
		name, images string
		setup        func(t *testing.T, dir string)
		field, msg   string
		at           string // needle; ¦ marks the column
	}{
		{"name not a DNS label", "images:\n  - name: Hello_World\n    archive: images/hello.tar\n", nil,
			"images[0].name", `"Hello_World" is not a DNS label`, "name: ¦Hello_World"},
		{"name of a built-in image", "images:\n  - name: pause\n    archive: images/hello.tar\n", nil,
			"images[0].name", `"pause" is the name of an image kubebake bakes itself`, "name: ¦pause"},
		{"duplicate name", "images:\n  - name: hello\n    archive: images/hello.tar\n  - name: hello\n    archive: images/hello.tar\n", nil,
			"images[1].name", `duplicate image "hello" (also item 0)`, "  - name: hello\n    archive: images/hello.tar\n  - name: ¦hello"},
		{"both archive and source", "images:\n  - name: hello\n    archive: images/hello.tar\n    source: {type: gomod, module: example.com/x, package: .}\n", nil,
			"images[0].source", "give archive or source, not both", "source: ¦{"},
		{"neither", "images:\n  - name: hello\n", nil,
			"images[0]", "needs archive: (an image archive beside the recipe, e.g. images/hello.tar) or source:", "  - ¦name: hello"},
		{"archive missing", "images:\n  - name: hello\n    archive: images/gone.tar\n", nil,
			"images[0].archive", "images/gone.tar does not exist in", "archive: ¦images/gone"},
		{"archive absolute", "images:\n  - name: hello\n    archive: /srv/hello.tar\n", nil,
			"images[0].archive", "/srv/hello.tar is an absolute path: write it relative to the recipe's folder", "archive: ¦/srv"},
		{"archive outside the folder", "images:\n  - name: hello\n    archive: ../hello.tar\n", nil,
			"images[0].archive", "../hello.tar leaves the recipe's folder", "archive: ¦../hello"},
		{"archive symlinked outside", "images:\n  - name: hello\n    archive: images/link.tar\n", func(t *testing.T, dir string) {
			outside := t.TempDir()
			writeImageArchive(t, outside, "x.tar", 1)
			if err := os.Symlink(filepath.Join(outside, "x.tar"), filepath.Join(dir, "images", "link.tar")); err != nil {
				t.Fatal(err)
			}
		}, "images[0].archive", "outside the recipe's folder", "archive: ¦images/link"},
		{"archive not an archive", "images:\n  - name: hello\n    archive: images/notes.txt\n", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "images", "notes.txt"), []byte(strings.Repeat("hello\n", 200)), 0o644)
		}, "images[0].archive", "not a readable tar", "archive: ¦images/notes"},
		{"archive of two images", "images:\n  - name: hello\n    archive: images/two.tar\n", func(t *testing.T, dir string) {
			writeImageArchive(t, dir, "images/two.tar", 2)
		}, "images[0].archive", "holds 2 images", "archive: ¦images/two"},
		{"archive with a version", "images:\n  - name: hello\n    archive: images/hello.tar\n    version: \"1.0\"\n", nil,
			"images[0].version", "an archive's tag comes from the archive", `version: ¦"1.0"`},
		{"gomod without module", "images:\n  - name: agent\n    version: \"0.3\"\n    source: {type: gomod, package: ./cmd/agent}\n", nil,
			"images[0].source.module", "gomod needs the module", "¦source: {"},
		{"gomod without package", "images:\n  - name: agent\n    version: \"0.3\"\n    source: {type: gomod, module: example.com/agent}\n", nil,
			"images[0].source.package", "needs the main package", "¦source: {"},
		{"package outside the module", "images:\n  - name: agent\n    version: \"0.3\"\n    source: {type: gomod, module: example.com/agent, package: example.org/other/cmd}\n", nil,
			"images[0].source.package", `"example.org/other/cmd" is not inside module example.com/agent`, "package: ¦example.org"},
		{"package climbing out", "images:\n  - name: agent\n    version: \"0.3\"\n    source: {type: gomod, module: example.com/agent, package: ../x}\n", nil,
			"images[0].source.package", `"../x" is not a package of module`, "package: ¦../x"},
		{"gomod without version", "images:\n  - name: agent\n    source: {type: gomod, module: example.com/agent, package: .}\n", nil,
			"images[0].version", "version is empty: write an exact version (v0.3.1) or a minor track", "  - ¦name: agent"},
		{"gomod floating version", "images:\n  - name: agent\n    version: latest\n    source: {type: gomod, module: example.com/agent, package: .}\n", nil,
			"images[0].version", `"latest" floats`, "version: ¦latest"},
		{"url source", "images:\n  - name: agent\n    version: \"0.3\"\n    source: {type: url, url: \"https://example.com/{version}/agent\"}\n", nil,
			"images[0].source.type", `images are built from type gomod only, not "url"`, "type: ¦url"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeImageArchive(t, dir, "images/hello.tar", 1)
			if c.setup != nil {
				c.setup(t, dir)
			}
			src := minimal + c.images
			p := filepath.Join(dir, "r.yaml")
			if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			fs := Lint(r)
			if len(fs) != 1 {
				t.Fatalf("want 1 finding, got %d: %v", len(fs), fs)
			}
			f := fs[0]
			if f.Field != c.field || !strings.Contains(f.Message, c.msg) || f.File != p || f.Severity != SeverityError {
				t.Errorf("got %s\nwant field %s, message with %q", f, c.field, c.msg)
			}
			if want := posOf(t, src, c.at); f.Pos != want {
				t.Errorf("at %s, want %s (%s)", f.Pos, want, f)
			}
		})
	}

	// Only nodes on containerd's CRI import images: not docker behind cri-dockerd.
	docker := strings.Replace(minimal, "name: mini\n", "name: mini\nruntime: {name: docker, packages: [docker.io, runc], sandboxImage: registry.k8s.io/pause:3.10, criDockerd: {version: 0.3.16, source: {type: url, url: \"https://example.org/cri-dockerd-{version}.tgz\", member: \"cri-dockerd/{name}\"}}}\nstorage: {driver: overlay2}\n", 1)
	r, err := Parse("d.yaml", []byte(docker+"images:\n  - name: hello\n    archive: images/hello.tar\n"))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range Lint(r) {
		if f.Field == "images[0]" && strings.Contains(f.Message, "docker through cri-dockerd imports no baked images") {
			found = true
		}
	}
	if !found || len(r.BakedImages()) != 0 {
		t.Errorf("docker with images: %v", Lint(r))
	}
}

// The lock pins an archive's content: a changed file, a renamed one or one that is gone is
// drift, with the fix.
func TestImagesArchiveDrift(t *testing.T) {
	r, _, err := imageRecipe(t, helloAndAgent)
	if err != nil {
		t.Fatal(err)
	}
	l := fakeLock(r)
	dir := RecipeDir(r)
	_, sum, err := HashImageArchive(dir, "images/hello.tar")
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range l.Artifacts {
		switch a.Name {
		case "image/hello":
			l.Artifacts[i].SourceSHA256 = sum
		case "image-bin/agent": // (fakeLock knows the embedded recipes' tracks only)
			l.Artifacts[i].Version, l.Artifacts[i].Module = "v0.3.1", "example.com/agent@v0.3.1"
		}
	}
	if err := CheckLock(r, l); err != nil {
		t.Fatalf("a matching lock drifts: %v", err)
	}

	writeImageArchive(t, dir, "images/hello.tar", 1)
	if err := CheckLock(r, l); err != nil {
		t.Fatalf("the same archive written again drifts: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "images", "hello.tar"), []byte("other content"), 0o644)
	var de *DriftError
	err = CheckLock(r, l)
	if !errors.As(err, &de) || len(de.Drifts) != 1 || de.Drifts[0].Name != "image/hello" || !strings.Contains(err.Error(), "archive images/hello.tar changed since the lock was written") || !strings.Contains(err.Error(), `run "kubebake lock`) {
		t.Errorf("changed archive: %v", err)
	}
	os.Remove(filepath.Join(dir, "images", "hello.tar"))
	if err := CheckLock(r, l); err == nil || !strings.Contains(err.Error(), "archive cannot be read") {
		t.Errorf("archive gone: %v", err)
	}
	r.Images[0].Archive = "images/renamed.tar"
	if err := CheckLock(r, l); err == nil || !strings.Contains(err.Error(), "archive changed from images/hello.tar to images/renamed.tar") {
		t.Errorf("archive renamed: %v", err)
	}
}
