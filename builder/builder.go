package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubebake/kubebake/artifacts"
	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/manifest"
	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
)

// Options is what a build needs. The caller (cmd/kubebake build) has checked the lock
// against the recipe, fetched the artifacts and rendered the layer.
type Options struct {
	Recipe *recipes.Recipe
	Lock   *recipes.Lock
	Layer  *roles.Layer
	// Open reads an artifact blob by name for the layer (roles.OpenFunc).
	Open roles.OpenFunc
	// Debs are the cache paths of the lock's pinned package set by sha256
	// (artifacts.DebSource.FetchPackages); the rootfs is made from them alone.
	Debs map[string]string
	// Store keeps rootfs tarballs between builds (an *artifacts.Cache).
	Store RootfsStore
	// Mirror is the Debian archive URL mmdebstrap downloads from (recipe base.mirror, else
	// the machine's). It is never written into the image, the manifest or a log.
	Mirror string
	// OutDir receives the images, manifest.json and sbom.spdx.json.
	OutDir string
	// Formats to write; empty: the recipe's image.formats.
	Formats []string
	// Progress receives stage events; nil: none.
	Progress func(Event)
	// Version is kubebake's version for the output folder's manifest (never in the image).
	Version string
	// HostBootloader is systemd-boot's EFI binary on the host, used when the rootfs has none
	// (default HostSystemdBoot).
	HostBootloader string
	// SecurityMirror serves the recipe's "-security" suites to mmdebstrap when the lock has no
	// pinned package set (base.securityMirror, else this machine's apt security archive).
	SecurityMirror string
	// MirrorCheck, when the rootfs is not cached, runs before mmdebstrap: it fails naming
	// every locked package the mirror no longer serves (Run sets it from the deb source).
	MirrorCheck func(context.Context) error
}

// Event reports build progress.
type Event struct {
	Stage   string        `json:"stage"`
	Index   int           `json:"index"` // 1-based stage number
	Stages  int           `json:"stages"`
	Kind    EventKind     `json:"kind"`
	Bytes   int64         `json:"bytes,omitempty"` // work done in the stage so far
	Total   int64         `json:"total,omitempty"` // work the stage will do, when known
	Elapsed time.Duration `json:"elapsed"`
	Message string        `json:"message,omitempty"`
}

// EventKind says what an Event is.
type EventKind string

// Event kinds.
const (
	EventStart    EventKind = "start"
	EventProgress EventKind = "progress"
	EventLog      EventKind = "log"
	EventDone     EventKind = "done"
)

// Result is what a build wrote.
type Result struct {
	Recipe       string                `json:"recipe"`
	LockHash     string                `json:"lockHash"`
	OutDir       string                `json:"outDir"`
	Outputs      []manifest.OutputFile `json:"outputs"`
	Manifest     string                `json:"manifest"`
	SBOM         string                `json:"sbom"`
	Seconds      float64               `json:"seconds"`
	Stages       []manifest.StageTime  `json:"stages"`
	RootfsCached bool                  `json:"rootfsCached"`
}

// stage is one named, timed step of the pipeline. Each closure says what it needs and what it
// gives (see Run and bakeStages); the runner times it and reports it.
type stage struct {
	name string
	run  func(ctx context.Context) error
}

// state is what the steps share.
type state struct {
	opts     Options
	formats  []outputFormat
	lockHash string
	ids      IDs
	layout   Layout
	epoch    int64
	work     string
	spec     RootfsSpec

	rootfsTar    string
	rootfsCached bool
	rootTar      string
	info         *MergeInfo
	manifest     *manifest.Manifest
	sbom         []byte
	boot         Boot
	raw          string
	outputs      []manifest.OutputFile
	outputPaths  map[string]string // output name -> path in work
	need         int64             // bytes the output folder needs, for ENOSPC messages
	start        time.Time
	timings      []manifest.StageTime // stages done so far, for the manifest

	unlock func() // releases the output folder (lockOutDir)

	emit func(Event)
	// redactor hides the mirrors' credentials in log events and errors (set by init).
	redactor *redact.Redactor
}

