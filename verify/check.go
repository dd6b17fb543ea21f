package verify

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/kubebake/kubebake/internal/shell"
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
	// Static probes look at what the image holds, not at what the boot did: they may run
	// before the boot has settled.
	Static bool
	// Prelude, when set, runs once before every probe (probes sharing one prelude text share
	// its run) and leaves facts in files under $KB for the probes' scripts to read.
	Prelude string
}

// Output is what a probe's script produced.
type Output struct {
	Text string
	Exit int
	// Millis is how long the probe's script ran in the guest.
	Millis int
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

// ScriptParallel is how many probes run at once in the guest. Under TCG every process start
// costs a good fraction of a second; with two vCPUs, hashing and version runs overlap.
var ScriptParallel = 3

// BuildScript joins the probes into one script whose output ParseScriptOutput splits again:
// one SSH round trip for every check. Preludes (shared facts such as the journal or the units'
// properties, saved under $KB) run first, once each; then the probes run ScriptParallel at a
// time, each into its own file, and their outputs are printed in order.
func BuildScript(probes []Probe) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# kubebake verify checks\nexport LC_ALL=C PATH=" + systemdPath + "\n")
	b.WriteString("KB=$(mktemp -d /tmp/kubebake-verify.XXXXXX)\nexport KB\ntrap 'rm -rf \"$KB\"' EXIT\nexec 2>&1\n")
	seen := map[string]bool{}
	for _, p := range probes {
		if pre := strings.TrimSpace(p.Prelude); pre != "" && !seen[pre] {
			seen[pre] = true
			b.WriteString("(\n" + pre + "\n) </dev/null >/dev/null 2>&1\n")
		}
	}
	for i, p := range probes {
		// A quoted delimiter that no line of the script is: a value quoted into the script may
		// hold line breaks, and one of its lines must not end the here-document.
		script := strings.TrimSpace(p.Script)
		delim := shell.HeredocDelimiter(fmt.Sprintf("KUBEBAKE_PROBE_%d_EOF", i), script)
		fmt.Fprintf(&b, "cat > \"$KB/p%d.sh\" <<'%s'\n%s\n%s\n", i, delim, script, delim)
	}
	fmt.Fprintf(&b, `cat > "$KB/run-one" <<'KUBEBAKE_RUN_EOF'
i=$1
s=$(date +%%s%%N)
sh "$KB/p$i.sh" </dev/null >"$KB/p$i.out" 2>&1
echo $? "$(( ($(date +%%s%%N) - s) / 1000000 ))" >"$KB/p$i.rc"
KUBEBAKE_RUN_EOF
i=0; while [ $i -lt %[1]d ]; do echo $i; i=$((i+1)); done | xargs -P %[2]d -n 1 sh "$KB/run-one"
i=0
while [ $i -lt %[1]d ]; do
  echo '%[3]s'"$i"
  cat "$KB/p$i.out" 2>/dev/null
  printf '\n%[4]s%%s %%s\n' "$i" "$(cat "$KB/p$i.rc" 2>/dev/null || echo 255)"
  i=$((i+1))
done
`, len(probes), max(1, ScriptParallel), beginMark, endMark)
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
			if len(f) >= 2 {
				if n, _ := strconv.Atoi(f[0]); n == cur {
					exit, _ := strconv.Atoi(f[1])
					var ms int
					if len(f) >= 3 {
						ms, _ = strconv.Atoi(f[2])
					}
					// printf put one newline before the end mark.
					if len(buf) > 0 && buf[len(buf)-1] == "" {
						buf = buf[:len(buf)-1]
					}
					outs[probes[cur].Name] = Output{Text: strings.Join(buf, "\n"), Exit: exit, Millis: ms}
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
