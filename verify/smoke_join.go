package verify

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/atomicfile"
)

// The join step: join credentials that expire and cannot impersonate (docs/security.md).

type k8sSecret struct {
	Metadata struct {
		Name   string
		Labels map[string]string
	}
	Type string
	Data map[string]string // base64
}

type k8sCSR struct {
	Metadata struct{ Name string }
	Status   struct {
		Conditions  []k8sCondition
		Certificate string
	}
}

// intruderSuffix names the node a token is minted for in the join step, to be stolen.
const intruderSuffix = "-intruder"

// judgeJoinTokens: every bootstrap token on the master expires, no later than ttl after now,
// and no token bound to a node that has registered remains (the approver deletes it).
func judgeJoinTokens(secrets []k8sSecret, registered []string, ttl time.Duration, now time.Time) (string, bool) {
	var problems, fine []string
	for _, s := range secrets {
		if s.Type != "bootstrap.kubernetes.io/token" {
			continue
		}
		id := strings.TrimPrefix(s.Metadata.Name, "bootstrap-token-")
		desc := id
		if node := s.Metadata.Labels[cloudinit.JoinTokenNodeLabel]; node != "" {
			desc += " (node " + node + ")"
			if slices.Contains(registered, node) {
				problems = append(problems, fmt.Sprintf("token %s is still there after %s registered", id, node))
				continue
			}
		} else {
			desc += " (shared)"
		}
		raw, _ := base64.StdEncoding.DecodeString(s.Data["expiration"])
		if len(raw) == 0 {
			problems = append(problems, "token "+desc+" never expires")
			continue
		}
		when, err := time.Parse(time.RFC3339, string(raw))
		if err != nil {
			problems = append(problems, fmt.Sprintf("token %s expiration %q is not RFC 3339", desc, raw))
			continue
		}
		if left := when.Sub(now); left > ttl+time.Minute {
			problems = append(problems, fmt.Sprintf("token %s lives %s more, past the TTL %s", desc, left.Round(time.Minute), ttl))
			continue
		}
		fine = append(fine, fmt.Sprintf("%s expires %s", desc, when.Format(time.RFC3339)))
	}
	if len(problems) > 0 {
		return strings.Join(problems, "; "), false
	}
	if len(fine) == 0 {
		return "no join token left", true
	}
	return strings.Join(fine, ", "), true
}

// joinLeftoversCommand prints what a joined node keeps of its join: bootstrap-kubelet.conf,
// a token line in cluster.env, the kubelet's own kubeconfig.
const joinLeftoversCommand = `for f in /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/kubelet.conf; do
  [ -e "$f" ] && echo "file=$f"
done
grep -c '^KUBEBAKE_BOOTSTRAP_TOKEN=' /etc/kubebake/cluster.env 2>/dev/null | sed 's/^/token-lines=/'
true`

// judgeJoinLeftovers: a joined node has its kubelet.conf and neither a bootstrap kubeconfig
// nor a join token.
func judgeJoinLeftovers(out string) (string, bool) {
	kv := Output{Text: out}.KV()
	files := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if f, ok := strings.CutPrefix(l, "file="); ok {
			files[f] = true
		}
	}
	var problems []string
	if !files["/etc/kubernetes/kubelet.conf"] {
		problems = append(problems, "no kubelet.conf: not joined")
	}
	if files["/etc/kubernetes/bootstrap-kubelet.conf"] {
		problems = append(problems, "bootstrap-kubelet.conf still there")
	}
	switch n := kv["token-lines"]; n {
	case "0":
	case "":
		problems = append(problems, "cluster.env unreadable")
	default:
		problems = append(problems, "cluster.env holds the join token")
	}
	if len(problems) > 0 {
		return strings.Join(problems, "; "), false
	}
	return "no join token, no bootstrap-kubelet.conf", true
}

// judgeStolenCSR: a CSR made with a token bound to another node, for the master's name, must
// be denied and never signed.
func judgeStolenCSR(csr k8sCSR) (got string, done, ok bool) {
	if csr.Status.Certificate != "" {
		return "signed: the token made another node's identity", true, false
	}
	switch {
	case condition(csr.Status.Conditions, "Denied").Status == "True":
		return "denied", true, true
	case condition(csr.Status.Conditions, "Approved").Status == "True":
		return "approved: the token made another node's identity", true, false
	}
	return "pending", false, false
}