// bakeStages turn a checked recipe, lock and layer (s.opts) into published outputs.
func (s *state) bakeStages() []stage {
	return []stage{
		{"prepare", func(ctx context.Context) error { return stepPrepare(ctx, s) }},
		{"rootfs", func(ctx context.Context) error { return stepRootfs(ctx, s) }},
		{"merge", func(ctx context.Context) error { return stepMerge(ctx, s) }},
		{"root-ext4", func(ctx context.Context) error { return stepRootExt4(ctx, s) }},
		{"esp", func(ctx context.Context) error { return stepESP(ctx, s) }},
		{"outputs", func(ctx context.Context) error { return stepOutputs(ctx, s) }},
		{"publish", func(ctx context.Context) error { return stepPublish(ctx, s) }},
	}
}

// StageNames are the stages of Run in order: the pipeline's front (load to render) and the bake.
func StageNames() []string {
	var out []string
	for _, st := range append(frontStages(&state{}, Request{}, &pipelineValues{}), (&state{}).bakeStages()...) {
		out = append(out, st.name)
	}
	return out
}

// Build bakes from a recipe, lock and layer the caller has prepared (Run prepares them from
// a recipe name). On failure or cancellation nothing is left in OutDir but what was there
// before: temporary files are removed and child processes killed (internal/run).
func Build(ctx context.Context, opts Options) (*Result, error) {
	s := &state{start: time.Now()}
	if err := s.init(opts); err != nil {
		return nil, err
	}
	return s.run(ctx, s.bakeStages(), opts.Progress)
}

// init checks the bake's options and derives what every bake stage uses.
func (s *state) init(opts Options) error {
	if err := checkOptions(&opts); err != nil {
		return err
	}
	s.opts, s.epoch = opts, opts.Lock.SourceDateEpoch
	s.redactor = s.redactor.With(mirrorSecrets(opts.Recipe, opts.Mirror)...)
	s.lockHash = recipes.LockHash(opts.Lock)
	s.ids = DeriveIDs(s.lockHash)
	return nil
}

// run runs stages in order, each timed in the progress events and the result (and so in the
// manifest), and removes the work folder however it ends.
func (s *state) run(ctx context.Context, stages []stage, progress func(Event)) (*Result, error) {
	res := &Result{}
	defer func() {
		if s.work != "" {
			os.RemoveAll(s.work)
		}
		if s.unlock != nil {
			s.unlock()
		}
	}()
	for i, st := range stages {
		t0 := time.Now()
		s.emit = func(e Event) {
			if progress == nil {
				return
			}
			e.Stage, e.Index, e.Stages, e.Elapsed = st.name, i+1, len(stages), time.Since(t0)
			e.Message = s.redactor.String(e.Message)
			progress(e)
		}
		s.emit(Event{Kind: EventStart})
		slog.Debug("build stage", "stage", st.name)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("build %s: %w", st.name, err)
		}
		if err := st.run(ctx); err != nil {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
			return nil, s.redactor.Error(fmt.Errorf("build %s: %w", st.name, s.explainSpace(err)))
		}
		d := time.Since(t0)
		res.Stages = append(res.Stages, manifest.StageTime{Name: st.name, Seconds: round2(d.Seconds())})
		s.timings = res.Stages
		s.emit(Event{Kind: EventDone})
		slog.Debug("build stage done", "stage", st.name, "elapsed", d.Round(10*time.Millisecond))
	}
	res.Recipe, res.LockHash = s.opts.Recipe.Name, s.lockHash
	res.OutDir = s.opts.OutDir
	res.Outputs = s.outputs
	res.Manifest = filepath.Join(s.opts.OutDir, manifest.Name)
	res.SBOM = filepath.Join(s.opts.OutDir, manifest.SBOMName)
	res.Seconds = round2(time.Since(s.start).Seconds())
	res.RootfsCached = s.rootfsCached
	return res, nil
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

