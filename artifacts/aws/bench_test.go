package aws

import (
	"context"
	"os"
	"testing"
)

// BenchmarkEBSUpload is the EBS direct upload to the local EBS endpoint (fakeaws, on
// 127.0.0.1) with the default workers: StartSnapshot, the blocks, CompleteSnapshot, the wait.
// It reports the rate of the bytes sent (MiB/s) and the share of blocks skipped as all
// zeros. The image is $KUBEBAKE_BENCH_IMAGE, a build output folder (make bench gives the
// default image it builds), else a synthetic 64 MiB image. The server verifies every block's
// SHA-256 and writes it to disk, so the figure is the client's and the server's together on
// one machine, not what AWS would give.
func BenchmarkEBSUpload(b *testing.B) {
	var build *Build
	if dir := os.Getenv("KUBEBAKE_BENCH_IMAGE"); dir != "" {
		var err error
		if build, err = ReadBuild(dir); err != nil {
			b.Fatal(err)
		}
	} else {
		build, _ = fakeBuild(b, b.TempDir(), 64, false)
	}
	srv := startFake(b)
	s := session(b, srv, "", RetryPolicy{})
	c := s.clients("")
	var sent int64
	var secs, skipped float64
	b.ResetTimer()
	for range b.N {
		snap, st, err := s.uploadEBS(context.Background(), c, build, DefaultWorkers, func(Event) {})
		if err != nil {
			b.Fatal(err)
		}
		sent += st.UploadedBytes
		secs += st.Seconds
		skipped = st.SkippedShare()
		b.StopTimer()
		if err := s.deleteSnapshot(context.Background(), c, snap); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.SetBytes(sent / int64(b.N))
	b.ReportMetric(float64(sent)/(1<<20)/secs, "MiB/s")
	b.ReportMetric(100*skipped, "%skipped")
}
