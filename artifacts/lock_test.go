package artifacts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubebake/kubebake/artifacts/oci"
	"github.com/kubebake/kubebake/recipes"
)

// fakeSource pins every input to version "<n>" (n = generation) with a made-up sha256, and
// keeps locked entries when update is false, like the real sources.
type fakeSource struct {
	typ        string
	generation int
	err        error
	mu         sync.Mutex
	calls      [][]string // input names of each Resolve
	prevSeen   [][]string
	fetched    []string
	skip       string // an input it "forgets" to pin
}

func (f *fakeSource) Type() string { return f.typ }

func (f *fakeSource) Resolve(ctx context.Context, inputs []recipes.Input, prev []recipes.LockedArtifact, update bool) ([]recipes.LockedArtifact, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names, prevNames []string
	for _, in := range inputs {
		names = append(names, in.Name)
	}
	for _, p := range prev {
		prevNames = append(prevNames, p.Name)
	}
	f.calls = append(f.calls, names)
	f.prevSeen = append(f.prevSeen, prevNames)
	if f.err != nil {
		return nil, f.err
	}
	var out []recipes.LockedArtifact
	for _, in := range inputs {
		if in.Name == f.skip {
			continue
		}
		if i := slices.IndexFunc(prev, func(p recipes.LockedArtifact) bool { return p.Name == in.Name }); i >= 0 && !update {
			out = append(out, prev[i])
			continue
		}
		v := fmt.Sprintf("v1.35.%d", f.generation)
		out = append(out, recipes.LockedArtifact{Name: in.Name, Kind: in.Kind, Source: f.typ, Version: v, SHA256: sum([]byte(in.Name + v)), Size: 1})
	}
	return out, nil
}

func (f *fakeSource) Fetch(ctx context.Context, arts []recipes.LockedArtifact) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for _, a := range arts {
		f.fetched = append(f.fetched, a.Name)
		out[a.Name] = "/cache/" + a.SHA256
	}
	return out, f.err
}