func checkOptions(o *Options) error {
	switch {
	case o.Recipe == nil:
		return errors.New("build: no recipe")
	case o.Lock == nil:
		return errors.New("build: no lock; run \"kubebake lock\" on the recipe")
	case o.Layer == nil:
		return errors.New("build: no node layer")
	case o.Store == nil:
		return errors.New("build: no cache for rootfs tarballs")
	case o.OutDir == "":
		return errors.New("build: no output folder")
	}
	if o.HostBootloader == "" {
		o.HostBootloader = HostSystemdBoot
	}
	if len(o.Formats) == 0 {
		o.Formats = o.Recipe.Image.Formats
	}
	if len(o.Formats) == 0 {
		o.Formats = []string{"raw"}
	}
	abs, err := filepath.Abs(o.OutDir)
	if err != nil {
		return err
	}
	// Publishing exchanges the folder itself: through a symlink, exchange its target, not
	// the link.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	o.OutDir = abs
	return nil
}

// stepPrepare validates the request, takes the output folder (one build at a time) and makes
// the work folder beside it: same filesystem, so finished files are renamed, never copied,
// and the new outputs are switched into place in one rename (publish.go).
func stepPrepare(ctx context.Context, s *state) error {
	o := s.opts
	var err error
	if s.formats, err = parseFormats(o.Formats); err != nil {
		return err
	}
	if bl := o.Recipe.Image.Bootloader; bl != "" && bl != "systemd-boot" {
		return fmt.Errorf("image.bootloader %q is not supported by the builder yet: use systemd-boot", bl)
	}
	size, err := recipes.ParseSize(o.Recipe.Image.Size)
	if err != nil {
		return fmt.Errorf("image.size: %w", err)
	}
	if s.layout, err = NewLayout(size); err != nil {
		return err
	}
	if err := checkTools(ctx, s.formats); err != nil {
		return err
	}
	if s.spec, err = NewRootfsSpec(ctx, o.Recipe, o.Lock, o.Mirror, o.SecurityMirror, o.Debs); err != nil {
		return err
	}
	if err := checkOutDir(o.OutDir); err != nil {
		return err
	}
	if s.unlock, err = lockOutDir(ctx, o.OutDir); err != nil {
		return err
	}
	prefix := workPrefix(o.OutDir)
	work, err := os.MkdirTemp(filepath.Dir(prefix), filepath.Base(prefix))
	if err != nil {
		return fmt.Errorf("folder %s is not writable: %w; choose another --out", filepath.Dir(o.OutDir), err)
	}
	s.work = work
	return nil
}

// stepRootfs finds the rootfs tarball in the cache or builds it with mmdebstrap.
func stepRootfs(ctx context.Context, s *state) error {
	log := func(line string) { s.emit(Event{Kind: EventLog, Message: line}) }
	tarball, cached, err := rootfsTarball(ctx, s.opts.Store, s.spec, s.opts.MirrorCheck, log)
	if err != nil {
		return err
	}
	s.rootfsTar, s.rootfsCached = tarball, cached
	if st, err := os.Stat(tarball); err == nil {
		s.emit(Event{Kind: EventProgress, Bytes: st.Size(), Total: st.Size(), Message: cachedWord(cached)})
	}
	return s.checkSpace()
}

func cachedWord(cached bool) string {
	if cached {
		return "cached"
	}
	return "built"
}

