package builder

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
)

// SPDX 2.3 JSON, the subset kubebake writes: one package for the image, one per installed
// Debian package (with a PURL), one per baked binary and container image archive (with its
// sha256; an image with its oci PURL), CONTAINS relationships from the image to each, and
// from each container image kubebake built to what it was made from. The document is a pure function of the lock and
// the rootfs: its namespace derives from the lock hash and its creation time is the lock's
// SOURCE_DATE_EPOCH.

// SPDXDocument is an SPDX 2.3 document.
type SPDXDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      SPDXCreationInfo   `json:"creationInfo"`
	DocumentDescribes []string           `json:"documentDescribes"`
	Packages          []SPDXPackage      `json:"packages"`
	Relationships     []SPDXRelationship `json:"relationships"`
}

// SPDXCreationInfo says who made the document and when.
type SPDXCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

// SPDXPackage is one package.
type SPDXPackage struct {
	Name             string            `json:"name"`
	SPDXID           string            `json:"SPDXID"`
	VersionInfo      string            `json:"versionInfo,omitempty"`
	Supplier         string            `json:"supplier,omitempty"`
	DownloadLocation string            `json:"downloadLocation"`
	FilesAnalyzed    bool              `json:"filesAnalyzed"`
	Checksums        []SPDXChecksum    `json:"checksums,omitempty"`
	SourceInfo       string            `json:"sourceInfo,omitempty"`
	LicenseConcluded string            `json:"licenseConcluded"`
	LicenseDeclared  string            `json:"licenseDeclared"`
	CopyrightText    string            `json:"copyrightText"`
	PrimaryPurpose   string            `json:"primaryPackagePurpose,omitempty"`
	ExternalRefs     []SPDXExternalRef `json:"externalRefs,omitempty"`
}

// SPDXChecksum is a package checksum.
type SPDXChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

// SPDXExternalRef is a package URL or another reference.
type SPDXExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

// SPDXRelationship relates two elements.
type SPDXRelationship struct {
	SPDXElementID      string `json:"spdxElementId"`
	RelationshipType   string `json:"relationshipType"`
	RelatedSPDXElement string `json:"relatedSpdxElement"`
}

const noAssertion = "NOASSERTION"

var spdxIDUnsafe = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// sbomInput is what the SBOM is made of.
type sbomInput struct {
	Recipe     *recipes.Recipe
	Lock       *recipes.Lock
	LockHash   string
	IDs        IDs
	Packages   []DebPackage
	LayerFiles []manifest.File
	Tool       string // "kubebake-<version>"
}