func loadRecipe(t *testing.T) *recipes.Recipe {
	t.Helper()
	r, err := recipes.Load("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func fakeSources(t *testing.T) (map[string]Source, map[string]*fakeSource) {
	fakes := map[string]*fakeSource{}
	srcs := map[string]Source{}
	for _, typ := range []string{recipes.SourceGoMod, recipes.SourceURL, recipes.SourceDeb, recipes.SourceSelf} {
		fakes[typ] = &fakeSource{typ: typ, generation: 3}
		srcs[typ] = fakes[typ]
	}
	srcs[SourceOCI] = fakeImageSource(t)
	return srcs, fakes
}

// fakeImageSource builds each baked image as a one-file image naming its inputs' versions,
// so lock tests need no real binaries; it still writes real archives into a real cache.
func fakeImageSource(t *testing.T, caches ...*Cache) *ImageSource {
	c, err := OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(caches) > 0 {
		c = caches[0]
	}
	fake := func(name string) imageBuilder {
		return func(_, versions map[string]string, epoch int64) (oci.NamedImage, error) {
			var keys []string
			for k, v := range versions {
				keys = append(keys, k+"="+v)
			}
			sort.Strings(keys)
			img, err := oci.Build(oci.Spec{Files: []oci.File{{Path: "/inputs", Mode: 0o644, Open: oci.FromBytes([]byte(strings.Join(keys, "\n")))}}, SourceDateEpoch: epoch})
			return oci.NamedImage{Ref: "kubebake.local/" + strings.TrimPrefix(name, "image/") + ":test", Image: img}, err
		}
	}
	b := map[string]imageBuilder{}
	for name := range imageBuilders {
		b[name] = fake(name)
	}
	return &ImageSource{cache: c, builders: b}
}

func setClock(t *testing.T, at time.Time) {
	old := timeNow
	timeNow = func() time.Time { return at }
	t.Cleanup(func() { timeNow = old })
	t.Setenv("SOURCE_DATE_EPOCH", "")
}

func TestLockGroupsAndSorts(t *testing.T) {
	r := loadRecipe(t)
	srcs, fakes := fakeSources(t)
	setClock(t, time.Date(2026, 11, 22, 15, 4, 5, 0, time.UTC))
	l, err := Lock(context.Background(), r, nil, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	inputs := r.Inputs()
	if len(l.Artifacts) != len(inputs)+len(r.BakedImages()) {
		t.Fatalf("%d artifacts for %d inputs and %d images", len(l.Artifacts), len(inputs), len(r.BakedImages()))
	}
	if !slices.IsSortedFunc(l.Artifacts, func(a, b recipes.LockedArtifact) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("artifacts not sorted")
	}
	if l.Recipe != "debian-12" || l.InputsDigest != r.InputsDigest() || l.Kind != recipes.KindLock || l.APIVersion != recipes.APIVersion {
		t.Errorf("header: %+v", l)
	}
	if want := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC).Unix(); l.SourceDateEpoch != want {
		t.Errorf("SourceDateEpoch %d, want %d (the day)", l.SourceDateEpoch, want)
	}
	// One batch per source type in use (debian-12 has no url inputs), holding only that
	// type's inputs.
	if n := len(fakes[recipes.SourceURL].calls); n != 0 {
		t.Errorf("the url source was called %d times without inputs", n)
	}
	delete(fakes, recipes.SourceURL)
	for typ, f := range fakes {
		if len(f.calls) != 1 {
			t.Errorf("%s: %d Resolve calls", typ, len(f.calls))
			continue
		}
		for _, name := range f.calls[0] {
			i := slices.IndexFunc(inputs, func(in recipes.Input) bool { return in.Name == name })
			if inputs[i].Source.Type != typ {
				t.Errorf("%s went to the %s source", name, typ)
			}
		}
	}
	if !slices.Contains(fakes[recipes.SourceGoMod].calls[0], "kubelet") || !slices.Contains(fakes[recipes.SourceDeb].calls[0], "deb/conntrack") {
		t.Errorf("batches: gomod %v, deb %v", fakes[recipes.SourceGoMod].calls[0], fakes[recipes.SourceDeb].calls[0])
	}
}

func TestLockAgainIsByteIdentical(t *testing.T) {
	r := loadRecipe(t)
	srcs, fakes := fakeSources(t)
	setClock(t, time.Date(2026, 11, 22, 15, 0, 0, 0, time.UTC))
	first, err := Lock(context.Background(), r, nil, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	// A day later, nothing moved: same bytes, same epoch.
	setClock(t, time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
	again, err := Lock(context.Background(), r, first, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := recipes.MarshalLock(first)
	b, _ := recipes.MarshalLock(again)
	if !bytes.Equal(a, b) {
		t.Errorf("re-locking changed the lock:\n%s\n---\n%s", a, b)
	}
	// The previous entries were handed to each source.
	if got := fakes[recipes.SourceGoMod].prevSeen[1]; !slices.Contains(got, "kubelet") {
		t.Errorf("gomod saw prev %v", got)
	}
	// --update moves the pins: new epoch, and Diff says what moved.
	for _, f := range fakes {
		f.generation = 4
	}
	moved, err := Lock(context.Background(), r, first, true, srcs)
	if err != nil {
		t.Fatal(err)
	}
	if moved.SourceDateEpoch != time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC).Unix() {
		t.Errorf("epoch after update: %d", moved.SourceDateEpoch)
	}
	changes := Diff(first, moved)
	if len(changes) != len(first.Artifacts) {
		t.Fatalf("%d changes", len(changes))
	}
	kubelet := changes[slices.IndexFunc(changes, func(c Change) bool { return c.Name == "kubelet" })]
	if kubelet.String() != "kubelet v1.35.3 -> v1.35.4" {
		t.Errorf("change %q", kubelet)
	}
}

func TestLockSourceDateEpochEnv(t *testing.T) {
	r := loadRecipe(t)
	srcs, _ := fakeSources(t)
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	l, err := Lock(context.Background(), r, nil, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	if l.SourceDateEpoch != 1700000000 {
		t.Errorf("epoch %d", l.SourceDateEpoch)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "soon")
	if _, err := Lock(context.Background(), r, nil, false, srcs); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %v", err)
	}
}

func TestLockPrevOfOtherRecipeIgnored(t *testing.T) {
	r := loadRecipe(t)
	srcs, fakes := fakeSources(t)
	setClock(t, time.Now())
	first, _ := Lock(context.Background(), r, nil, false, srcs)
	first.Recipe = "someone-else"
	if _, err := Lock(context.Background(), r, first, false, srcs); err != nil {
		t.Fatal(err)
	}
	if got := fakes[recipes.SourceGoMod].prevSeen; len(got[len(got)-1]) != 0 {
		t.Errorf("entries of another recipe's lock were offered: %v", got[len(got)-1])
	}
}

func TestLockErrors(t *testing.T) {
	r := loadRecipe(t)
	ctx := context.Background()

	srcs, fakes := fakeSources(t)
	fakes[recipes.SourceDeb].err = errors.New("mirror unreachable")
	_, err := Lock(ctx, r, nil, false, srcs)
	if err == nil || !strings.Contains(err.Error(), "resolving deb inputs: mirror unreachable") {
		t.Errorf("source error: %v", err)
	}

	srcs, _ = fakeSources(t)
	delete(srcs, recipes.SourceGoMod)
	_, err = Lock(ctx, r, nil, false, srcs)
	if err == nil || !strings.Contains(err.Error(), `source type "gomod" has no implementation`) {
		t.Errorf("missing source: %v", err)
	}

	srcs, fakes = fakeSources(t)
	fakes[recipes.SourceGoMod].skip = "kubectl"
	_, err = Lock(ctx, r, nil, false, srcs)
	if err == nil || !strings.Contains(err.Error(), `did not pin "kubectl"`) {
		t.Errorf("source forgot an input: %v", err)
	}
}

func TestFetchGroups(t *testing.T) {
	r := loadRecipe(t)
	srcs, fakes := fakeSources(t)
	l, err := Lock(context.Background(), r, nil, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	paths, err := Fetch(context.Background(), l, srcs)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != len(l.Artifacts) {
		t.Errorf("%d paths for %d artifacts", len(paths), len(l.Artifacts))
	}
	if !slices.Contains(fakes[recipes.SourceDeb].fetched, "deb/socat") || slices.Contains(fakes[recipes.SourceDeb].fetched, "kubelet") {
		t.Errorf("deb fetched %v", fakes[recipes.SourceDeb].fetched)
	}
	fakes[recipes.SourceURL].err = errors.New("boom")
	if _, err := Fetch(context.Background(), l, srcs); err != nil {
		// url has no artifacts in debian-12 (all gomod): its error must not surface.
		t.Errorf("a source with nothing to fetch was asked: %v", err)
	}
	fakes[recipes.SourceDeb].err = errors.New("disk full")
	if _, err := Fetch(context.Background(), l, srcs); err == nil || !strings.Contains(err.Error(), "fetching deb artifacts: disk full") {
		t.Errorf("fetch error: %v", err)
	}
}

// urlRecipe is debian-12 with every binary from url sources (dl.k8s.io and GitHub layouts,
// reached through mirror rules) and its Debian mirror on a local synthetic archive. It
// returns the recipe and the servers.
func urlRecipe(t *testing.T) (*recipes.Recipe, *releaseServer, *synthArchive) {
	t.Helper()
	r := loadRecipe(t)
	rel := newFileServer(t)
	arch := newSynthArchive(t)
	r.Kubernetes.Source = recipes.Source{Type: recipes.SourceURL, URL: "https://dl.k8s.io/release/{version}/bin/linux/{arch}/{name}"}
	r.Etcd.Source = recipes.Source{Type: recipes.SourceURL, URL: "https://github.com/etcd-io/etcd/releases/download/{version}/{name}"}
	r.CNI.Source = recipes.Source{Type: recipes.SourceURL, URL: "https://github.com/containernetworking/plugins/releases/download/{version}/{name}-linux-{arch}"}
	// flannel publishes flanneld-amd64; the CoreDNS layout is made up (it publishes tarballs).
	r.PodNetwork.Source = recipes.Source{Type: recipes.SourceURL, URL: "https://github.com/flannel-io/flannel/releases/download/{version}/{name}-{arch}"}
	r.DNS.Source = recipes.Source{Type: recipes.SourceURL, URL: "https://github.com/coredns/coredns/releases/download/{version}/{name}-linux-{arch}"}
	r.Mirrors = []recipes.URLRewrite{
		{Prefix: "https://dl.k8s.io/", Replacement: rel.URL + "/k8s/"},
		{Prefix: "https://github.com/", Replacement: rel.URL + "/gh/"},
	}
	r.Base.Mirror = arch.srv.URL
	newest := map[string]string{"1.35": "v1.35.4", "3.6": "v3.6.5", "1.9": "v1.9.1", "0.28": "v0.28.10", "1.15": "v1.15.0"}
	local := func(u string) string {
		for _, m := range r.Mirrors {
			u = strings.Replace(u, m.Prefix, m.Replacement, 1)
		}
		p, _ := url.Parse(u)
		return p.Path
	}
	arch.suites = map[string][]synthPkg{"bookworm": nil, "bookworm-updates": nil}
	for _, in := range r.Inputs() {
		switch in.Source.Type {
		case recipes.SourceURL:
			v := newest[in.Version]
			if su, err := StableURL(in.Source.URL, in.Version); err == nil {
				rel.set(local(su), []byte(v+"\n"))
			}
			u := ExpandURL(in.Source.URL, v, in.Package, in.Arch)
			data := []byte(strings.Repeat(in.Name+" "+v+"\n", 64))
			rel.set(local(u), data)
			rel.set(local(u)+".sha256", []byte(sum(data)+"  "+in.Package+"\n"))
		case recipes.SourceDeb:
			content := []byte(in.Package + " 1.0-1")
			if in.Kind == recipes.InputBinary { // a binary is taken out of a real .deb
				content = buildDeb(t, in.Package, "1.0-1", map[string]string{"bin/" + in.Name: in.Name + " 1.0-1"})
			}
			arch.suites["bookworm"] = append(arch.suites["bookworm"], synthPkg{in.Package, "1.0-1", "amd64", content})
		}
	}
	arch.publish(t)
	return r, rel, arch
}

// Lock and fetch a whole recipe with the real url and deb sources against local servers.
func TestLockAndFetchURLAndDeb(t *testing.T) {
	r, rel, arch := urlRecipe(t)
	c := newCache(t)
	srcs, err := RecipeSources(c, r)
	if err != nil {
		t.Fatal(err)
	}
	srcs[recipes.SourceDeb].(*DebSource).Insecure = true // the synthetic archive is unsigned
	srcs[SourceOCI] = fakeImageSource(t, c)              // its busybox is no real binary
	ctx := context.Background()
	setClock(t, time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	l, err := Lock(ctx, r, nil, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	if err := recipes.CheckLock(r, l); err != nil {
		t.Errorf("CheckLock refuses a fresh lock: %v", err)
	}
	byName := map[string]recipes.LockedArtifact{}
	for _, a := range l.Artifacts {
		byName[a.Name] = a
	}
	if k := byName["kubelet"]; k.Version != "v1.35.4" || k.URL != "https://dl.k8s.io/release/v1.35.4/bin/linux/amd64/kubelet" {
		t.Errorf("kubelet %+v", k)
	}
	if e := byName["etcd"]; e.Version != "v3.6.5" || e.Source != "url" {
		t.Errorf("etcd %+v", e)
	}
	if f := byName["flanneld"]; f.Version != "v0.28.10" || f.URL != "https://github.com/flannel-io/flannel/releases/download/v0.28.10/flanneld-amd64" || f.Main != "" {
		t.Errorf("flanneld %+v", f)
	}
	if d := byName["deb/conntrack"]; d.Version != "1.0-1" || d.Suite != "bookworm" {
		t.Errorf("conntrack %+v", d)
	}
	data, _ := recipes.MarshalLock(l)
	if bytes.Contains(data, []byte("127.0.0.1")) {
		t.Error("the lock names a mirror host")
	}

	// Locking again changes nothing and asks nothing of the servers.
	before := rel.totalGets() + arch.srv.totalGets()
	again, err := Lock(ctx, r, l, false, srcs)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := recipes.MarshalLock(again); !bytes.Equal(b, data) {
		t.Error("re-locking is not byte-identical")
	}
	if n := rel.totalGets() + arch.srv.totalGets() - before; n != 0 {
		t.Errorf("re-locking made %d requests", n)
	}

	paths, err := Fetch(ctx, l, srcs)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range l.Artifacts {
		if a.Source == recipes.SourceDeb && a.Kind == recipes.InputBinary {
			continue // pinned by its .deb's sha256; the path is the binary taken out of it
		}
		got, err := os.ReadFile(paths[a.Name])
		if err != nil || sum(got) != a.SHA256 {
			t.Errorf("%s: %s does not hold it (%v)", a.Name, paths[a.Name], err)
		}
	}
	before = rel.totalGets() + arch.srv.totalGets()
	if _, err := Fetch(ctx, l, srcs); err != nil {
		t.Fatal(err)
	}
	if n := rel.totalGets() + arch.srv.totalGets() - before; n != 0 {
		t.Errorf("a warm fetch made %d requests", n)
	}
}
