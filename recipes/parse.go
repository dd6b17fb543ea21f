package recipes

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// A schema reads one apiVersion of the recipe format into the newest Recipe. Only the newest
// version decodes straight into Recipe. To add kubebake.dev/v1alpha2: copy today's types into
// a frozen v1alpha1 set, make its parse decode into them and translate forward, renaming the
// paths in Positions as fields move (compare Ignition's config/v3_x ParseCompatibleVersion and
// Butane's translate.Set), then register v1alpha2 here with the new Recipe.
type schema struct {
	apiVersion string
	parse      func(d *decoder, root *yaml.Node) *Recipe
}

// schemas is the registry, oldest first; the last one is APIVersion.
var schemas = []schema{
	{apiVersion: "kubebake.dev/v1alpha1", parse: parseCurrent},
}

// parseCurrent decodes the newest apiVersion: no translation needed.
func parseCurrent(d *decoder, root *yaml.Node) *Recipe {
	var r Recipe
	d.decode(root, reflect.ValueOf(&r).Elem(), "", nodePos(root))
	return &r
}

// SupportedVersions lists the apiVersions this kubebake reads, oldest first.
func SupportedVersions() []string {
	vs := make([]string, len(schemas))
	for i, s := range schemas {
		vs[i] = s.apiVersion
	}
	return vs
}

// Parse reads one recipe document strictly and applies SetDefaults. file names the source in
// messages. On failure the error is an ErrorList with every problem found, one per line:
// `file:line:col: field.path: what is wrong; how to fix`. Parse never panics on bad input.
func Parse(file string, data []byte) (r *Recipe, err error) {
	defer func() {
		if x := recover(); x != nil {
			r, err = nil, ErrorList{{File: file, Pos: Pos{1, 1}, Msg: fmt.Sprintf("the YAML parser failed: %v", x), Fix: "simplify the document and report a bug"}}
		}
	}()
	r, errs := parse(file, data)
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	SetDefaults(r)
	return r, nil
}

