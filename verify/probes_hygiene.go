package verify

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/kubebake/kubebake/internal/shell"
)

var machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

func machineIDProbe() Probe {
	return Probe{
		Name:     "hygiene/machine-id",
		Expected: "generated at this boot (the image has none)",
		Script: `echo "id=$(cat /etc/machine-id 2>/dev/null)"
echo "firstboot=$(systemctl show -p ConditionResult --value first-boot-complete.target)"
grep -F 'machine ID' "$KB/journal" | head -n 3 | sed 's/^/journal=/'
true`,
		Prelude: journalPrelude,
		Eval: func(o Output) (string, bool) {
			kv := o.KV()
			id := kv["id"]
			generated := kv["firstboot"] == "yes"
			for _, l := range o.Lines() {
				if v, ok := strings.CutPrefix(l, "journal="); ok && strings.Contains(v, "Initializing machine ID") {
					generated = true
				}
			}
			got := "machine-id " + orNone(id)
			if generated {
				got += ", first boot"
			} else {
				got += ", not a first boot (a machine-id was baked into the image)"
			}
			return got, machineIDRE.MatchString(id) && generated
		},
	}
}

func hostKeysProbe() Probe {
	return Probe{
		Name:     "hygiene/ssh-host-keys",
		Expected: "generated at this boot",
		Script: `echo "btime=$(awk '/^btime/ {print $2}' /proc/stat)"
for f in /etc/ssh/ssh_host_*_key; do [ -e "$f" ] && echo "key=$(stat -c %Y "$f") $f"; done
true`,
		Units: []string{"ssh.service"},
		Eval: func(o Output) (string, bool) {
			btime, _ := strconv.ParseInt(o.KV()["btime"], 10, 64)
			var old, fresh []string
			for _, l := range o.Lines() {
				v, ok := strings.CutPrefix(l, "key=")
				if !ok {
					continue
				}
				ts, path, _ := strings.Cut(v, " ")
				t, _ := strconv.ParseInt(ts, 10, 64)
				// A few seconds of slack for btime's rounding; a baked key is years older.
				if t+5 >= btime {
					fresh = append(fresh, path)
				} else {
					old = append(old, path)
				}
			}
			switch {
			case btime == 0:
				return "no boot time", false
			case len(old) > 0:
				return "older than this boot: " + strings.Join(old, " "), false
			case len(fresh) == 0:
				return "no host keys", false
			}
			return fmt.Sprintf("%d keys generated at this boot", len(fresh)), true
		},
	}
}

// secretRoots are where baked or leaked secrets would sit. Container content stores and the
// binary journal are left out of the file search (the journal is searched through journalctl).
var secretRoots = []string{"/etc", "/root", "/home", "/opt", "/srv", "/usr/local", "/var"}

// allowedSecretPrefixes hold secrets made or kept on purpose at first boot: the control
// plane's PKI and kubeconfigs (made from the user-data CA), the kubelet's credentials, etcd,
// and cloud-init's own root-only copy of the user-data.
var allowedSecretPrefixes = []string{
	"/etc/kubernetes/",
	"/var/lib/kubelet/",
	"/var/lib/etcd/",
	"/var/lib/cloud/instances/",
}

// keyMark is how every PEM private key begins or ends.
const keyMark = "PRIVATE KEY-----"

func secretsProbe(s Spec) Probe {
	var secrets []string
	for _, sec := range s.Secrets {
		if sec = strings.TrimSpace(sec); sec != "" && !strings.Contains(sec, "\n") {
			secrets = append(secrets, sec)
		}
	}
	pats := []string{"-e", shell.Quote(keyMark)}
	var perFile strings.Builder
	for i, sec := range secrets {
		pats = append(pats, "-e", shell.Quote(sec))
		fmt.Fprintf(&perFile, "  grep -qF -e %s \"$f\" && kinds=\"$kinds secret%d\"\n", shell.Quote(sec), i)
	}
	script := fmt.Sprintf(`echo "btime=$(awk '/^btime/ {print $2}' /proc/stat)"
grep -rlIsF %[1]s --exclude-dir=containerd --exclude-dir=docker --exclude-dir=journal %[2]s 2>/dev/null | while read -r f; do
  kinds=""
  grep -qF -e %[3]s "$f" && kinds="$kinds key"
%[4]s  printf 'file=%%s%%s\t%%s\n' "$(stat -c %%Y "$f")" "$kinds" "$f"
done
echo "journal=$(grep -cF %[1]s "$KB/journal")"
true`, strings.Join(pats, " "), shell.Join(secretRoots...), shell.Quote(keyMark), perFile.String())
	userData := map[string]bool{}
	for _, p := range s.UserDataPaths {
		userData[p] = true
	}
	allowed := func(path string) bool {
		if userData[path] {
			return true
		}
		for _, prefix := range allowedSecretPrefixes {
			if strings.HasPrefix(path, prefix) {
				return true
			}
		}
		return false
	}
	return Probe{
		Name:     "hygiene/no-secrets",
		Expected: "no private key older than this boot; user-data secrets only where user-data wrote them; none in the journal",
		Script:   script,
		Prelude:  journalPrelude,
		Eval: func(o Output) (string, bool) {
			kv := o.KV()
			btime, _ := strconv.ParseInt(kv["btime"], 10, 64)
			var problems []string
			for _, l := range o.Lines() {
				v, ok := strings.CutPrefix(l, "file=")
				if !ok {
					continue
				}
				meta, path, _ := strings.Cut(v, "\t")
				f := strings.Fields(meta)
				if len(f) == 0 || allowed(path) {
					continue
				}
				t, _ := strconv.ParseInt(f[0], 10, 64)
				for _, kind := range f[1:] {
					switch {
					case kind == "key" && btime > 0 && t < btime:
						problems = append(problems, "private key baked into the image: "+path)
					case strings.HasPrefix(kind, "secret"):
						problems = append(problems, "user-data secret copied to "+path)
					}
				}
			}
			if n, _ := strconv.Atoi(kv["journal"]); n > 0 {
				problems = append(problems, fmt.Sprintf("secret material in %d journal lines", n))
			}
			if btime == 0 {
				problems = append(problems, "no boot time")
			}
			sort.Strings(problems)
			if len(problems) == 0 {
				return "none found", true
			}
			if len(problems) > 5 {
				problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
			}
			return strings.Join(problems, "; "), false
		},
	}
}
