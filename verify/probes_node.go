package verify

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/kubebake/kubebake/internal/shell"
	"github.com/kubebake/kubebake/recipes"
)

func moduleProbes(m string) []Probe {
	// The module's name goes into paths and grep patterns: each one is quoted whole, and the
	// name is a literal inside the patterns.
	sysModule := shell.Quote("/sys/module/" + m)
	lit := regexp.QuoteMeta(m)
	loaded := Probe{
		Name:     "module/" + m + "/loaded",
		Expected: "loaded, listed in /usr/lib/modules-load.d",
		Script: fmt.Sprintf(`if [ -d %[1]s ]; then echo loaded=yes; else echo loaded=no; fi
for f in /usr/lib/modules-load.d/*.conf /etc/modules-load.d/*.conf /run/modules-load.d/*.conf; do
  [ -f "$f" ] && grep -qxE %[2]s "$f" && echo "conf=$f"
done
true`, sysModule, shell.Quote("[[:space:]]*"+lit+"[[:space:]]*")),
		Units: []string{"systemd-modules-load.service"},
		Eval: func(o Output) (string, bool) {
			kv := o.KV()
			var usr []string
			for _, l := range o.Lines() {
				if f, ok := strings.CutPrefix(l, "conf="); ok && strings.HasPrefix(f, "/usr/lib/modules-load.d/") {
					usr = append(usr, f)
				}
			}
			got := "not loaded"
			if kv["loaded"] == "yes" {
				got = "loaded"
			}
			if len(usr) > 0 {
				got += ", listed in " + strings.Join(usr, ", ")
			} else {
				got += ", not in /usr/lib/modules-load.d"
			}
			return got, kv["loaded"] == "yes" && len(usr) > 0
		},
	}
	before := Probe{
		Name:     "module/" + m + "/before-sysctl",
		Expected: "inserted by systemd-modules-load before systemd-sysctl started",
		Script: fmt.Sprintf(`echo "modload=$(systemctl show -p ActiveEnterTimestampMonotonic --value systemd-modules-load.service)"
echo "modresult=$(systemctl show -p Result --value systemd-modules-load.service)"
echo "sysctl=$(systemctl show -p ExecMainStartTimestampMonotonic --value systemd-sysctl.service)"
if [ -d %[1]s ] && ! grep -q %[2]s /proc/modules; then echo builtin=yes; fi
grep -E %[3]s "$KB/journal" | sed 's/^[^]]*\] [^ ]* //; s/^/journal=/'
true`, sysModule, shell.Quote("^"+lit+" "),
			shell.Quote(`systemd-modules-load\[[0-9]+\]: .*(Inserted module|already loaded|built.?in).*'`+lit+`'`)),
		Prelude: journalPrelude,
		Units:   []string{"systemd-modules-load.service", "systemd-sysctl.service"},
		Eval: func(o Output) (string, bool) {
			kv := o.KV()
			modload, _ := strconv.ParseInt(kv["modload"], 10, 64)
			sysctl, _ := strconv.ParseInt(kv["sysctl"], 10, 64)
			var journal []string
			for _, l := range o.Lines() {
				if v, ok := strings.CutPrefix(l, "journal="); ok {
					journal = append(journal, v)
				}
			}
			if kv["builtin"] == "yes" {
				return "built into the kernel", true
			}
			if len(journal) == 0 {
				return "not loaded by systemd-modules-load (no journal entry)", false
			}
			if kv["modresult"] != "success" {
				return "systemd-modules-load result " + orNone(kv["modresult"]), false
			}
			if modload == 0 || sysctl == 0 {
				return fmt.Sprintf("no timestamps (modules-load %d, sysctl %d)", modload, sysctl), false
			}
			got := fmt.Sprintf("%s; modules-load done at %.3fs, sysctl started at %.3fs", journal[0], float64(modload)/1e6, float64(sysctl)/1e6)
			return got, modload <= sysctl
		},
	}
	return []Probe{loaded, before}
}

// journalPrelude saves this boot's journal once for every probe that reads it.
const journalPrelude = `journalctl -b --no-pager -q -o short-monotonic > "$KB/journal"`