func parse(file string, data []byte) (*Recipe, ErrorList) {
	fail := func(p Pos, field, msg, fix string) ErrorList {
		return ErrorList{{File: file, Pos: p, Field: field, Msg: msg, Fix: fix}}
	}
	emptyFix := "a recipe starts with \"apiVersion: " + APIVersion + "\" and \"kind: " + KindRecipe + "\""
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fail(Pos{1, 1}, "", "empty document", emptyFix)
		}
		return nil, ErrorList{syntaxProblem(file, data, err)}
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fail(nodePos(&next), "", "more than one YAML document", "keep one recipe per file and remove the extra \"---\"")
	case !errors.Is(err, io.EOF):
		return nil, ErrorList{syntaxProblem(file, data, err)}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, fail(Pos{1, 1}, "", "empty document", emptyFix)
	}
	root := doc.Content[0]
	for i := 0; root.Kind == yaml.AliasNode && root.Alias != nil && i < 10; i++ {
		root = root.Alias
	}
	if isNull(root) {
		return nil, fail(Pos{1, 1}, "", "empty document", emptyFix)
	}
	if root.Kind != yaml.MappingNode {
		return nil, fail(nodePos(root), "", "want a mapping of recipe fields, got "+describe(root), emptyFix)
	}

	// apiVersion and kind first: they decide which schema reads the rest.
	var apiV, kind *yaml.Node
	var keys []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		k := root.Content[i]
		keys = append(keys, k.Value)
		switch k.Value {
		case "apiVersion":
			if apiV == nil {
				apiV = root.Content[i+1]
			}
		case "kind":
			if kind == nil {
				kind = root.Content[i+1]
			}
		}
	}
	supported := strings.Join(SupportedVersions(), ", ")
	var errs ErrorList
	var sch *schema
	switch {
	case apiV == nil:
		p := Problem{File: file, Pos: nodePos(root), Field: "apiVersion", Msg: "missing required field", Fix: "add \"apiVersion: " + APIVersion + "\" as the first line"}
		for i, k := range keys {
			if strings.EqualFold(k, "apiVersion") || strings.EqualFold(k, "api_version") || strings.EqualFold(k, "version") {
				p.Pos, p.Field = nodePos(root.Content[2*i]), k
				p.Msg, p.Fix = "unknown field", "did you mean \"apiVersion\"?"
			}
		}
		errs = append(errs, p)
	case apiV.Kind != yaml.ScalarNode:
		errs = append(errs, Problem{File: file, Pos: nodePos(apiV), Field: "apiVersion", Msg: "want a string, got " + describe(apiV), Fix: "write apiVersion: " + APIVersion})
	default:
		for i := range schemas {
			if schemas[i].apiVersion == apiV.Value {
				sch = &schemas[i]
			}
		}
		if sch == nil {
			msg := "unknown version " + strconv.Quote(apiV.Value)
			if g, _, ok := strings.Cut(apiV.Value, "/"); ok && g == "kubebake.dev" {
				msg = "version " + strconv.Quote(apiV.Value) + " is newer than this kubebake or unknown"
			}
			errs = append(errs, Problem{File: file, Pos: nodePos(apiV), Field: "apiVersion", Msg: msg, Fix: "this kubebake reads " + supported})
		}
	}
	switch {
	case kind == nil:
		errs = append(errs, Problem{File: file, Pos: nodePos(root), Field: "kind", Msg: "missing required field", Fix: "add \"kind: " + KindRecipe + "\""})
	case kind.Kind != yaml.ScalarNode || kind.Value != KindRecipe:
		msg := "want " + KindRecipe + ", got " + describe(kind)
		if kind.Kind == yaml.ScalarNode && kind.Value == KindLock {
			msg = "this is a lock file, not a recipe"
		}
		errs = append(errs, Problem{File: file, Pos: nodePos(kind), Field: "kind", Msg: msg, Fix: "write kind: " + KindRecipe})
	}
	if len(errs) > 0 {
		return nil, errs
	}

	d := newDecoder(file)
	r := sch.parse(d, root)
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	r.File = file
	r.Positions = d.pos
	return r, nil
}

// yaml.v3 reports syntax errors as "yaml: line N: problem" (sometimes without a line).
var yamlErrRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// syntaxProblem turns a yaml.v3 syntax error into a Problem with a position, the field the
// broken line belongs to (guessed from indentation) and a fix for the common causes.
func syntaxProblem(file string, data []byte, err error) Problem {
	msg := err.Error()
	line := 1
	if m := yamlErrRE.FindStringSubmatch(msg); m != nil {
		if m[1] != "" {
			line, _ = strconv.Atoi(m[1])
		}
		msg = m[2]
	}
	lines := strings.Split(string(data), "\n")
	if line < 1 {
		line = 1
	}
	// Parser errors (as opposed to scanner errors) carry a 0-based line in yaml.v3.
	if strings.HasPrefix(msg, "did not find expected") || strings.HasPrefix(msg, "found duplicate") ||
		strings.HasPrefix(msg, "found incompatible") || strings.HasPrefix(msg, "found undefined") {
		line++
	}
	if line > len(lines) {
		line = len(lines)
	}
	text := lines[line-1]
	col := 1
	fix := "fix the YAML syntax"
	switch {
	case strings.Contains(msg, "tab"), strings.Contains(msg, "cannot start any token"):
		fix = "indent with spaces, not tabs; quote values that start with @ or `"
	case strings.Contains(msg, "did not find expected key"):
		fix = "keys of one mapping must start in the same column; check the indentation"
	case strings.Contains(msg, "mapping values are not allowed"):
		fix = "quote a value that contains \": \", or fix the indentation"
		if i := strings.Index(text, ": "); i >= 0 {
			if j := strings.Index(text[i+2:], ": "); j >= 0 {
				col = i + 2 + j + 1
			}
		}
	case strings.Contains(msg, "did not find expected ',' or ']'"):
		fix = "close the [ list ] on the same line"
		col = strings.LastIndexByte(text, '[') + 1
	case strings.Contains(msg, "did not find expected ',' or '}'"):
		fix = "close the { mapping } on the same line"
		col = strings.LastIndexByte(text, '{') + 1
	case strings.Contains(msg, "unexpected end of stream"):
		fix = "close the quote or bracket that is still open"
	case strings.Contains(msg, "did not find expected '-' indicator"):
		fix = "a list and a mapping cannot share one indentation level"
	}
	// A tab in the indentation is the most common cause; point at it exactly.
	// yaml.v3 sometimes reports the line before the culprit, so look one further.
	for i := 0; i <= line && i < len(lines); i++ {
		l := lines[i]
		indent := len(l) - len(strings.TrimLeft(l, " \t"))
		if t := strings.IndexByte(l[:indent], '\t'); t >= 0 {
			line, col = i+1, t+1
			msg = "a tab in the indentation"
			fix = "indent with spaces, not tabs"
			break
		}
	}
	if col < 1 {
		col = 1
	}
	return Problem{File: file, Pos: Pos{line, col}, Field: guessPath(lines, line), Msg: "invalid YAML: " + msg, Fix: fix}
}