// stepJoin proves the join credentials: tokens that expire, gone once used; minions that
// keep none; and a token stolen from one node's user-data refused another node's name.
func (c *cluster) stepJoin(ctx context.Context) (string, error) {
	ttl, err := c.master().opts.Bundle.TokenTTL()
	if err != nil {
		return "", err
	}
	tokens, err := poll(ctx, 5*time.Second, func(ctx context.Context) (bool, string, error) {
		var secrets k8sList[k8sSecret]
		if err := c.getJSON(ctx, &secrets, "-n", "kube-system", "get", "secrets", "--field-selector", "type=bootstrap.kubernetes.io/token"); err != nil {
			return false, err.Error(), nil
		}
		got, ok := judgeJoinTokens(secrets.Items, c.nodeNames(), ttl, time.Now())
		return ok, got, nil
	})
	if err != nil {
		return "", fmt.Errorf("join tokens on the master: %w", err)
	}
	for _, n := range c.minions() {
		if _, err := poll(ctx, 5*time.Second, func(ctx context.Context) (bool, string, error) {
			out, err := sh(ctx, n, joinLeftoversCommand)
			if err != nil {
				return false, err.Error(), nil
			}
			got, ok := judgeJoinLeftovers(out)
			return ok, got, nil
		}); err != nil {
			return "", fmt.Errorf("%s after its join: %w", n.hostname, err)
		}
	}
	stolen, err := c.stolenTokenCSR(ctx, ttl)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("tokens: %s; minions keep no join token or bootstrap-kubelet.conf; %s", tokens, stolen), nil
}

// stolenTokenCSR mints a join token for a node that is not there yet, as "kubebake cluster
// token" does, and asks with it for a client certificate in the master's name: the approver
// must deny it.
func (c *cluster) stolenTokenCSR(ctx context.Context, ttl time.Duration) (string, error) {
	intruder := c.opts.Name + intruderSuffix
	token, err := cloudinit.NewBootstrapToken(nil)
	if err != nil {
		return "", err
	}
	secret, err := cloudinit.JoinTokenSecret(token, intruder, ttl, time.Now())
	if err != nil {
		return "", err
	}
	if _, err := c.kubectl.run(ctx, string(secret), "apply", "-f", "-"); err != nil {
		return "", fmt.Errorf("minting a join token for %s: %s", intruder, firstLineOf(err.Error()))
	}
	id, _, _ := strings.Cut(token, ".")
	csrName := "kubebake-stolen-token"
	defer func() {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		c.kubectl.run(cleanup, "", "delete", "csr", csrName, "--ignore-not-found")
		c.kubectl.run(cleanup, "", "-n", "kube-system", "delete", "secret", "bootstrap-token-"+id, "--ignore-not-found")
	}()
	data, err := os.ReadFile(c.kubectl.kubeconfig)
	if err != nil {
		return "", err
	}
	kc, err := kubeconfigWithToken(data, token)
	if err != nil {
		return "", err
	}
	kcPath := filepath.Join(c.opts.WorkDir, c.opts.Name+"-stolen-token.conf")
	if err := atomicfile.WriteFile(kcPath, kc, 0o600); err != nil {
		return "", err
	}
	defer os.Remove(kcPath)
	victim := c.master().hostname
	csr, err := cloudinit.NodeCSRManifest(csrName, victim)
	if err != nil {
		return "", err
	}
	thief := &kubectlClient{bin: c.kubectl.bin, kubeconfig: kcPath}
	// The signer may not have signed cluster-info for the new token yet; the CSR needs only
	// the token to be known, which it is once the Secret is.
	if _, err := poll(ctx, 3*time.Second, func(ctx context.Context) (bool, string, error) {
		_, err := thief.run(ctx, csr, "create", "-f", "-")
		if err != nil {
			return false, "creating the CSR with the minted token: " + firstLineOf(err.Error()), nil
		}
		return true, "", nil
	}); err != nil {
		return "", err
	}
	var verdict string
	_, err = poll(ctx, 3*time.Second, func(ctx context.Context) (bool, string, error) {
		var got k8sCSR
		if err := c.getJSON(ctx, &got, "get", "csr", csrName); err != nil {
			return false, err.Error(), nil
		}
		v, done, ok := judgeStolenCSR(got)
		verdict = v
		if done && !ok {
			return false, v, errors.New(v)
		}
		return done, v, nil
	})
	if err != nil {
		return "", fmt.Errorf("a token bound to %s asking for node %s's certificate: %w", intruder, victim, err)
	}
	return fmt.Sprintf("a token bound to %s asking for %s's certificate: %s", intruder, victim, verdict), nil
}

// kubeconfigWithToken is kubeconfig data with every user authenticating by token alone.
func kubeconfigWithToken(data []byte, token string) ([]byte, error) {
	var kc map[string]any
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("not a kubeconfig: %w", err)
	}
	users, _ := kc["users"].([]any)
	if len(users) == 0 {
		return nil, errors.New("the kubeconfig lists no user")
	}
	for _, u := range users {
		entry, _ := u.(map[string]any)
		if entry == nil {
			return nil, errors.New("a kubeconfig user entry is not a map")
		}
		entry["user"] = map[string]any{"token": token}
	}
	return yaml.Marshal(kc)
}