func storageProbe(runtime, driver string, running bool) Probe {
	if runtime == "docker" {
		if driver == "" {
			driver = "overlay2"
		}
		if !running {
			return Probe{
				Name:     "runtime/storage",
				Expected: "docker configured for " + driver + " (docker does not run on this role)",
				Script:   `grep -ho '"storage-driver"[^,}]*' /etc/docker/daemon.json 2>/dev/null | tr -d ' "' | sed 's/^storage-driver:/driver=/'; true`,
				Eval: func(o Output) (string, bool) {
					d := o.KV()["driver"]
					return "configured: " + orNone(d), d == driver
				},
			}
		}
		return Probe{
			Name:     "runtime/storage",
			Expected: "docker storage driver " + driver,
			Script:   "timeout 180 docker info --format 'driver={{.Driver}}'",
			Units:    []string{"docker.service"},
			Eval: func(o Output) (string, bool) {
				d := o.KV()["driver"]
				if d == "" {
					return "no answer: " + firstLineOf(o.Text), false
				}
				return d, d == driver
			},
		}
	}
	if driver == "" {
		driver = "overlayfs"
	}
	// Every snapshotter setting of the effective config, with its TOML section: containerd
	// 1.7 also dumps each runtime's own snapshotter, "" when it inherits the CRI default.
	script := `timeout 180 containerd config dump 2>/dev/null | awk '/^[[:space:]]*\[/ {s=$1} /^[[:space:]]*snapshotter[[:space:]]*=/ {v=$0; sub(/^[^=]*=[[:space:]]*/, "", v); print "cfg_snapshotter=" v "@" s}' | sort -u
true`
	expected := "containerd configured for " + driver + " (containerd does not run on this role)"
	if running {
		script = "timeout 120 ctr plugins ls 2>&1 | awk '$1 ~ /snapshotter/ {print \"plugin_\" $2 \"=\" $NF}'\n" + script
		expected = "containerd snapshotter " + driver + " (plugin ok, CRI uses it)"
	}
	return Probe{
		Name:     "runtime/storage",
		Expected: expected,
		Script:   script,
		Units:    []string{"containerd.service"},
		Eval: func(o Output) (string, bool) {
			kv := o.KV()
			cfg, ok := judgeSnapshotters(o.Lines(), driver)
			got := "configured: " + orNone(strings.Join(cfg, ","))
			if running {
				plugin := kv["plugin_"+driver]
				got = fmt.Sprintf("plugin %s: %s; %s", driver, orNone(plugin), got)
				ok = ok && plugin == "ok"
			}
			return got, ok
		},
	}
}

// judgeSnapshotters reads the probe's "cfg_snapshotter=VALUE@[SECTION]" lines: every value
// must be driver, except that a runtime's own setting may be empty (it inherits the CRI
// default), and at least one must name driver. It returns the values for the report.
func judgeSnapshotters(lines []string, driver string) (values []string, ok bool) {
	seen := map[string]bool{}
	named := false
	ok = true
	for _, l := range lines {
		rest, found := strings.CutPrefix(l, "cfg_snapshotter=")
		if !found {
			continue
		}
		v, section, _ := strings.Cut(rest, "@")
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch {
		case v == driver:
			named = true
		case v == "" && strings.Contains(section, "runtime"):
			continue // a runtime that inherits the default says nothing of its own
		default:
			ok = false
		}
		shown := orNone(v)
		if v != driver && section != "" {
			shown += " in " + section
		}
		if !seen[shown] {
			seen[shown] = true
			values = append(values, shown)
		}
	}
	return values, ok && named
}

// imagesPrelude lists containerd's images in the kubelet's namespace once for every image
// check: REF TYPE DIGEST SIZE PLATFORMS LABELS. It first waits (up to 5 minutes) while the
// import unit still runs: a lone joining node's checks may start while it imports (settle
// does not wait for its role's units), and a listing then misses the images not imported yet.
const imagesPrelude = `i=0
while [ "$(systemctl show -p ActiveState --value ` + recipes.ImagesUnit + `)" = activating ] && [ $i -lt 150 ]; do sleep 2; i=$((i + 1)); done
timeout 120 ctr --namespace k8s.io images ls > "$KB/images" 2>&1 || echo "ctr-failed: exit $?" >> "$KB/images"`