var keyLineRE = regexp.MustCompile(`^(\s*)(- +)?([A-Za-z0-9_.\-"']+)\s*:(\s|$)`)

// guessPath names the field a line of block-style YAML belongs to, from indentation alone, so
// that a syntax error can still say "base.packages". It is a best effort: "" when unsure.
func guessPath(lines []string, line int) string {
	type frame struct {
		indent int
		name   string
		leaf   bool // "key: value" on one line: it cannot have children
	}
	var stack []frame
	items := map[int]int{} // list item counts per indent, reset when a parent key starts
	for i := 0; i < line && i < len(lines); i++ {
		l := strings.ReplaceAll(lines[i], "\t", " ")
		trimmed := strings.TrimSpace(l)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || trimmed == "---" {
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " "))
		m := keyLineRE.FindStringSubmatch(l)
		if strings.HasPrefix(trimmed, "- ") || trimmed == "-" {
			// "- x" is the next item of the list at this indent; it replaces the previous item.
			for len(stack) > 0 && (stack[len(stack)-1].indent > indent || stack[len(stack)-1].indent == indent && strings.HasPrefix(stack[len(stack)-1].name, "[")) {
				stack = stack[:len(stack)-1]
			}
			n := items[indent]
			items[indent] = n + 1
			stack = append(stack, frame{indent: indent, name: "[" + strconv.Itoa(n) + "]"})
			if m != nil && m[2] != "" {
				stack = append(stack, frame{indent: indent + len(m[2]), name: strings.Trim(m[3], `"'`), leaf: hasValue(l)})
			}
			continue
		}
		if m == nil {
			continue // a continuation line of a value
		}
		for len(stack) > 0 && (stack[len(stack)-1].indent >= indent || stack[len(stack)-1].leaf) {
			stack = stack[:len(stack)-1]
		}
		for k := range items {
			if k >= indent {
				delete(items, k)
			}
		}
		stack = append(stack, frame{indent: indent, name: strings.Trim(m[3], `"'`), leaf: hasValue(l)})
	}
	var b strings.Builder
	for _, f := range stack {
		if b.Len() > 0 && !strings.HasPrefix(f.name, "[") {
			b.WriteByte('.')
		}
		b.WriteString(f.name)
	}
	return b.String()
}

// hasValue reports whether a "key: value" line carries its value on the same line.
func hasValue(line string) bool {
	_, v, ok := strings.Cut(line, ":")
	v = strings.TrimSpace(v)
	return ok && v != "" && !strings.HasPrefix(v, "#") && v != "|" && v != ">" && !strings.HasPrefix(v, "&")
}
