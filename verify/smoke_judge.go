package verify

// Verdicts of the cluster smoke steps: pure functions on what kubectl and the nodes print,
// so that each is tested against canned output.

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Minimal views of the Kubernetes objects the steps read (kubectl -o json).
type k8sList[T any] struct {
	Items []T `json:"items"`
}

type k8sCondition struct {
	Type, Status, Reason, Message string
}

type k8sNode struct {
	Metadata struct{ Name string }
	Spec     struct {
		Taints []struct{ Key, Effect string }
	}
	Status struct {
		Conditions []k8sCondition
		Addresses  []struct{ Type, Address string }
		NodeInfo   struct {
			BootID string `json:"bootID"`
		} `json:"nodeInfo"`
	}
}

type k8sPod struct {
	Metadata struct {
		Name              string
		DeletionTimestamp string `json:"deletionTimestamp"`
	}
	Spec struct {
		NodeName string `json:"nodeName"`
	}
	Status struct {
		Phase             string
		PodIP             string `json:"podIP"`
		Conditions        []k8sCondition
		ContainerStatuses []struct {
			Name         string
			Ready        bool
			RestartCount int `json:"restartCount"`
			State        struct {
				Waiting    *struct{ Reason, Message string }
				Terminated *struct {
					Reason   string
					ExitCode int `json:"exitCode"`
				}
			}
		} `json:"containerStatuses"`
	}
}

func condition(cs []k8sCondition, typ string) k8sCondition {
	for _, c := range cs {
		if c.Type == typ {
			return c
		}
	}
	return k8sCondition{Type: typ, Status: "Unknown"}
}

// judgeNodes checks that exactly the planned nodes registered, are Ready, carry their
// cluster address as InternalIP (pod routes between nodes go there), and that the master
// has the control-plane NoSchedule taint (which keeps the web pods on the minions).
func judgeNodes(nodes []k8sNode, plan clusterPlan) (string, bool) {
	byName := map[string]k8sNode{}
	for _, n := range nodes {
		byName[n.Metadata.Name] = n
	}
	var problems, fine []string
	for i, pn := range plan.Nodes {
		n, ok := byName[pn.Hostname]
		if !ok {
			problems = append(problems, pn.Hostname+" not registered")
			continue
		}
		delete(byName, pn.Hostname)
		var internal []string
		for _, a := range n.Status.Addresses {
			if a.Type == "InternalIP" {
				internal = append(internal, a.Address)
			}
		}
		desc := pn.Hostname + " " + orNone(strings.Join(internal, ","))
		bad := false
		if r := condition(n.Status.Conditions, "Ready"); r.Status != "True" {
			problems = append(problems, fmt.Sprintf("%s not Ready (%s %s: %s)", pn.Hostname, r.Status, r.Reason, firstLineOf(r.Message)))
			bad = true
		}
		if !slices.Contains(internal, pn.IP.String()) {
			problems = append(problems, fmt.Sprintf("%s has InternalIP %s, not its cluster address %s", pn.Hostname, orNone(strings.Join(internal, ",")), pn.IP))
			bad = true
		}
		if i == 0 {
			tainted := false
			for _, t := range n.Spec.Taints {
				tainted = tainted || (t.Key == "node-role.kubernetes.io/control-plane" && t.Effect == "NoSchedule")
			}
			if !tainted {
				problems = append(problems, pn.Hostname+" lacks the taint node-role.kubernetes.io/control-plane:NoSchedule")
				bad = true
			}
			desc += " (control-plane:NoSchedule)"
		}
		if !bad {
			fine = append(fine, desc)
		}
	}
	for _, extra := range sortedKeys(byName) {
		problems = append(problems, "unexpected node "+extra)
	}
	if len(problems) > 0 {
		return strings.Join(problems, "; "), false
	}
	return fmt.Sprintf("%d nodes Ready: %s", len(fine), strings.Join(fine, ", ")), true
}

// podState says how a pod is doing, and whether it runs with every container ready.
func podState(p k8sPod) (string, bool) {
	s := p.Metadata.Name + " " + orNone(p.Status.Phase)
	if p.Spec.NodeName != "" {
		s += " on " + p.Spec.NodeName
	}
	if p.Metadata.DeletionTimestamp != "" {
		return s + " (terminating)", false
	}
	ready := p.Status.Phase == "Running" && len(p.Status.ContainerStatuses) > 0
	for _, cs := range p.Status.ContainerStatuses {
		ready = ready && cs.Ready
		if w := cs.State.Waiting; w != nil {
			s += fmt.Sprintf(" (%s: %s: %s)", cs.Name, w.Reason, firstLineOf(w.Message))
		} else if t := cs.State.Terminated; t != nil {
			s += fmt.Sprintf(" (%s: terminated %s, exit %d)", cs.Name, t.Reason, t.ExitCode)
		} else if !cs.Ready {
			s += " (" + cs.Name + " not ready)"
		}
	}
	if p.Status.Phase == "Pending" && p.Spec.NodeName == "" {
		if sc := condition(p.Status.Conditions, "PodScheduled"); sc.Status == "False" {
			s += fmt.Sprintf(" (unschedulable: %s)", firstLineOf(sc.Message))
		}
	}
	return s, ready
}

