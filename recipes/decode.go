package recipes

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decoder walks a yaml.v3 node tree against a Go struct, by the structs' yaml tags. Unlike
// yaml.Unmarshal it keeps going after a problem, so one run reports every unknown field, wrong
// type, missing required field and duplicate key, each at the user's line:col; and it records
// where every field was written (Positions) for later findings.
type decoder struct {
	file   string
	pos    Positions
	errs   ErrorList
	budget int // nodes left to visit: bounds alias expansion ("billion laughs")
}

// maxNodes bounds the work on one document. A real recipe has a few hundred nodes.
const maxNodes = 100000

func newDecoder(file string) *decoder {
	return &decoder{file: file, pos: Positions{}, budget: maxNodes}
}

func (d *decoder) problem(p Pos, field, msg, fix string) {
	d.errs = append(d.errs, Problem{File: d.file, Pos: p, Field: field, Msg: msg, Fix: fix})
}

func nodePos(n *yaml.Node) Pos {
	if n == nil || n.Line == 0 {
		return Pos{Line: 1, Col: 1}
	}
	return Pos{Line: n.Line, Col: n.Column}
}

// resolve follows aliases to the node they name.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what the user wrote, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		switch n.ShortTag() {
		case "!!null":
			return "no value"
		case "!!bool":
			return "the boolean " + v
		case "!!int", "!!float":
			return "the number " + v
		}
		return "the string " + strconv.Quote(v)
	}
	return "something else"
}

// field is one yaml-tagged struct field.
type field struct {
	name     string
	index    int
	required bool
}

func structFields(t reflect.Type) []field {
	var fs []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !sf.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		fs = append(fs, field{name: name, index: i, required: sf.Tag.Get("kubebake") == "required"})
	}
	return fs
}

// decode fills v from n. path is v's field path, key the position of the key that introduced
// it (the item itself for list items, the document start for the root).
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, key Pos) {
	if d.budget--; d.budget < 0 {
		if d.budget == -1 {
			d.problem(nodePos(n), path, "the document is too large or expands too many aliases", "write the recipe out without deep alias chains")
		}
		return
	}
	valPos := nodePos(n)
	n = d.resolve(n)
	if n == nil || n.Kind == yaml.AliasNode {
		d.problem(valPos, path, "alias points nowhere", "define the anchor (&name) before using *name")
		return
	}
	d.pos[path] = FieldPos{Key: key, Value: valPos}

	if v.Kind() == reflect.Pointer {
		// An optional section written with nothing under it ("dns:") is present but empty, so
		// that its required fields are reported; other null pointers stay nil.
		if isNull(n) && v.Type().Elem().Kind() != reflect.Struct {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}

	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path, key, valPos)
	case reflect.Slice:
		d.decodeSlice(n, v, path, valPos)
	case reflect.Map:
		d.decodeMap(n, v, path, valPos)
	case reflect.String:
		switch {
		case n.Kind != yaml.ScalarNode:
			d.problem(valPos, path, "want a string, got "+describe(n), "write a single value on the same line as the key")
		case isNull(n):
			v.SetString("")
		default:
			// Numbers keep their text: "version: 1.30" is the string "1.30", not 1.3.
			v.SetString(n.Value)
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.problem(valPos, path, "want true or false, got "+describe(n), "write true or false")
			return
		}
		b, _ := strconv.ParseBool(strings.ToLower(n.Value))
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			d.problem(valPos, path, "want a whole number, got "+describe(n), "write a number such as 4")
			return
		}
		v.SetInt(i)
	default:
		// A schema type the decoder does not know is a programming error, not the user's.
		panic(fmt.Sprintf("recipes: cannot decode into %s at %s", v.Type(), path))
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string, key, valPos Pos) {
	if isNull(n) {
		// "base:" with nothing under it: present but empty; required fields are reported.
		d.missing(v.Type(), map[string]bool{}, path, key)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.problem(valPos, path, "want a mapping (key: value lines), got "+describe(n), "put the fields on indented lines under the key")
		return
	}
	fields := structFields(v.Type())
	byName := map[string]field{}
	for _, f := range fields {
		byName[f.name] = f
	}
	seen := map[string]bool{}
	merged := d.eachPair(n, path, func(k *yaml.Node, val *yaml.Node) {
		fp := fieldPath(path, k.Value)
		f, ok := byName[k.Value]
		if !ok {
			names := make([]string, len(fields))
			for i, f := range fields {
				names[i] = f.name
			}
			d.problem(nodePos(k), fp, "unknown field", suggest(k.Value, names))
			return
		}
		seen[k.Value] = true
		d.decode(val, v.Field(f.index), fp, nodePos(k))
	})
	if !merged { // a refused merge key already explains the fields it would have brought
		d.missing(v.Type(), seen, path, key)
	}
}

