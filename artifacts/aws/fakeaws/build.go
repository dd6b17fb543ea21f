package fakeaws

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
)

// WriteBuild writes a small kubebake build output folder for tests: a raw image of size
// bytes whose 512 KiB blocks cycle through random data, data, zeros written out, and a hole
// (so both ways of being all zero occur), and a manifest.json for it of recipe "tiny". It
// returns how many blocks hold data.
func WriteBuild(dir string, size int64) (dataBlocks int, err error) {
	raw := filepath.Join(dir, "tiny.raw")
	f, err := os.Create(raw)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, BlockSize)
	for off := int64(0); off < size; off += BlockSize {
		n := min(int64(BlockSize), size-off)
		switch (off / BlockSize) % 4 {
		case 0, 3:
			for j := range buf[:n] {
				buf[j] = byte(rng.Uint32())
			}
			buf[0] = 1 // never all zero
			dataBlocks++
		case 1:
			clear(buf)
		case 2:
			continue
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return 0, err
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return 0, err
	}
	m := &manifest.Manifest{APIVersion: manifest.APIVersion, Kind: manifest.Kind,
		Recipe:   &recipes.Recipe{Name: "tiny", Kubernetes: recipes.Kubernetes{Version: "1.35"}},
		LockHash: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", SourceDateEpoch: 1795996800,
		Image:     manifest.ImageInfo{Size: size},
		Artifacts: []recipes.LockedArtifact{{Name: "kubelet", Kind: "binary", Version: "v1.35.4"}},
		Outputs:   []manifest.OutputFile{{Name: "tiny.raw", Format: "raw", Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}},
		Build:     &manifest.BuildInfo{Kubebake: "test"}}
	return dataBlocks, manifest.Write(filepath.Join(dir, manifest.Name), m)
}