// stepMerge writes the root filesystem's tarball: the rootfs with hygiene applied, the node
// layer streamed from roles.Layer.WriteTar (every artifact checked against the lock on the
// way), fstab, apt sources, and the manifest and SBOM (which need the merged package list).
func stepMerge(ctx context.Context, s *state) error {
	s.rootTar = filepath.Join(s.work, "root.tar")
	f, err := os.Create(s.rootTar)
	if err != nil {
		return err
	}
	extractDir := filepath.Join(s.work, "boot")
	if err := os.Mkdir(extractDir, 0o755); err != nil {
		f.Close()
		return err
	}
	total := s.dataSize()
	cw := &countingWriter{w: f, progress: func(n int64) { s.emit(Event{Kind: EventProgress, Bytes: n, Total: total}) }}
	info, err := mergeTar(mergeOptions{
		RootfsTar: s.rootfsTar,
		Layer:     s.opts.Layer,
		Open:      s.opts.Open,
		Out:       ctxWriter{ctx, cw},
		Epoch:     s.epoch,
		Replace: []ExtraFile{
			{Path: "/etc/fstab", Mode: 0o644, Content: s.fstab()},
			{Path: "/etc/apt/sources.list", Mode: 0o644, Content: s.aptSources()},
		},
		Extract: func(abs string) bool {
			return strings.HasPrefix(abs, "/boot/vmlinuz-") || strings.HasPrefix(abs, "/boot/initrd.img-") || abs == HostSystemdBoot
		},
		ExtractDir: extractDir,
		Extras:     s.selfDescription,
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	s.info = info
	slog.Debug("merge", "entries", info.Entries, "dropped", len(info.Dropped), "kernels", info.Kernels)
	return nil
}

// dataSize is about what the root tarball will hold: the rootfs and the layer.
func (s *state) dataSize() int64 {
	var n int64
	if st, err := os.Stat(s.rootfsTar); err == nil {
		n = st.Size()
	}
	for _, f := range s.opts.Layer.Files {
		n += f.Size + int64(len(f.Content)) + 512
	}
	return n
}

// allocatedBytes is the space a (sparse) file takes on disk.
func allocatedBytes(path string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// fstab mounts the root filesystem by its partition UUID.
func (s *state) fstab() []byte {
	return []byte(fmt.Sprintf("# Written by kubebake: the root filesystem (grown to the disk at first boot).\nPARTUUID=%s / ext4 defaults,errors=remount-ro 0 1\n", s.ids.RootPart))
}

// aptSources names the recipe's mirror when the recipe sets one, without its credentials (they
// are for the build: a node that needs them gets them from its own configuration). With the
// default (the build machine's own mirror) the image gets no sources: a build host's mirror
// means nothing on a node, and a golden image is updated by rebuilding it.
func (s *state) aptSources() []byte {
	r := s.opts.Recipe
	if r.Base.Mirror == "" {
		return []byte("# kubebake: this image was built from pinned packages and has no apt sources.\n# Update nodes by rebuilding the image (kubebake lock --update; kubebake build).\n")
	}
	var b strings.Builder
	b.WriteString("# Written by kubebake from the recipe's base.mirror.\n")
	for _, suite := range r.Base.Suites {
		mirror := r.Base.Mirror
		if artifacts.IsSecuritySuite(suite) {
			if mirror = r.Base.SecurityMirror; mirror == "" {
				continue // the build machine's security archive is not the node's to use
			}
		}
		fmt.Fprintf(&b, "deb %s %s %s\n", strings.TrimRight(redact.StripUserinfo(mirror), "/"), suite, strings.Join(r.Base.Components, " "))
	}
	return []byte(b.String())
}

// publicRecipe is the recipe as the manifest and SBOM show it (in the image and beside it):
// its mirror URLs without credentials.
func publicRecipe(r *recipes.Recipe) *recipes.Recipe {
	c := *r
	c.Base.Mirror = redact.StripUserinfo(r.Base.Mirror)
	if len(r.Mirrors) > 0 {
		c.Mirrors = make([]recipes.URLRewrite, len(r.Mirrors))
		for i, m := range r.Mirrors {
			m.Prefix, m.Replacement = redact.StripUserinfo(m.Prefix), redact.StripUserinfo(m.Replacement)
			c.Mirrors[i] = m
		}
	}
	return &c
}

// mirrorSecrets are the credentials in the recipe's mirror URLs and the build's mirror.
func mirrorSecrets(r *recipes.Recipe, mirror string) []string {
	out := redact.URLSecrets(mirror)
	if r != nil {
		out = append(out, redact.URLSecrets(r.Base.Mirror)...)
		for _, m := range r.Mirrors {
			out = append(out, redact.URLSecrets(m.Prefix)...)
			out = append(out, redact.URLSecrets(m.Replacement)...)
		}
	}
	return out
}

// selfDescription computes the image's manifest and SBOM once the rootfs and layer are known;
// they are appended to the root tarball as /etc/kubebake/manifest.json and sbom.spdx.json.
func (s *state) selfDescription(info *MergeInfo) ([]ExtraFile, error) {
	if err := s.chooseBoot(info); err != nil {
		return nil, err
	}
	o := s.opts
	files := manifestFiles(o.Layer, info.LayerFiles)
	units, err := roles.Units(o.Recipe)
	if err != nil {
		return nil, err
	}
	pkgs := parseDpkgStatus(info.DpkgStatus)
	if err := checkPackageSet(o.Lock, pkgs, recipeFile(o.Recipe)); err != nil {
		return nil, err
	}
	if len(pkgs) == 0 {
		return nil, errors.New("the rootfs has no installed packages in /var/lib/dpkg/status")
	}
	arts := append([]recipes.LockedArtifact(nil), o.Lock.Artifacts...)
	sort.Slice(arts, func(i, j int) bool { return arts[i].Name < arts[j].Name })
	blSum, err := fileSHA256(s.boot.Loader)
	if err != nil {
		return nil, err
	}
	recipe := publicRecipe(o.Recipe)
	s.manifest = &manifest.Manifest{
		APIVersion: manifest.APIVersion, Kind: manifest.Kind,
		Recipe: recipe, LockHash: s.lockHash, SourceDateEpoch: s.epoch,
		Image: manifest.ImageInfo{
			Size: s.layout.DiskSize, Kernel: s.boot.KernelVersion, Cmdline: s.boot.Cmdline,
			Bootloader: "systemd-boot", BootloaderSHA: blSum, BootloaderFrom: s.bootloaderFrom(),
			DiskGUID: s.ids.DiskGUID.String(), ESPPartUUID: s.ids.ESPPart.String(),
			RootPartUUID: s.ids.RootPart.String(), RootFSUUID: s.ids.RootFS.String(),
			ESPSerial: fmt.Sprintf("%04X-%04X", s.ids.ESPSerial>>16, s.ids.ESPSerial&0xffff),
			ESPSize:   s.layout.ESPSize, RootSize: s.layout.RootSize,
		},
		Artifacts: arts, Files: files, Units: units, Packages: pkgs,
	}
	sbom := makeSBOM(sbomInput{Recipe: recipe, Lock: o.Lock, LockHash: s.lockHash, IDs: s.ids, Packages: pkgs, LayerFiles: files, Tool: "kubebake"})
	if s.sbom, err = marshalJSON(sbom); err != nil {
		return nil, err
	}
	inImage, err := manifest.Marshal(s.manifest)
	if err != nil {
		return nil, err
	}
	return []ExtraFile{
		{Path: manifest.ImagePath, Mode: 0o644, Content: inImage},
		{Path: manifest.ImageSBOMPath, Mode: 0o644, Content: s.sbom},
	}, nil
}

func (s *state) bootloaderFrom() string {
	if s.boot.Loader == s.info.Extracted[HostSystemdBoot] && s.boot.Loader != "" {
		return "rootfs"
	}
	return "host"
}

// chooseBoot picks the kernel (the newest if there are several) and the bootloader.
func (s *state) chooseBoot(info *MergeInfo) error {
	s.info = info
	if len(info.Kernels) == 0 {
		return fmt.Errorf("the rootfs has no kernel with an initramfs in /boot: is %s in the lock and initramfs-tools installed?", s.opts.Recipe.Base.Kernel)
	}
	kernels := append([]string(nil), info.Kernels...)
	sort.Slice(kernels, func(i, j int) bool { return naturalLess(kernels[i], kernels[j]) })
	kv := kernels[len(kernels)-1]
	loader := info.Extracted[HostSystemdBoot]
	if loader == "" {
		loader = s.opts.HostBootloader
		if _, err := os.Stat(loader); err != nil {
			return fmt.Errorf("systemd-boot not found (%s): install systemd-boot-efi on this machine (make deps) or add systemd-boot-efi to base.packages", loader)
		}
	}
	s.boot = Boot{
		KernelVersion: kv,
		Kernel:        info.Extracted["/boot/vmlinuz-"+kv],
		Initrd:        info.Extracted["/boot/initrd.img-"+kv],
		Loader:        loader,
		Cmdline:       fmt.Sprintf("root=PARTUUID=%s rw rootfstype=ext4 console=tty0 console=ttyS0,115200", s.ids.RootPart),
		Title:         fmt.Sprintf("kubebake %s", s.opts.Recipe.Name),
	}
	return nil
}

// stepRootExt4 creates the disk with its GPT and writes the root filesystem into partition 2.
func stepRootExt4(ctx context.Context, s *state) error {
	st, err := os.Stat(s.rootTar)
	if err != nil {
		return err
	}
	// ext4 metadata, the journal and inode tables take roughly 10% more than the data.
	if need := st.Size() + st.Size()/10 + 64*mib; need > s.layout.RootSize {
		return fmt.Errorf("the root filesystem needs about %s but image.size %s leaves %s for it; raise image.size in the recipe",
			humanBytes(need), s.opts.Recipe.Image.Size, humanBytes(s.layout.RootSize))
	}
	s.raw = filepath.Join(s.work, s.opts.Recipe.Name+".raw")
	if err := createDisk(s.raw, s.layout, s.ids); err != nil {
		return err
	}
	s.emit(Event{Kind: EventProgress, Message: "mke2fs", Total: st.Size()})
	// mke2fs says nothing while it works: report what it has written so far.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if used, err := allocatedBytes(s.raw); err == nil {
					s.emit(Event{Kind: EventProgress, Message: "mke2fs", Bytes: used, Total: st.Size()})
				}
			}
		}
	}()
	err = mkRootFS(ctx, s.work, s.raw, s.rootTar, s.layout, s.ids, s.epoch)
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	os.Remove(s.rootTar)
	return nil
}

