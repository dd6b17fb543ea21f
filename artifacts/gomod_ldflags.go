package artifacts

import (
	"strconv"
	"strings"
	"time"
)

// ldVar is one -X linker setting. Value is a template: {version} (v1.35.4), {version-nov}
// (1.35.4), {major}, {minor}, {commit} (the VCS hash the module proxy reports, often empty) and
// {date} (the module version's publication time, RFC 3339 UTC: never the wall clock).
type ldVar struct {
	Symbol string
	Value  string
	// IfKnown omits the setting when Value expands to "": the package's default is better
	// than an empty string (etcd prints "Git SHA: Not provided").
	IfKnown bool
}

// goModVersionVars says, per module, which variables carry the version a release build would
// stamp. Modules not listed get no -X settings. Keep it small and next to the upstream
// build scripts it mirrors (Kubernetes hack/lib/version.sh, CNI plugins build_linux.sh,
// etcd scripts/build-binary.sh, flannel's and CoreDNS's Makefiles).
var goModVersionVars = map[string][]ldVar{
	"k8s.io/kubernetes": {
		{Symbol: "k8s.io/component-base/version.gitVersion", Value: "{version}"},
		{Symbol: "k8s.io/component-base/version.gitMajor", Value: "{major}"},
		{Symbol: "k8s.io/component-base/version.gitMinor", Value: "{minor}"},
		{Symbol: "k8s.io/component-base/version.gitCommit", Value: "{commit}"},
		{Symbol: "k8s.io/component-base/version.gitTreeState", Value: "clean"},
		{Symbol: "k8s.io/component-base/version.buildDate", Value: "{date}"},
	},
	"github.com/containernetworking/plugins": {
		{Symbol: "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion", Value: "{version}"},
	},
	// flannel's Makefile stamps the tag; kubebake's flanneld prints it for --version.
	"github.com/flannel-io/flannel": {{Symbol: "github.com/flannel-io/flannel/pkg/version.Version", Value: "{version}"}},
	// CoreDNS's version constant is in its source (coremain.CoreVersion); its Makefile stamps
	// the commit, which -version prints after the Go version.
	"github.com/coredns/coredns": {{Symbol: "github.com/coredns/coredns/coremain.GitCommit", Value: "{commit}", IfKnown: true}},
	// etcd's version constant is in its source; only the git SHA is stamped at build time.
	"go.etcd.io/etcd/server/v3":  {{Symbol: "go.etcd.io/etcd/api/v3/version.GitSHA", Value: "{commit}", IfKnown: true}},
	"go.etcd.io/etcd/etcdctl/v3": {{Symbol: "go.etcd.io/etcd/api/v3/version.GitSHA", Value: "{commit}", IfKnown: true}},
	"go.etcd.io/etcd/etcdutl/v3": {{Symbol: "go.etcd.io/etcd/api/v3/version.GitSHA", Value: "{commit}", IfKnown: true}},
}

// moduleStamp is what version variables are filled from.
type moduleStamp struct {
	Version string    // v1.35.4
	Commit  string    // VCS hash from the proxy's Origin, "" when unknown
	Time    time.Time // the version's time from the module proxy
}

// goModLDFlags returns the -ldflags value for building module's binaries: stripped, no build
// ID, and the module's version variables.
func goModLDFlags(module string, st moduleStamp) string {
	parts := []string{"-s", "-w", "-buildid="}
	major, minor, _, _ := exactParts(st.Version)
	date := ""
	if !st.Time.IsZero() {
		date = st.Time.UTC().Format(time.RFC3339)
	}
	r := strings.NewReplacer(
		"{version}", st.Version,
		"{version-nov}", strings.TrimPrefix(st.Version, "v"),
		"{major}", strconv.Itoa(major),
		"{minor}", strconv.Itoa(minor),
		"{commit}", st.Commit,
		"{date}", date,
	)
	for _, v := range goModVersionVars[module] {
		val := r.Replace(v.Value)
		if val == "" && v.IfKnown {
			continue
		}
		parts = append(parts, "-X", v.Symbol+"="+val)
	}
	return strings.Join(parts, " ")
}
