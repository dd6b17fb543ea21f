package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"testing"

	"github.com/kubebake/kubebake/recipes"
)

// patternReader yields n bytes of a seed-dependent pattern without holding them in memory.
type patternReader struct {
	block []byte
	left  int64
}

func newPattern(seed string, n int64) *patternReader {
	h := sha256.Sum256([]byte(seed))
	block := make([]byte, 64<<10)
	for i := 0; i < len(block); i += len(h) {
		copy(block[i:], h[:])
		h = sha256.Sum256(h[:])
	}
	return &patternReader{block: block, left: n}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(b)), p.left, int64(len(p.block)))
	copy(b, p.block[:n])
	p.left -= n
	return int(n), nil
}

func patternSum(seed string, n int64) string {
	h := sha256.New()
	io.Copy(h, newPattern(seed, n))
	return hex.EncodeToString(h.Sum(nil))
}

// warmFetchSet is a realistic warm cache: the sizes of a default recipe's big binaries
// (Kubernetes components, etcd, CNI plugins) and some Debian packages, 519 MiB in 15 blobs.
var warmFetchSet = []struct {
	name, source string
	mb           int64
}{
	{"kube-apiserver", "url", 90}, {"kube-controller-manager", "url", 85}, {"kubelet", "url", 75},
	{"kubeadm", "url", 65}, {"kubectl", "url", 55}, {"kube-scheduler", "url", 40},
	{"kube-proxy", "url", 30}, {"etcd", "url", 25}, {"etcdctl", "url", 15},
	{"cni/bridge", "url", 4}, {"cni/portmap", "url", 4}, {"cni/loopback", "url", 3},
	{"deb/containerd", "deb", 24}, {"deb/runc", "deb", 3}, {"deb/conntrack", "deb", 1},
}

// BenchmarkWarmFetch fetches every artifact of a lock whose blobs are all in the cache. The
// sources point at a port nothing listens on: a warm fetch must not touch the network.
func BenchmarkWarmFetch(b *testing.B) {
	c, err := OpenCache(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	l := &recipes.Lock{Recipe: "bench"}
	var total int64
	for _, a := range warmFetchSet {
		n := a.mb << 20
		h := patternSum(a.name, n)
		if _, err := c.Put(h, newPattern(a.name, n)); err != nil {
			b.Fatal(err)
		}
		art := recipes.LockedArtifact{Name: a.name, Source: a.source, Version: "v1", SHA256: h, Size: n}
		if a.source == "url" {
			art.URL = "http://127.0.0.1:1/release/v1/" + a.name
		} else {
			art.URL = "pool/main/x/" + a.name + ".deb"
		}
		l.Artifacts = append(l.Artifacts, art)
		total += n
	}
	srcs := map[string]Source{
		recipes.SourceURL: NewURLSource(c, nil),
		recipes.SourceDeb: NewDebSource(c, "http://127.0.0.1:1/debian", nil, nil),
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		paths, err := Fetch(ctx, l, srcs)
		if err != nil {
			b.Fatal(err)
		}
		if len(paths) != len(l.Artifacts) {
			b.Fatalf("%d paths", len(paths))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/(1<<20), "MiB/fetch")
	b.ReportMetric(float64(len(l.Artifacts)), "artifacts")
	if testing.Verbose() {
		fmt.Printf("warm fetch of %d artifacts, %d MiB\n", len(l.Artifacts), total>>20)
	}
}
