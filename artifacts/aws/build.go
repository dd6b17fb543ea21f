package aws

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/kubebake/kubebake/manifest"
)

// Tag keys kubebake puts on AMIs and snapshots. TagImageSHA256 is how a published image is
// found again: the same build is never uploaded twice.
const (
	TagRecipe            = "kubebake:recipe"
	TagKubernetesVersion = "kubebake:kubernetes-version"
	TagLockHash          = "kubebake:lock-hash"
	TagImageSHA256       = "kubebake:image-sha256"
	TagBuildDate         = "kubebake:build-date"
	TagVersion           = "kubebake:version"
	// TagUpload is on snapshots: "in-progress" from StartSnapshot, "complete" once the
	// last block is in. An in-progress snapshot that a later run finds was abandoned.
	TagUpload = "kubebake:upload"
)

// Build is a kubebake build output folder, as publishing needs it: the raw image and what
// manifest.json says about it.
type Build struct {
	Dir     string
	RawPath string
	// Size and SHA256 are the raw image's, from the manifest.
	Size   int64
	SHA256 string
	Recipe string
	// KubernetesVersion is the kubelet's exact version (v1.35.4), or the recipe's minor.
	KubernetesVersion string
	LockHash          string
	// BuildDate is the image's SOURCE_DATE_EPOCH: builds are reproducible, so the date an
	// image stands for is its inputs' date, not the wall clock of the build.
	BuildDate time.Time
	// Kubebake is the version of kubebake that built the image.
	Kubebake string
}

// ReadBuild reads a build output folder: manifest.json and its raw image.
func ReadBuild(dir string) (*Build, error) {
	m, err := manifest.Read(filepath.Join(dir, manifest.Name))
	if err != nil {
		return nil, fmt.Errorf("%s is not a kubebake build output folder: %w", dir, err)
	}
	b := &Build{Dir: dir, LockHash: m.LockHash, BuildDate: time.Unix(m.SourceDateEpoch, 0).UTC()}
	if m.Recipe != nil {
		b.Recipe = m.Recipe.Name
		b.KubernetesVersion = m.Recipe.Kubernetes.Version
	}
	for _, a := range m.Artifacts {
		if a.Name == "kubelet" && a.Version != "" {
			b.KubernetesVersion = a.Version
		}
	}
	if m.Build != nil {
		b.Kubebake = m.Build.Kubebake
	}
	var formats []string
	for _, o := range m.Outputs {
		formats = append(formats, o.Format)
		if o.Format == "raw" {
			b.RawPath, b.Size, b.SHA256 = filepath.Join(dir, o.Name), o.Size, o.SHA256
		}
	}
	if b.RawPath == "" {
		return nil, fmt.Errorf("%s: the build has no raw image (it wrote %s); rebuild with --format raw (EC2 imports the raw disk)",
			filepath.Join(dir, manifest.Name), strings.Join(formats, ", "))
	}
	st, err := os.Stat(b.RawPath)
	if err != nil {
		return nil, fmt.Errorf("raw image: %w; rebuild the image", err)
	}
	if st.Size() != b.Size {
		return nil, fmt.Errorf("%s is %d bytes, manifest.json says %d: the folder is not one build; rebuild the image", b.RawPath, st.Size(), b.Size)
	}
	if b.Recipe == "" || len(b.SHA256) != 64 {
		return nil, fmt.Errorf("%s: no recipe name or raw sha256; rebuild the image with this kubebake", filepath.Join(dir, manifest.Name))
	}
	return b, nil
}

// VolumeGiB is the root volume size: the image's size in GiB, rounded up.
func (b *Build) VolumeGiB() int32 {
	const gib = 1 << 30
	n := (b.Size + gib - 1) / gib
	return int32(max(n, 1))
}

// Tags are the tags of the build's AMIs and snapshots.
func (b *Build) Tags() map[string]string {
	t := map[string]string{
		"Name":               b.AMIName(),
		TagRecipe:            b.Recipe,
		TagKubernetesVersion: b.KubernetesVersion,
		TagLockHash:          b.LockHash,
		TagImageSHA256:       b.SHA256,
		TagBuildDate:         b.BuildDate.Format(time.RFC3339),
	}
	if b.Kubebake != "" {
		t[TagVersion] = b.Kubebake
	}
	return t
}

var amiNameUnsafe = regexp.MustCompile(`[^a-zA-Z0-9()./_-]+`)

// AMIName is the image's name: recipe, Kubernetes version, build date and the sha256's
// first 12 digits, so that names sort by date and two builds never share one.
func (b *Build) AMIName() string {
	name := fmt.Sprintf("kubebake-%s-%s-%s-%s", b.Recipe, b.KubernetesVersion, b.BuildDate.Format("20060102"), b.SHA256[:12])
	name = amiNameUnsafe.ReplaceAllString(name, "-")
	if len(name) > 128 {
		name = name[:128]
	}
	return name
}

// Description is the AMI's description.
func (b *Build) Description() string {
	return fmt.Sprintf("kubebake %s, Kubernetes %s, lock %s", b.Recipe, b.KubernetesVersion, short(b.LockHash))
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
