package manifest

import (
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/kubebake/kubebake/internal/filemode"
)

// Text renders the changes compactly, one line per change under a header per section:
// "+" added, "-" removed, "~" changed, with old -> new for what changed. Equal builds give
// "no changes".
func (c *Changes) Text() string {
	if c.Empty() {
		return "no changes\n"
	}
	var b strings.Builder
	for _, l := range c.headline() {
		fmt.Fprintf(&b, "%s: %s -> %s\n", l.name, l.old, l.new)
	}
	if c.Kernel != nil {
		fmt.Fprintf(&b, "kernel: %s -> %s\n", kernelString(c.Kernel.Old), kernelString(c.Kernel.New))
	}
	for _, s := range c.sections() {
		fmt.Fprintf(&b, "%s: %s\n", s.name, s.counts())
		w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, r := range s.rows {
			fmt.Fprintf(w, "  %s %s\t%s\n", marks[r.change], r.name, r.text())
		}
		w.Flush()
	}
	return b.String()
}

// Markdown renders the changes for release notes: a "###" heading and a name | old | new
// table per section. Equal builds give "No changes."
func (c *Changes) Markdown() string {
	if c.Empty() {
		return "No changes.\n"
	}
	var parts []string
	if head := c.headline(); len(head) > 0 {
		var b strings.Builder
		b.WriteString("### Recipe and lock\n\n| name | old | new |\n|---|---|---|\n")
		for _, l := range head {
			old, new := l.old, l.new
			if l.code {
				old, new = "`"+old+"`", "`"+new+"`"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", cell(l.name), cell(old), cell(new))
		}
		parts = append(parts, b.String())
	}
	if c.Kernel != nil {
		parts = append(parts, fmt.Sprintf("### Kernel\n\n| name | old | new |\n|---|---|---|\n| kernel | %s | %s |\n",
			cell(kernelString(c.Kernel.Old)), cell(kernelString(c.Kernel.New))))
	}
	for _, s := range c.sections() {
		var b strings.Builder
		fmt.Fprintf(&b, "### %s\n\n| %s | old | new |\n|---|---|---|\n", s.title, s.key)
		for _, r := range s.rows {
			old, new := r.side(false), r.side(true)
			switch r.change {
			case Added:
				old = "(added)"
			case Removed:
				new = "(removed)"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", cell(r.name), cell(old), cell(new))
		}
		parts = append(parts, b.String())
	}
	return strings.Join(parts, "\n")
}

var marks = map[string]string{Added: "+", Removed: "-", Changed: "~"}

// cell makes a value safe inside a markdown table row.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// headLine is one value of the build as a whole that moved.
type headLine struct {
	name, old, new string
	code           bool // a hash: `code` in markdown
}

func (c *Changes) headline() []headLine {
	var out []headLine
	if c.Recipe != nil {
		out = append(out, headLine{name: "recipe", old: c.Recipe.Old, new: c.Recipe.New})
	}
	if c.LockHash != nil {
		out = append(out, headLine{name: "lock", old: shortHash(c.LockHash.Old), new: shortHash(c.LockHash.New), code: true})
	}
	return out
}

// section is one list of changes as rendered.
type section struct {
	name  string // text header: "artifacts"
	title string // markdown heading: "Artifacts"
	key   string // what the first column is: name or path
	rows  []row
}

func (s section) counts() string {
	n := map[string]int{}
	for _, r := range s.rows {
		n[r.change]++
	}
	var parts []string
	for _, c := range []string{Added, Removed, Changed} {
		if n[c] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[c], c))
		}
	}
	return strings.Join(parts, ", ")
}

// row is one change: its name and the details that describe the entry (added, removed) or
// that differ (changed).
type row struct {
	name, change string
	details      []detail
}

// detail is one labelled value of an entry before and after; label "" for the main value
// (a version). Equal old and new show once: context for a change beside it.
type detail struct {
	label, old, new string
	code            bool
}

// text is the row's details for the text rendering: "v1.35.4 -> v1.35.5  sha256 a -> b".
func (r row) text() string {
	var parts []string
	for _, d := range r.details {
		var v string
		switch {
		case r.change == Added:
			v = d.new
		case r.change == Removed || d.old == d.new:
			v = d.old
		default:
			v = d.old + " -> " + d.new
		}
		parts = append(parts, labelled(d.label, v))
	}
	return strings.Join(parts, "  ")
}

// side is the row's details before (new false) or after, for a markdown cell.
func (r row) side(new bool) string {
	var parts []string
	for _, d := range r.details {
		v := d.old
		if new {
			v = d.new
		}
		if d.code {
			v = "`" + v + "`"
		}
		parts = append(parts, labelled(d.label, v))
	}
	return strings.Join(parts, ", ")
}

func labelled(label, v string) string {
	if label == "" {
		return v
	}
	return label + " " + v
}

