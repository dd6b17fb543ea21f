package recipes

import (
	"sort"
	"strconv"
	"strings"
)

// Pos is a 1-based line and column in a recipe file. The zero Pos means "unknown" (a recipe
// built in Go, or a default the user never wrote).
type Pos struct {
	Line int `json:"line"`
	Col  int `json:"col"`
}

// IsZero reports whether the position is unknown.
func (p Pos) IsZero() bool { return p.Line == 0 }

// String gives "line:col".
func (p Pos) String() string { return strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Col) }

// location formats "file:line:col" (or just file, or nothing) as the prefix of a message.
func location(file string, p Pos) string {
	var b strings.Builder
	b.WriteString(file)
	if !p.IsZero() {
		if file != "" {
			b.WriteByte(':')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Problem is one parse error: where it is, which field, what is wrong and how to fix it.
// Its Error() is one line: `file:line:col: field.path: what is wrong; how to fix`.
type Problem struct {
	File string `json:"file"`
	Pos
	Field string `json:"field,omitempty"`
	Msg   string `json:"message"`
	Fix   string `json:"fix,omitempty"`
}

func (p Problem) Error() string {
	var b strings.Builder
	if loc := location(p.File, p.Pos); loc != "" {
		b.WriteString(loc)
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Fix != "" {
		b.WriteString("; ")
		b.WriteString(p.Fix)
	}
	return oneLine(b.String())
}

// ErrorList holds every problem found in one recipe, so that a user fixes them in one round
// instead of one per run. Error() prints one problem per line, sorted by position.
type ErrorList []Problem

func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, p := range l {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

func (l ErrorList) sort() {
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Line != l[j].Line {
			return l[i].Line < l[j].Line
		}
		return l[i].Col < l[j].Col
	})
}

// oneLine keeps messages on one line even when they quote user input with newlines.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\r", `\r`).Replace(s)
}

// Positions is the index from a field path to where the user wrote it. Paths use the YAML
// names: "kubernetes.components[2].version", `sysctls["net.ipv4.ip_forward"]`, "" is the
// document. Translations of older apiVersions rename paths so that they stay valid.
type Positions map[string]FieldPos

// FieldPos is where a field's key and its value start. For list items both are the item.
type FieldPos struct {
	Key   Pos `json:"key"`
	Value Pos `json:"value"`
}

// Has reports whether the user wrote the field (even with an empty value).
func (p Positions) Has(path string) bool {
	_, ok := p[path]
	return ok
}

// Of is the position to report a problem with the field's value: the value when written,
// else the key of the nearest written parent (a missing field points at its parent mapping).
func (p Positions) Of(path string) Pos {
	if fp, ok := p[path]; ok {
		return fp.Value
	}
	return p.parentKey(path)
}

// KeyOf is the position of the field's key when written, else of the nearest written parent.
// Findings about a whole section ("modules lacks overlay") point here.
func (p Positions) KeyOf(path string) Pos {
	if fp, ok := p[path]; ok {
		return fp.Key
	}
	return p.parentKey(path)
}

func (p Positions) parentKey(path string) Pos {
	for path != "" {
		path = ParentPath(path)
		if fp, ok := p[path]; ok {
			return fp.Key
		}
	}
	return Pos{}
}

// ParentPath strips the last element of a field path: "a.b[2]" -> "a.b", `a["x.y"]` -> "a",
// "a.b" -> "a", "a" -> "".
func ParentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		// A quoted map key may hold '[' or '.', so find the '[' that starts a valid element.
		for i := strings.LastIndexByte(path, '['); i >= 0; i = strings.LastIndexByte(path[:i], '[') {
			elem := path[i+1 : len(path)-1]
			if _, err := strconv.Atoi(elem); err == nil {
				return path[:i]
			}
			if _, err := strconv.Unquote(elem); err == nil && strings.HasPrefix(elem, `"`) {
				return path[:i]
			}
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// fieldPath joins a parent path and a field name.
func fieldPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func indexPath(parent string, i int) string { return parent + "[" + strconv.Itoa(i) + "]" }

func keyPath(parent, key string) string { return parent + "[" + strconv.Quote(key) + "]" }

// fmtList renders names for messages: "a, b and c".
func fmtList(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