// stepESP writes the EFI system partition: systemd-boot, loader.conf, the entry, kernel and
// initramfs.
func stepESP(ctx context.Context, s *state) error {
	return writeESP(s.raw, s.layout, s.ids, s.epoch, espFiles(s.boot, "kubebake"))
}

// stepOutputs converts the raw image to every format, two at a time (slowest first), and
// hashes each result.
func stepOutputs(ctx context.Context, s *state) error {
	name := s.opts.Recipe.Name
	type job struct {
		f   outputFormat
		dst string
	}
	var jobs []job
	for _, f := range s.formats {
		jobs = append(jobs, job{f, filepath.Join(s.work, "out", name+f.Ext)})
	}
	if err := os.Mkdir(filepath.Join(s.work, "out"), 0o755); err != nil {
		return err
	}
	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].f.Cost > jobs[j].f.Cost })
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		firstEr error
		done    int64
	)
	sem := make(chan struct{}, 2)
	results := make([]manifest.OutputFile, len(jobs))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			t0 := time.Now()
			err := j.f.Convert(ctx, s.raw, j.dst, s.ids, s.epoch)
			var sum string
			var size int64
			if err == nil {
				sum, size, err = fileSHA256Size(ctx, j.dst)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstEr == nil {
					firstEr = fmt.Errorf("%s: %w", j.f.Name, err)
					cancel()
				}
				return
			}
			results[i] = manifest.OutputFile{Name: filepath.Base(j.dst), Format: j.f.Name, Size: size, SHA256: sum}
			done++
			s.emit(Event{Kind: EventProgress, Bytes: done, Total: int64(len(jobs)), Message: fmt.Sprintf("%s in %s", j.f.Name, time.Since(t0).Round(100*time.Millisecond))})
		}()
	}
	wg.Wait()
	if firstEr != nil {
		return firstEr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Outputs in table order.
	s.outputPaths = map[string]string{}
	for _, f := range s.formats {
		for i, j := range jobs {
			if j.f.Name == f.Name {
				s.outputs = append(s.outputs, results[i])
				s.outputPaths[results[i].Name] = j.dst
			}
		}
	}
	return nil
}