// sections are the lists that have changes, in a fixed order.
func (c *Changes) sections() []section {
	var out []section
	add := func(name, title, key string, rows []row) {
		if len(rows) > 0 {
			out = append(out, section{name: name, title: title, key: key, rows: rows})
		}
	}
	var rows []row
	for _, a := range c.Artifacts {
		r := row{name: a.Name, change: a.Change}
		o, n := orEmpty(a.Old), orEmpty(a.New)
		r.details = append(r.details, detail{old: o.Version, new: n.Version},
			detail{label: "sha256", old: shortHash(o.SHA256), new: shortHash(n.SHA256), code: true})
		if slices.Contains(a.Fields, "kind") {
			r.details = append(r.details, detail{label: "kind", old: o.Kind, new: n.Kind})
		}
		rows = append(rows, r)
	}
	add("artifacts", "Artifacts", "name", rows)

	rows = nil
	for _, p := range c.Packages {
		r := row{name: p.Name, change: p.Change}
		o, n := orEmpty(p.Old), orEmpty(p.New)
		r.details = append(r.details, detail{old: o.Version, new: n.Version})
		if slices.Contains(p.Fields, "architecture") {
			r.details = append(r.details, detail{label: "arch", old: o.Architecture, new: n.Architecture})
		}
		rows = append(rows, r)
	}
	add("packages", "Debian packages", "name", rows)

	rows = nil
	for _, f := range c.Files {
		rows = append(rows, row{name: f.Path, change: f.Change, details: fileDetails(f)})
	}
	add("files", "Node layer files", "path", rows)

	rows = nil
	for _, u := range c.Units {
		rows = append(rows, row{name: u.Name, change: u.Change, details: unitDetails(u)})
	}
	add("units", "Units", "name", rows)
	return out
}

// fileDetails: for a changed file what differs; for an added or removed one what it is.
func fileDetails(f FileChange) []detail {
	o, n := orEmpty(f.Old), orEmpty(f.New)
	all := []detail{
		{old: o.Type, new: n.Type},
		{label: "sha256", old: shortHash(o.SHA256), new: shortHash(n.SHA256), code: true},
		{label: "mode", old: octal(o.Mode), new: octal(n.Mode)},
		{label: "owner", old: fmt.Sprintf("%d:%d", o.UID, o.GID), new: fmt.Sprintf("%d:%d", n.UID, n.GID)},
		{label: "target", old: o.Target, new: n.Target},
	}
	if f.Change == Changed {
		var out []detail
		for i, name := range []string{"type", "content", "mode", "owner", "target"} {
			if slices.Contains(f.Fields, name) {
				out = append(out, all[i])
			}
		}
		return out
	}
	e := n
	if f.Change == Removed {
		e = o
	}
	out := []detail{all[0]}
	switch e.Type {
	case "symlink":
		out = append(out, all[4])
	case "file":
		out = append(out, all[2], all[1])
	default:
		out = append(out, all[2])
	}
	if e.UID != 0 || e.GID != 0 {
		out = append(out, all[3])
	}
	return out
}

// unitDetails: for a changed unit what differs; for an added or removed one its roles and
// whether it starts at boot.
func unitDetails(u UnitChange) []detail {
	o, n := orEmpty(u.Old), orEmpty(u.New)
	roles := func(x Unit) string {
		if s := roleSet(x.Roles); s != "" {
			return s
		}
		return "shared"
	}
	pick := func(b bool, yes, no string) string {
		if b {
			return yes
		}
		return no
	}
	all := []detail{
		{label: "roles", old: roles(o), new: roles(n)},
		{old: pick(o.Enabled, "enabled", "disabled"), new: pick(n.Enabled, "enabled", "disabled")},
		{old: pick(o.Foreign, "from a package", "from the layer"), new: pick(n.Foreign, "from a package", "from the layer")},
		{old: pick(o.Listed, "named by a role", "a dependency"), new: pick(n.Listed, "named by a role", "a dependency")},
	}
	if u.Change == Changed {
		var out []detail
		for i, name := range []string{"roles", "enabled", "foreign", "listed"} {
			if slices.Contains(u.Fields, name) {
				out = append(out, all[i])
			}
		}
		return out
	}
	return all[:2]
}

func kernelString(k Kernel) string {
	switch {
	case k.Release != "" && k.Version != "":
		return k.Release + " (" + k.Version + ")"
	case k.Release != "":
		return k.Release
	case k.Version != "":
		return k.Package + " " + k.Version
	}
	return "unknown"
}

// shortHash is the first 12 hex digits of a sha256, as kubebake prints them elsewhere.
func shortHash(h string) string {
	h = strings.TrimPrefix(h, "sha256:")
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// octal is a file mode as chmod takes it: 0644, 4755.
func octal(m fs.FileMode) string { return fmt.Sprintf("%04o", filemode.Unix(m)) }

// orEmpty is *p, or the zero value for the side an added or removed entry lacks.
func orEmpty[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