// imageProbe: a baked image is in containerd under the lock's name, at the lock's digest (the
// kubelet finds it by that name and pulls nothing).
func imageProbe(img Image) Probe {
	return Probe{
		Name:     "image/" + img.Name,
		Expected: img.Ref + " in containerd (k8s.io) at " + img.Digest,
		Script: "awk -v r=" + shell.Quote(awkLiteral(img.Ref)) + ` '$1 == r {print "digest=" $3}' "$KB/images"` + "\n" +
			`grep -m 1 '^ctr-failed' "$KB/images" || true`,
		Prelude: imagesPrelude,
		Units:   []string{recipes.ImagesUnit, "containerd.service"},
		Eval: func(o Output) (string, bool) {
			kv := o.KV()
			d, failed := kv["digest"], ""
			for _, l := range o.Lines() {
				if strings.HasPrefix(l, "ctr-failed") {
					failed = " (ctr images ls failed: " + l + ")"
				}
			}
			switch {
			case d == "":
				return "not in containerd" + failed, false
			case d != img.Digest:
				return "digest " + d, false
			}
			return img.Ref + " at " + d, true
		},
	}
}

func cniProbe(p string) Probe {
	path := "/opt/cni/bin/" + p
	return Probe{
		Static:   true,
		Name:     "cni/" + p,
		Expected: path + " executable",
		Script:   fmt.Sprintf("if [ -x %[1]s ] && [ -f %[1]s ]; then echo present; else echo missing; fi", shell.Quote(path)),
		Eval: func(o Output) (string, bool) {
			g := strings.TrimSpace(o.Text)
			return g, g == "present"
		},
	}
}

func toolProbe(t string) Probe {
	return Probe{
		Static:   true,
		Name:     "tool/" + t,
		Expected: "on the services' PATH",
		Script:   "command -v " + shell.Quote(t),
		Eval: func(o Output) (string, bool) {
			g := strings.TrimSpace(o.Text)
			if o.Exit != 0 || g == "" {
				return "missing", false
			}
			return g, true
		},
	}
}

// unitProps are the properties the unit checks read.
const unitProps = "-p Id -p LoadState -p ActiveState -p SubState -p Result -p Type -p ConditionResult -p ConditionTimestampMonotonic -p ExecMainStatus -p ExecMainExitTimestampMonotonic -p NRestarts"

// unitsPrelude saves the properties of every unit (one block each, in order) and the pending
// jobs: one systemctl call each instead of two per unit.
func unitsPrelude(units []string) string {
	q := make([]string, len(units))
	for i, u := range units {
		q[i] = shell.Quote(u)
	}
	return "systemctl show " + unitProps + " " + strings.Join(q, " ") + " > \"$KB/units\"\n" +
		"systemctl list-jobs --no-legend --plain --no-pager > \"$KB/jobs\""
}

// unitScript prints the n-th unit's block (1-based) and its pending job ("Job=start/waiting").
func unitScript(u string, n int) string {
	return fmt.Sprintf("awk -v n=%d 'BEGIN {RS=\"\"} NR == n' \"$KB/units\"\n", n) +
		"awk -v u=" + shell.Quote(awkLiteral(u)) + " '$2 == u {print \"Job=\" $3 \"/\" $4}' \"$KB/jobs\""
}