// stepPublish writes manifest.json and sbom.spdx.json beside the images in the work folder
// and switches that folder into place as the output folder, all at once.
func stepPublish(ctx context.Context, s *state) error {
	m := *s.manifest
	m.Outputs = s.outputs
	out := filepath.Join(s.work, "out")
	if err := os.WriteFile(filepath.Join(out, manifest.SBOMName), s.sbom, 0o644); err != nil {
		return err
	}
	names := []string{manifest.SBOMName}
	for _, o := range s.outputs {
		names = append(names, o.Name)
	}
	for _, n := range names {
		if err := syncFile(filepath.Join(out, n)); err != nil {
			return err
		}
	}
	// The manifest's build section is filled last; its duration excludes only the switch.
	m.Build = &manifest.BuildInfo{Kubebake: s.opts.Version, RootfsCached: s.rootfsCached,
		Seconds: round2(time.Since(s.start).Seconds()), Stages: s.timings}
	data, err := manifest.Marshal(&m)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, manifest.Name), data, 0o644); err != nil {
		return err
	}
	if err := syncFile(filepath.Join(out, manifest.Name)); err != nil {
		return err
	}
	// Images, manifest and SBOM appear together; outputs of formats this build did not write
	// are not carried over, so nothing sits beside a manifest that does not describe it.
	return publishFolder(out, s.opts.OutDir, ownedOutput(s.opts.Recipe.Name))
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func fileSHA256(path string) (string, error) {
	sum, _, err := fileSHA256Size(context.Background(), path)
	return sum, err
}