// missing reports required fields that were not written, at the parent mapping's key.
func (d *decoder) missing(t reflect.Type, seen map[string]bool, path string, at Pos) {
	for _, f := range structFields(t) {
		if f.required && !seen[f.name] {
			fp := fieldPath(path, f.name)
			fix := "add " + f.name + ":"
			if ex, ok := fieldExamples[schemaPath(fp)]; ok {
				fix = "add " + f.name + ": " + ex
			}
			if path != "" {
				fix += " under " + path
			}
			d.problem(at, fp, "missing required field", fix)
		}
	}
}

// schemaPath drops list indexes: "kubernetes.components[3].name" -> "kubernetes.components[].name".
func schemaPath(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] == '[' {
			if j := strings.IndexByte(path[i:], ']'); j > 0 {
				if _, err := strconv.Atoi(path[i+1 : i+j]); err == nil {
					b.WriteString("[]")
					i += j
					continue
				}
			}
		}
		b.WriteByte(path[i])
	}
	return b.String()
}

// fieldExamples completes "add ..." fixes for required fields.
var fieldExamples = map[string]string{
	"apiVersion":                   APIVersion,
	"kind":                         KindRecipe,
	"name":                         "my-node-image",
	"base":                         "{distro: debian, release: bookworm, packages: [...]}",
	"base.distro":                  "debian",
	"base.release":                 "bookworm",
	"kubernetes":                   `{version: "1.35", components: [...]}`,
	"kubernetes.version":           `"1.35"`,
	"kubernetes.components":        "[{name: kubelet}, ...]",
	"kubernetes.components[].name": "kubelet",
	"kubernetes.source.type":       "gomod",
	"etcd":                         `{version: "3.6"}`,
	"etcd.version":                 `"3.6"`,
	"etcd.source.type":             "gomod",
	"cni":                          `{version: "1.9", plugins: [loopback, bridge, host-local, portmap]}`,
	"cni.version":                  `"1.9"`,
	"cni.source.type":              "gomod",
	"podNetwork.name":              "flannel",
	"podNetwork.version":           `"0.28"`,
	"podNetwork.source.type":       "gomod",
	"dns.name":                     "coredns",
	"dns.version":                  `"1.15"`,
	"dns.source.type":              "gomod",
	"images[].name":                "my-agent",
	"images[].source.type":         "gomod",
	"roles[].name":                 "master",
	"roles[].units":                "[kubelet.service]",
	"mirrors[].prefix":             "https://dl.k8s.io/",
	"mirrors[].replacement":        "https://mirror.example.internal/k8s/",
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string, valPos Pos) {
	if isNull(n) {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if n.Kind != yaml.SequenceNode {
		fix := `write one "- item" per line, or [a, b]`
		if n.Kind == yaml.ScalarNode {
			fix = "write [" + n.Value + "] or one \"- item\" per line"
		}
		d.problem(valPos, path, "want a list, got "+describe(n), fix)
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), indexPath(path, i), nodePos(item))
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string, valPos Pos) {
	if isNull(n) {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if n.Kind != yaml.MappingNode {
		d.problem(valPos, path, "want a mapping (key: value lines), got "+describe(n), "write one \"key: value\" per indented line")
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("recipes: map keys must be strings")
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	d.eachPair(n, path, func(k, val *yaml.Node) {
		kp := keyPath(path, k.Value)
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, e, kp, nodePos(k))
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
	})
	v.Set(m)
}

// eachPair calls fn for each key/value of a mapping, refusing duplicate keys, merge keys and
// keys that are not plain scalars (yaml.v3 accepts all three into a Node without a word).
// It reports whether the mapping had a merge key.
func (d *decoder) eachPair(n *yaml.Node, path string, fn func(k, v *yaml.Node)) (merged bool) {
	first := map[string]Pos{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := d.resolve(n.Content[i]), n.Content[i+1]
		kpos := nodePos(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			d.problem(kpos, path, "a key must be a plain name, got "+describeKey(k), "write key: value")
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.problem(kpos, fieldPath(path, "<<"), "merge keys (<<) are not supported in recipes", "write the fields out")
			merged = true
			continue
		}
		if p, dup := first[k.Value]; dup {
			d.problem(kpos, fieldPath(path, k.Value), fmt.Sprintf("duplicate key, first written at line %d", p.Line), "keep only one")
			continue
		}
		first[k.Value] = kpos
		fn(k, val)
	}
	return merged
}

func describeKey(n *yaml.Node) string {
	if n == nil {
		return "an alias to nothing"
	}
	return describe(n)
}

// suggest proposes the closest known name for a misspelt one, or lists the known names.
func suggest(got string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		if strings.EqualFold(k, got) {
			return "did you mean " + strconv.Quote(k) + "?"
		}
		if dd := levenshtein(strings.ToLower(got), strings.ToLower(k)); dd < bestD {
			best, bestD = k, dd
		}
	}
	limit := 2
	if len(got) > 9 {
		limit = len(got) / 3
	}
	if best != "" && bestD <= limit {
		return "did you mean " + strconv.Quote(best) + "?"
	}
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	return "known fields here: " + strings.Join(sorted, ", ")
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 1 << 20
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
