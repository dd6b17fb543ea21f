package verify

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Check is one promise verified inside a booted node.
type Check struct {
	Name     string `json:"name"`
	Expected string `json:"expected"`
	Got      string `json:"got"`
	Pass     bool   `json:"pass"`
	// Info checks report a figure (first-boot time) and never fail.
	Info bool `json:"info,omitempty"`
	// Units are the systemd units whose journal explains a failure of this check.
	Units []string `json:"units,omitempty"`
}

// Probe is a check before it runs: a shell snippet for the guest and a pure function that
// judges the snippet's output. Keeping the judgement pure lets tests feed canned outputs.
type Probe struct {
	Name     string
	Expected string
	// Script is POSIX shell run as root in the guest; its stdout and stderr are captured
	// together and its exit status is passed to Eval.
	Script string
	Eval   func(out Output) (got string, pass bool)
	Info   bool
	Units  []string
}

// Output is what a probe's script produced.
type Output struct {
	Text string
	Exit int
}

// Lines are the non-empty lines of the output, trimmed.
func (o Output) Lines() []string {
	var ls []string
	for _, l := range strings.Split(o.Text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// KV reads "key=value" lines; later keys win. Lines without '=' are ignored.
func (o Output) KV() map[string]string {
	kv := map[string]string{}
	for _, l := range o.Lines() {
		if k, v, ok := strings.Cut(l, "="); ok {
			kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return kv
}

// Evaluate judges each probe against its output. A probe without output (the script never
// reached it) fails with that said.
func Evaluate(probes []Probe, outputs map[string]Output) []Check {
	checks := make([]Check, 0, len(probes))
	for _, p := range probes {
		c := Check{Name: p.Name, Expected: p.Expected, Info: p.Info, Units: p.Units}
		out, ok := outputs[p.Name]
		switch {
		case !ok:
			c.Got = "not run (the check script stopped before it)"
		default:
			c.Got, c.Pass = p.Eval(out)
		}
		if p.Info {
			c.Pass = true
		}
		checks = append(checks, c)
	}
	return checks
}

// Script markers that frame each probe's output.
const (
	beginMark = "@@KUBEBAKE-BEGIN "
	endMark   = "@@KUBEBAKE-END "
)

// systemdPath is the PATH systemd gives services (merged /usr): the tools the kubelet and the
// runtime find are the ones that count.
const systemdPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BuildScript joins the probes' snippets into one script whose output ParseScriptOutput splits
// again: one SSH round trip for every check.
func BuildScript(probes []Probe) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# kubebake verify checks\nexport LC_ALL=C PATH=" + systemdPath + "\n")
	b.WriteString("exec 2>&1\n")
	for i, p := range probes {
		fmt.Fprintf(&b, "echo '%s%d'\n(\n%s\n) </dev/null\nprintf '\\n%s%d %%d\\n' \"$?\"\n", beginMark, i, strings.TrimSpace(p.Script), endMark, i)
	}
	return b.String()
}

// ParseScriptOutput splits BuildScript's output back into one Output per probe name.
func ParseScriptOutput(probes []Probe, text string) map[string]Output {
	outs := map[string]Output{}
	lines := strings.Split(text, "\n")
	cur := -1
	var buf []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, beginMark):
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, beginMark)))
			if err == nil && n >= 0 && n < len(probes) {
				cur, buf = n, nil
			}
		case strings.HasPrefix(l, endMark) && cur >= 0:
			f := strings.Fields(strings.TrimPrefix(l, endMark))
			if len(f) == 2 {
				if n, _ := strconv.Atoi(f[0]); n == cur {
					exit, _ := strconv.Atoi(f[1])
					// printf put one newline before the end mark.
					if len(buf) > 0 && buf[len(buf)-1] == "" {
						buf = buf[:len(buf)-1]
					}
					outs[probes[cur].Name] = Output{Text: strings.Join(buf, "\n"), Exit: exit}
					cur = -1
					continue
				}
			}
			buf = append(buf, l)
		case cur >= 0:
			buf = append(buf, l)
		}
	}
	return outs
}

// Failed returns the checks that failed.
func Failed(checks []Check) []Check {
	var f []Check
	for _, c := range checks {
		if !c.Pass {
			f = append(f, c)
		}
	}
	return f
}

// UnitsToExplain lists, sorted and once each, the units named by failed checks.
func UnitsToExplain(checks []Check) []string {
	seen := map[string]bool{}
	for _, c := range Failed(checks) {
		for _, u := range c.Units {
			seen[u] = true
		}
	}
	us := make([]string, 0, len(seen))
	for u := range seen {
		us = append(us, u)
	}
	sort.Strings(us)
	return us
}