func fileSHA256Size(ctx context.Context, path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := copySparse(ctx, h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// zeros is a read-only block of zero bytes.
var zeros = make([]byte, 1<<20)

// copySparse copies f to w like io.Copy but skips reading the holes of a sparse file
// (SEEK_DATA/SEEK_HOLE) and writes zeros for them instead: hashing a 4 GiB image that holds
// 1 GiB of data then costs no kernel time for the other 3 GiB.
func copySparse(ctx context.Context, w io.Writer, f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	buf := make([]byte, 4<<20)
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		data, err := f.Seek(off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				data = size // only a hole remains
			} else {
				// No SEEK_DATA on this filesystem: read everything.
				if _, err := f.Seek(off, io.SeekStart); err != nil {
					return off, err
				}
				n, err := io.CopyBuffer(w, ctxReader{ctx, f}, buf)
				return off + n, err
			}
		}
		for off < data {
			n := min(int64(len(zeros)), data-off)
			if _, err := w.Write(zeros[:n]); err != nil {
				return off, err
			}
			off += n
		}
		if off >= size {
			break
		}
		hole, err := f.Seek(off, unix.SEEK_HOLE)
		if err != nil {
			return off, err
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return off, err
		}
		want := hole - off
		n, err := io.CopyBuffer(w, io.LimitReader(ctxReader{ctx, f}, want), buf)
		off += n
		if err != nil {
			return off, err
		}
		if n < want {
			return off, io.ErrUnexpectedEOF
		}
	}
	return off, nil
}

// naturalLess orders strings with embedded numbers by value: 6.1.0-9 < 6.1.0-50.
func naturalLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := digitsPrefix(a), digitsPrefix(b)
		if da != "" && db != "" {
			na, nb := strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			a, b = a[len(da):], b[len(db):]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digitsPrefix(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}

// ctxWriter and ctxReader stop long copies when the build is cancelled.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// countingWriter reports bytes written, every 8 MiB.
type countingWriter struct {
	w        io.Writer
	n, last  int64
	progress func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.progress != nil && c.n-c.last >= 8<<20 {
		c.last = c.n
		c.progress(c.n)
	}
	return n, err
}