// neverResolves are container waiting reasons that no amount of waiting fixes.
var neverResolves = []string{"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError"}

func stuckReason(p k8sPod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && slices.Contains(neverResolves, w.Reason) {
			return w.Reason + ": " + firstLineOf(w.Message)
		}
	}
	return ""
}

// judgeSystemPods: every kube-system pod Running and ready, CoreDNS among them.
func judgeSystemPods(pods []k8sPod) (string, bool) {
	var problems, coredns []string
	for _, p := range pods {
		s, ok := podState(p)
		if !ok && p.Status.Phase != "Succeeded" {
			problems = append(problems, s)
		}
		if strings.HasPrefix(p.Metadata.Name, "coredns-") && ok {
			coredns = append(coredns, p.Metadata.Name)
		}
	}
	if len(coredns) == 0 {
		problems = append(problems, "no coredns pod Running and ready")
	}
	if len(problems) > 0 {
		return strings.Join(problems, "; "), false
	}
	return fmt.Sprintf("%d pods Running (%s)", len(pods), strings.Join(coredns, ", ")), true
}

// judgeWebPods: exactly one Running, ready web pod per minion (required anti-affinity on
// kubernetes.io/hostname; the master's taint keeps them off it), none terminating. It
// returns the pods' names, which are also what each pod's page says.
func judgeWebPods(pods []k8sPod, minions []string) ([]string, string, bool) {
	var names, states, problems []string
	perNode := map[string][]string{}
	for _, p := range pods {
		s, ok := podState(p)
		states = append(states, s)
		if !ok {
			problems = append(problems, s)
			continue
		}
		names = append(names, p.Metadata.Name)
		perNode[p.Spec.NodeName] = append(perNode[p.Spec.NodeName], p.Metadata.Name)
	}
	for node, ps := range perNode {
		if !slices.Contains(minions, node) {
			problems = append(problems, fmt.Sprintf("%s runs on %s, not a minion", strings.Join(ps, ", "), node))
		}
		if len(ps) > 1 {
			problems = append(problems, fmt.Sprintf("%s share %s despite the required anti-affinity", strings.Join(ps, " and "), node))
		}
	}
	for _, m := range minions {
		if len(perNode[m]) == 0 {
			problems = append(problems, "no web pod on "+m)
		}
	}
	slices.Sort(names)
	if len(problems) > 0 {
		slices.Sort(problems)
		return names, strings.Join(slices.Compact(problems), "; "), false
	}
	slices.Sort(states)
	return names, strings.Join(states, ", "), true
}

// parseHTTPResponse splits a raw HTTP/1.x response into its status code and body.
func parseHTTPResponse(raw string) (int, string, error) {
	head, body, ok := strings.Cut(raw, "\r\n\r\n")
	if !ok {
		head, body, ok = strings.Cut(raw, "\n\n")
	}
	if !ok {
		return 0, "", fmt.Errorf("no complete HTTP response: %q", firstLineOf(raw))
	}
	f := strings.Fields(firstLineOf(head))
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return 0, "", fmt.Errorf("not an HTTP response: %q", firstLineOf(head))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, "", fmt.Errorf("HTTP status %q", f[1])
	}
	return code, body, nil
}

// nslookupAnswer is what busybox nslookup printed: the server asked and the answer's
// addresses.
type nslookupAnswer struct {
	Server    string
	Addresses []string
}

var nslookupAddrRE = regexp.MustCompile(`^Address(?: \d+)?:\s*(\S+)`)

// parseNslookup reads busybox nslookup output (both the 1.28 format, "Address 1: IP name",
// and the newer one, "Address: IP"): the Server line, then the addresses after "Name:".
func parseNslookup(out string) nslookupAnswer {
	var a nslookupAnswer
	inAnswer := false
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "Server:"):
			a.Server = strings.TrimSpace(strings.TrimPrefix(l, "Server:"))
		case strings.HasPrefix(l, "Name:"):
			inAnswer = true
		case inAnswer:
			if m := nslookupAddrRE.FindStringSubmatch(l); m != nil {
				a.Addresses = append(a.Addresses, m[1])
			}
		}
	}
	return a
}