// awkLiteral escapes s for awk -v, which reads escape sequences in the value: each backslash is
// doubled so that the variable holds s itself.
func awkLiteral(s string) string { return strings.ReplaceAll(s, `\`, `\\`) }

func unitProbes(s Spec) []Probe {
	mine := map[string]bool{}
	for _, u := range s.Roles[s.Role] {
		mine[u] = true
	}
	mayWait := s.LoneMinion
	others := map[string]bool{}
	for r, us := range s.Roles {
		if r == s.Role {
			continue
		}
		for _, u := range us {
			if !mine[u] {
				others[u] = true
			}
		}
	}
	all := append(sortedKeys(mine), sortedKeys(others)...)
	prelude := unitsPrelude(all)
	index := map[string]int{}
	for i, u := range all {
		index[u] = i + 1
	}
	var ps []Probe
	for _, u := range sortedKeys(mine) {
		exp := "active (oneshot: exited successfully)"
		if mayWait {
			exp = "active, exited successfully, or waiting for a master (activating/auto-restart); never failed"
		}
		ps = append(ps, Probe{
			Name:     "unit/" + u + "/active",
			Expected: exp,
			Script:   unitScript(u, index[u]),
			Prelude:  prelude,
			Units:    []string{u},
			Eval: func(o Output) (string, bool) {
				return judgeOwnUnit(o.KV(), mayWait)
			},
		})
	}
	for _, u := range sortedKeys(others) {
		ps = append(ps, Probe{
			Name:     "unit/" + u + "/skipped",
			Expected: "skipped by its role condition (ConditionResult=no), not failed",
			Script:   unitScript(u, index[u]),
			Prelude:  prelude,
			Units:    []string{u},
			Eval: func(o Output) (string, bool) {
				kv := o.KV()
				got := unitState(kv)
				if ts := kv["ConditionTimestampMonotonic"]; ts == "" || ts == "0" {
					got += " (never started)"
				}
				return got, kv["LoadState"] == "loaded" && kv["ConditionResult"] == "no" &&
					kv["ActiveState"] == "inactive" && kv["Result"] == "success" && kv["Job"] == ""
			},
		})
	}
	return ps
}

func unitState(kv map[string]string) string {
	got := fmt.Sprintf("%s/%s", orNone(kv["ActiveState"]), orNone(kv["SubState"]))
	if kv["LoadState"] != "loaded" {
		got = "load state " + orNone(kv["LoadState"]) + ", " + got
	}
	got += " result=" + orNone(kv["Result"]) + " condition=" + orNone(kv["ConditionResult"])
	if kv["NRestarts"] != "" && kv["NRestarts"] != "0" {
		got += " restarts=" + kv["NRestarts"]
	}
	if kv["Job"] != "" {
		got += " job=" + kv["Job"]
	}
	return got
}

// judgeOwnUnit: a unit of the node's own role must have run: active (running, or a oneshot
// with RemainAfterExit), or a oneshot that exited 0; on a lone minion it may still be trying.
func judgeOwnUnit(kv map[string]string, mayWait bool) (string, bool) {
	got := unitState(kv)
	if kv["LoadState"] != "loaded" {
		return got, false
	}
	if kv["ConditionResult"] == "no" && kv["ConditionTimestampMonotonic"] != "0" && kv["Job"] == "" {
		return got + " (its condition failed: skipped on its own role)", false
	}
	switch kv["ActiveState"] {
	case "active":
		return got, true
	case "inactive":
		if strings.HasPrefix(kv["Job"], "start/") {
			return got + " (waiting to start)", mayWait
		}
		ran := kv["ExecMainExitTimestampMonotonic"] != "" && kv["ExecMainExitTimestampMonotonic"] != "0"
		return got, kv["Type"] == "oneshot" && kv["Result"] == "success" && kv["ExecMainStatus"] == "0" && ran
	case "activating", "reloading":
		return got + " (still starting)", mayWait
	}
	return got, false
}

func failedUnitsProbe() Probe {
	return Probe{
		Name:     "systemd/failed-units",
		Expected: "none",
		Script:   "systemctl list-units --failed --plain --no-legend --no-pager | awk '{print $1}'",
		Eval: func(o Output) (string, bool) {
			ls := o.Lines()
			if len(ls) == 0 {
				return "none", true
			}
			return strings.Join(ls, " "), false
		},
	}
}

// FailedUnitsIn returns the unit names the failed-units check reported.
func FailedUnitsIn(c Check) []string {
	if c.Name != "systemd/failed-units" || c.Pass {
		return nil
	}
	return strings.Fields(c.Got)
}

// AdminKubeconfig is where the master bootstrap writes the admin kubeconfig.
const AdminKubeconfig = "/etc/kubernetes/admin.conf"

// ReadyzCommand asks the API server whether it is ready, with the admin kubeconfig.
const ReadyzCommand = "timeout 120 kubectl --kubeconfig " + AdminKubeconfig + " get --raw /readyz"

func readyzProbe() Probe {
	return Probe{
		Name:     "master/apiserver-readyz",
		Expected: "ok",
		Script:   ReadyzCommand + " 2>&1",
		Units:    []string{"kubelet.service"},
		Eval: func(o Output) (string, bool) {
			g := strings.TrimSpace(o.Text)
			if len(g) > 200 {
				g = "..." + g[len(g)-200:]
			}
			return orNone(g), o.Exit == 0 && g == "ok"
		},
	}
}
