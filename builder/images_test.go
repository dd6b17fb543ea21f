package builder

import (
	"strings"
	"testing"

	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
)

// debian12WithImages is the embedded debian-12 recipe and its committed lock with two images
// of the recipe's own added: an archive and a gomod program.
func debian12WithImages(t *testing.T) (*recipes.Recipe, *recipes.Lock) {
	t.Helper()
	r, err := recipes.Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	l, err := recipes.ReadRecipeLock(r)
	if err != nil {
		t.Fatal(err)
	}
	r.Images = []recipes.ContainerImage{
		{Name: "hello", Archive: "images/hello.tar"},
		{Name: "agent", Version: "0.3", Source: &recipes.Source{Type: recipes.SourceGoMod, Module: "example.com/agent", Package: "./cmd/agent"}},
	}
	l.Artifacts = append(l.Artifacts,
		recipes.LockedArtifact{Name: "image/hello", Kind: recipes.KindImage, Source: recipes.SourceArchive, Version: "1.0", Package: "images/hello.tar",
			Ref: "kubebake.local/hello:1.0", Digest: "sha256:" + strings.Repeat("1", 64), SourceSHA256: strings.Repeat("2", 64), SHA256: strings.Repeat("3", 64), Size: 3000},
		recipes.LockedArtifact{Name: "image-bin/agent", Kind: recipes.InputBinary, Source: recipes.SourceGoMod, Version: "v0.3.1", Module: "example.com/agent@v0.3.1",
			Package: "example.com/agent/cmd/agent", SHA256: strings.Repeat("4", 64), Size: 1500},
		recipes.LockedArtifact{Name: "image/agent", Kind: recipes.KindImage, Source: "oci", Version: "v0.3.1", Package: "image-bin/agent",
			Ref: "kubebake.local/agent:v0.3.1", Digest: "sha256:" + strings.Repeat("5", 64), SHA256: strings.Repeat("6", 64), Size: 2000},
	)
	return r, l
}

// The manifest (artifacts with reference and digest, the archives among the files) and the
// SBOM list a recipe's own images beside kubebake's.
func TestManifestAndSBOMListRecipeImages(t *testing.T) {
	r, l := debian12WithImages(t)
	layer, err := roles.Render(r, l)
	if err != nil {
		t.Fatal(err)
	}
	files := manifestFiles(layer, nil)
	m := manifest.Manifest{Artifacts: l.Artifacts, Files: files}
	var got []string
	for _, img := range m.Images() {
		got = append(got, img.Artifact+" "+img.Ref+" "+img.Path)
		if !strings.HasPrefix(img.Digest, "sha256:") {
			t.Errorf("%s without a digest", img.Artifact)
		}
	}
	want := []string{
		"image/agent kubebake.local/agent:v0.3.1 /usr/lib/kubebake/images/agent.tar",
		"image/busybox kubebake.local/busybox:1.35.0 /usr/lib/kubebake/images/busybox.tar",
		"image/coredns kubebake.local/coredns:v1.15.0 /usr/lib/kubebake/images/coredns.tar",
		"image/hello kubebake.local/hello:1.0 /usr/lib/kubebake/images/hello.tar",
		"image/pause kubebake.local/pause:1.35.0 /usr/lib/kubebake/images/pause.tar",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("manifest images:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	doc := makeSBOM(sbomInput{Recipe: r, Lock: l, LockHash: "ff", IDs: DeriveIDs("ff"), Tool: "kubebake", LayerFiles: files})
	data, err := marshalJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, w := range []string{
		`pkg:oci/hello@sha256%3A` + strings.Repeat("1", 64) + `?arch=amd64&repository_url=kubebake.local%2Fhello&tag=1.0`,
		`pkg:oci/agent@sha256%3A` + strings.Repeat("5", 64) + `?arch=amd64&repository_url=kubebake.local%2Fagent&tag=v0.3.1`,
		`read from the recipe's images/hello.tar (sha256 ` + strings.Repeat("2", 64) + `)`,
		`pkg:golang/example.com/agent@v0.3.1#cmd/agent`,
		`"in the container image kubebake.local/agent:v0.3.1"`,
		`"primaryPackagePurpose": "CONTAINER"`,
	} {
		if !strings.Contains(s, w) {
			t.Errorf("SBOM lacks %s", w)
		}
	}
	// Each image kubebake built contains what it was made from: the agent its program, CoreDNS
	// the coredns binary the layer also installs (one package for both).
	ids := map[string]string{}
	for _, p := range doc.Packages {
		ids[p.SPDXID] = p.Name
	}
	contains := map[string]bool{}
	for _, rel := range doc.Relationships {
		if rel.RelationshipType == "CONTAINS" {
			contains[ids[rel.SPDXElementID]+" > "+ids[rel.RelatedSPDXElement]] = true
		}
	}
	for _, c := range []string{"image/agent > image-bin/agent", "image/coredns > coredns", "image/pause > busybox", "kubebake-image-debian-12 > image/hello"} {
		if !contains[c] {
			t.Errorf("SBOM: no %s", c)
		}
	}
	var corednsPkgs int
	for _, p := range doc.Packages {
		if p.Name == "coredns" {
			corednsPkgs++
		}
	}
	if corednsPkgs != 1 {
		t.Errorf("%d coredns packages", corednsPkgs)
	}
}
