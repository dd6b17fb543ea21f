package artifacts

import (
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
)

// buildModulePath is the module path of the generated build module. It is embedded in every
// binary's build information, so it is a constant: changing it changes every sha256.
const buildModulePath = "kubebake.local/gomod"

// goModFile is the part of a go.mod that a build of the module as a dependency needs to know.
// It is a small parser on purpose (no golang.org/x/mod dependency): module, go, godebug,
// require and replace, in single-line and block form, with // comments.
type goModFile struct {
	Module  string
	Go      string
	Godebug []string          // "key=value", in file order
	Require map[string]string // path -> version
	Replace []goModReplace
}

// goModReplace is one replace directive; OldVersion / NewVersion are empty when absent.
type goModReplace struct {
	OldPath, OldVersion string
	NewPath, NewVersion string
}

// local reports whether the replacement is a file path (./staging/src/k8s.io/api, ../api).
func (r goModReplace) local() bool {
	return r.NewVersion == "" && (strings.HasPrefix(r.NewPath, "./") || strings.HasPrefix(r.NewPath, "../") ||
		strings.HasPrefix(r.NewPath, "/") || r.NewPath == "." || r.NewPath == "..")
}

func (r goModReplace) String() string {
	old := r.OldPath
	if r.OldVersion != "" {
		old += " " + r.OldVersion
	}
	nw := r.NewPath
	if r.NewVersion != "" {
		nw += " " + r.NewVersion
	}
	return old + " => " + nw
}

// parseGoMod parses go.mod text; name is used in errors.
func parseGoMod(name string, data []byte) (*goModFile, error) {
	f := &goModFile{Require: map[string]string{}}
	block := ""
	for i, line := range strings.Split(string(data), "\n") {
		lineno := i + 1
		if j := strings.Index(line, "//"); j >= 0 {
			line = line[:j]
		}
		toks, err := goModTokens(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineno, err)
		}
		if len(toks) == 0 {
			continue
		}
		if block != "" {
			if toks[0] == ")" {
				block = ""
				continue
			}
			if err := f.directive(block, toks); err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, lineno, err)
			}
			continue
		}
		if len(toks) == 2 && toks[1] == "(" {
			block = toks[0]
			continue
		}
		if err := f.directive(toks[0], toks[1:]); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineno, err)
		}
	}
	if block != "" {
		return nil, fmt.Errorf("%s: unterminated %s block", name, block)
	}
	if f.Module == "" {
		return nil, fmt.Errorf("%s: no module directive", name)
	}
	return f, nil
}

func (f *goModFile) directive(verb string, args []string) error {
	switch verb {
	case "module":
		if len(args) != 1 {
			return fmt.Errorf("module: want one path")
		}
		f.Module = args[0]
	case "go":
		if len(args) != 1 {
			return fmt.Errorf("go: want one version")
		}
		f.Go = args[0]
	case "godebug":
		if len(args) != 1 || !strings.Contains(args[0], "=") {
			return fmt.Errorf("godebug: want key=value")
		}
		f.Godebug = append(f.Godebug, args[0])
	case "require":
		if len(args) != 2 {
			return fmt.Errorf("require: want path and version")
		}
		f.Require[args[0]] = args[1]
	case "replace":
		arrow := -1
		for i, a := range args {
			if a == "=>" {
				arrow = i
			}
		}
		if arrow < 1 || arrow > 2 || len(args)-arrow-1 < 1 || len(args)-arrow-1 > 2 {
			return fmt.Errorf("replace: want \"old [version] => new [version]\"")
		}
		r := goModReplace{OldPath: args[0], NewPath: args[arrow+1]}
		if arrow == 2 {
			r.OldVersion = args[1]
		}
		if len(args)-arrow-1 == 2 {
			r.NewVersion = args[arrow+2]
		}
		f.Replace = append(f.Replace, r)
	default:
		// toolchain, exclude, retract, tool, ignore: irrelevant for building it as a dependency.
	}
	return nil
}

// goModTokens splits a go.mod line into tokens; "(" and ")" and "=>" are their own tokens and
// double-quoted or back-quoted strings are unquoted.
func goModTokens(line string) ([]string, error) {
	var toks []string
	s := line
	for {
		s = strings.TrimLeft(s, " \t\r")
		if s == "" {
			return toks, nil
		}
		switch s[0] {
		case '(', ')':
			toks = append(toks, s[:1])
			s = s[1:]
			continue
		case '"', '`':
			end := strings.IndexByte(s[1:], s[0])
			if s[0] == '"' {
				// Find the closing quote, honouring backslash escapes.
				end = -1
				for i := 1; i < len(s); i++ {
					if s[i] == '\\' {
						i++
						continue
					}
					if s[i] == '"' {
						end = i - 1
						break
					}
				}
			}
			if end < 0 {
				return nil, fmt.Errorf("unterminated string")
			}
			q := s[:end+2]
			u, err := strconv.Unquote(q)
			if err != nil {
				return nil, fmt.Errorf("bad string %s", q)
			}
			toks = append(toks, u)
			s = s[end+2:]
			continue
		}
		i := strings.IndexAny(s, " \t\r()")
		if i < 0 {
			i = len(s)
		}
		toks = append(toks, s[:i])
		s = s[i:]
	}
}