// makeSBOM builds the SPDX document.
func makeSBOM(in sbomInput) *SPDXDocument {
	name := in.Recipe.Name
	doc := &SPDXDocument{
		SPDXVersion: "SPDX-2.3",
		DataLicense: "CC0-1.0",
		SPDXID:      "SPDXRef-DOCUMENT",
		Name:        "kubebake-image-" + name,
		// A URI unique to this lock; it need not resolve (SPDX 2.3 section 6.5).
		DocumentNamespace: fmt.Sprintf("https://kubebake.dev/spdx/%s/%s", url.PathEscape(name), in.IDs.SBOMPrefix),
		CreationInfo: SPDXCreationInfo{
			Created:  time.Unix(in.Lock.SourceDateEpoch, 0).UTC().Format(time.RFC3339),
			Creators: []string{"Tool: " + in.Tool},
		},
	}
	used := map[string]bool{}
	id := func(prefix, s string) string {
		base := prefix + "-" + strings.Trim(spdxIDUnsafe.ReplaceAllString(s, "-"), "-")
		cand := base
		for i := 2; used[cand]; i++ {
			cand = fmt.Sprintf("%s-%d", base, i)
		}
		used[cand] = true
		return cand
	}
	imageID := id("SPDXRef-Image", name)
	doc.DocumentDescribes = []string{imageID}
	doc.Packages = append(doc.Packages, SPDXPackage{
		Name: "kubebake-image-" + name, SPDXID: imageID, VersionInfo: in.LockHash,
		DownloadLocation: noAssertion, LicenseConcluded: noAssertion, LicenseDeclared: noAssertion,
		CopyrightText: noAssertion, PrimaryPurpose: "OPERATING-SYSTEM",
	})
	doc.Relationships = append(doc.Relationships, SPDXRelationship{SPDXElementID: "SPDXRef-DOCUMENT", RelationshipType: "DESCRIBES", RelatedSPDXElement: imageID})
	contains := func(pkgID string) {
		doc.Relationships = append(doc.Relationships, SPDXRelationship{SPDXElementID: imageID, RelationshipType: "CONTAINS", RelatedSPDXElement: pkgID})
	}

	distro := in.Recipe.Base.Release
	for _, p := range in.Packages {
		pid := id("SPDXRef-deb", p.Name+"-"+p.Architecture)
		purl := fmt.Sprintf("pkg:deb/debian/%s@%s?arch=%s", url.PathEscape(p.Name), url.PathEscape(p.Version), url.QueryEscape(p.Architecture))
		if distro != "" {
			purl += "&distro=" + url.QueryEscape(distro)
		}
		pkg := SPDXPackage{
			Name: p.Name, SPDXID: pid, VersionInfo: p.Version, Supplier: "Organization: Debian",
			DownloadLocation: noAssertion, LicenseConcluded: noAssertion, LicenseDeclared: noAssertion,
			CopyrightText: noAssertion, PrimaryPurpose: "LIBRARY",
			ExternalRefs: []SPDXExternalRef{{ReferenceCategory: "PACKAGE-MANAGER", ReferenceType: "purl", ReferenceLocator: purl}},
		}
		if p.Source != "" {
			pkg.SourceInfo = "built from Debian source package " + p.Source
		}
		doc.Packages = append(doc.Packages, pkg)
		contains(pid)
	}

	// Baked binaries: every regular layer file that comes from an artifact, with the sha256
	// of the bytes written and, for lock artifacts, version and origin.
	arts := map[string]recipes.LockedArtifact{}
	for _, a := range in.Lock.Artifacts {
		arts[a.Name] = a
	}
	pkgOf := map[string]string{} // artifact -> SPDX ID of its package
	var images []recipes.LockedArtifact
	for _, f := range in.LayerFiles {
		if f.Type != "file" || f.Artifact == "" {
			continue
		}
		a := arts[f.Artifact]
		pid := id("SPDXRef-bin", f.Path)
		pkg := SPDXPackage{
			Name: f.Artifact, SPDXID: pid, VersionInfo: a.Version,
			DownloadLocation: noAssertion, LicenseConcluded: noAssertion, LicenseDeclared: noAssertion,
			CopyrightText: noAssertion, PrimaryPurpose: "APPLICATION",
			Checksums:  []SPDXChecksum{{Algorithm: "SHA256", ChecksumValue: f.SHA256}},
			SourceInfo: "installed as " + f.Path,
		}
		if a.Kind == recipes.KindImage {
			pkg.PrimaryPurpose = "CONTAINER"
			pkg.SourceInfo += fmt.Sprintf(", imported into containerd as %s (manifest digest %s)", a.Ref, a.Digest)
			if a.Source == recipes.SourceArchive {
				pkg.SourceInfo += fmt.Sprintf(", read from the recipe's %s (sha256 %s)", a.Package, a.SourceSHA256)
			}
			images = append(images, a)
		}
		if purl := artifactPURL(a); purl != "" {
			pkg.ExternalRefs = []SPDXExternalRef{{ReferenceCategory: "PACKAGE-MANAGER", ReferenceType: "purl", ReferenceLocator: purl}}
		}
		if a.Name == "" {
			pkg.SourceInfo += " (built from this kubebake)"
		}
		doc.Packages = append(doc.Packages, pkg)
		contains(pid)
		if _, seen := pkgOf[f.Artifact]; !seen {
			pkgOf[f.Artifact] = pid
		}
	}

	// What each image kubebake built holds: the artifacts it was made from (CoreDNS's
	// binary, busybox, a recipe's gomod program), each a package of its own unless the layer
	// installs it too.
	for _, img := range images {
		if img.Source != artifacts.SourceOCI {
			continue
		}
		for _, name := range strings.Split(img.Package, ",") {
			a, ok := arts[name]
			if !ok {
				continue
			}
			pid, ok := pkgOf[name]
			if !ok {
				pid = id("SPDXRef-bin", name)
				pkg := SPDXPackage{
					Name: name, SPDXID: pid, VersionInfo: a.Version,
					DownloadLocation: noAssertion, LicenseConcluded: noAssertion, LicenseDeclared: noAssertion,
					CopyrightText: noAssertion, PrimaryPurpose: "APPLICATION",
					Checksums:  []SPDXChecksum{{Algorithm: "SHA256", ChecksumValue: a.SHA256}},
					SourceInfo: "in the container image " + img.Ref,
				}
				if purl := artifactPURL(a); purl != "" {
					pkg.ExternalRefs = []SPDXExternalRef{{ReferenceCategory: "PACKAGE-MANAGER", ReferenceType: "purl", ReferenceLocator: purl}}
				}
				doc.Packages = append(doc.Packages, pkg)
				pkgOf[name] = pid
			}
			doc.Relationships = append(doc.Relationships, SPDXRelationship{SPDXElementID: pkgOf[img.Name], RelationshipType: "CONTAINS", RelatedSPDXElement: pid})
		}
	}
	return doc
}

// artifactPURL is the package URL of an artifact: a binary's origin (binaryPURL), or a
// container image by its manifest digest and name (the purl "oci" type).
func artifactPURL(a recipes.LockedArtifact) string {
	if a.Kind != recipes.KindImage {
		return binaryPURL(a)
	}
	colon := strings.LastIndexByte(a.Ref, ':')
	if colon <= strings.LastIndexByte(a.Ref, '/') || a.Digest == "" {
		return ""
	}
	repo, tag := a.Ref[:colon], a.Ref[colon+1:]
	name := repo[strings.LastIndexByte(repo, '/')+1:]
	q := url.Values{"repository_url": {repo}, "tag": {tag}, "arch": {"amd64"}}
	return "pkg:oci/" + url.PathEscape(name) + "@" + strings.ReplaceAll(a.Digest, ":", "%3A") + "?" + q.Encode()
}

// binaryPURL is the package URL of a binary's origin: the Go module it was built from, or
// the Debian package it was taken out of.
func binaryPURL(a recipes.LockedArtifact) string {
	switch a.Source {
	case recipes.SourceGoMod:
		mod, ver, _ := strings.Cut(a.Module, "@")
		if ver == "" {
			ver = a.Version
		}
		if mod == "" {
			return ""
		}
		p := "pkg:golang/" + mod + "@" + url.PathEscape(ver)
		if sub := strings.TrimPrefix(strings.TrimPrefix(a.Package, mod), "/"); sub != "" && a.Package != mod {
			p += "#" + sub
		}
		return p
	case recipes.SourceDeb:
		return ""
	}
	return ""
}