// placeholderVersion reports whether a required version only makes sense together with a
// local replace (k8s.io/kubernetes requires each staging module at v0.0.0, go mod tidy writes
// v0.0.0-00010101000000-000000000000 for such modules): it cannot be fetched from the proxy.
func placeholderVersion(v string) bool {
	return v == "v0.0.0" || strings.HasPrefix(v, "v0.0.0-00010101000000-")
}

// buildGoMod returns the go.mod of the build module for target at version (before go mod
// tidy). The rules, none of them specific to one project:
//
//   - require target version;
//   - go and godebug copied from the target's go.mod, so the binaries get the language version
//     and GODEBUG defaults the project ships with (the main module decides those);
//   - for each local replace X => ./path in the target whose requirement is a placeholder
//     that cannot be fetched (X v0.0.0: Kubernetes' staging modules), replace X with X at
//     v0.<minor>.<patch> of the target: k8s.io/api => k8s.io/api v0.35.4 for
//     k8s.io/kubernetes v1.35.4 (a placeholder v0.0.0 only exists for v0/v1 module paths).
//     Local replaces of modules required at real versions (etcd's ../api) or not required at
//     all (FORBIDDEN_DEPENDENCY guards) are development wiring and are dropped;
//   - replaces of modules by other published modules are copied as they are, because the
//     project's own release builds use them.
func buildGoMod(target *goModFile, version string) (string, error) {
	_, minor, patch, ok := exactParts(version)
	if !ok {
		return "", fmt.Errorf("%s version %q is not a module version", target.Module, version)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "// Generated by kubebake to build %s@%s. Do not edit.\n\n", target.Module, version)
	fmt.Fprintf(&b, "module %s\n\n", buildModulePath)
	goVer := target.Go
	if goVer == "" {
		goVer = "1.21"
	}
	fmt.Fprintf(&b, "go %s\n", goVer)
	if len(target.Godebug) > 0 {
		b.WriteString("\ngodebug (\n")
		for _, g := range target.Godebug {
			fmt.Fprintf(&b, "\t%s\n", g)
		}
		b.WriteString(")\n")
	}
	fmt.Fprintf(&b, "\nrequire %s %s\n", goModQuote(target.Module), version)

	var reps []string
	seen := map[string]bool{}
	for _, r := range target.Replace {
		if r.OldPath == target.Module {
			continue
		}
		var line string
		if r.local() {
			req, required := target.Require[r.OldPath]
			if !required || !placeholderVersion(req) || (r.OldVersion != "" && r.OldVersion != req) {
				continue
			}
			line = fmt.Sprintf("%s => %s v0.%d.%d", goModQuote(r.OldPath), goModQuote(r.OldPath), minor, patch)
		} else {
			line = r.String()
		}
		if !seen[line] {
			seen[line] = true
			reps = append(reps, line)
		}
	}
	sort.Strings(reps)
	if len(reps) > 0 {
		b.WriteString("\nreplace (\n")
		for _, r := range reps {
			fmt.Fprintf(&b, "\t%s\n", r)
		}
		b.WriteString(")\n")
	}
	return b.String(), nil
}

// goModQuote quotes a path only when go.mod syntax needs it.
func goModQuote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"'`()\\") || strings.Contains(s, "//") || s == "=>" {
		return strconv.Quote(s)
	}
	return s
}

// buildToolsGo returns tools.go: blank imports of the main packages, behind the tools tag, so
// that go mod tidy records every module they need.
func buildToolsGo(pkgs []string) string {
	var b strings.Builder
	b.WriteString("//go:build tools\n\n// Generated by kubebake. Do not edit.\n\npackage tools\n\nimport (\n")
	for _, p := range pkgs {
		fmt.Fprintf(&b, "\t_ %s\n", strconv.Quote(p))
	}
	b.WriteString(")\n")
	return b.String()
}

// execName is the file name go build -o dir/ gives the binary of main package pkg: the last
// path element, or the one before it when the last is a major version suffix (v2, v3, ...):
// go.etcd.io/etcd/server/v3 -> "server".
func execName(pkg string) string {
	dir, elem := path.Split(pkg)
	if elem != pkg && isMajorElem(elem) {
		_, elem = path.Split(strings.TrimSuffix(dir, "/"))
	}
	return elem
}

func isMajorElem(s string) bool {
	if len(s) < 2 || s[0] != 'v' || s[1] == '0' || s[1] == '1' && len(s) == 2 {
		return false
	}
	for _, r := range s[1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
