package cloudinit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/kubebake/kubebake/recipes"
)

// Join tokens on the master: what kubebake-master-bootstrap makes at first boot (lib.sh
// join_token_secret) and "kubebake cluster token" mints later, in the same shape; the names
// are recipes' (the node layer's scripts take them from there).
const (
	JoinTokenGroup     = recipes.JoinTokenGroup
	JoinTokenNodeLabel = recipes.JoinTokenNodeLabel
)

// JoinTokenSecret is the Secret (YAML, for kubectl apply) of a join token that expires ttl
// after now, bound to node, or the cluster's shared token for node "".
func JoinTokenSecret(token, node string, ttl time.Duration, now time.Time) ([]byte, error) {
	if err := ValidateToken(token); err != nil {
		return nil, err
	}
	if node != "" && !nodeNameRE.MatchString(node) {
		return nil, fmt.Errorf("node name %q: use lower-case letters, digits, '-' and '.', at most 63 characters", node)
	}
	if ttl < time.Minute {
		return nil, fmt.Errorf("join token TTL %s is under a minute", ttl)
	}
	id, secret, _ := strings.Cut(token, ".")
	labels := ""
	description := "kubebake shared join token: a certificate only for a node name not yet taken"
	if node != "" {
		labels = fmt.Sprintf("  labels:\n    %s: %q\n", JoinTokenNodeLabel, node)
		description = "kubebake join token of node " + node + ": a certificate for that name only"
	}
	return fmt.Appendf(nil, `apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-%s
  namespace: kube-system
%stype: bootstrap.kubernetes.io/token
stringData:
  description: %q
  token-id: %q
  token-secret: %q
  expiration: %q
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: %q
`, id, labels, description, id, secret, now.Add(ttl).UTC().Format(time.RFC3339), JoinTokenGroup), nil
}

// NodeCSRManifest is a kubelet client CertificateSigningRequest named name for node, with a
// fresh key, as the kubelet's TLS bootstrap makes it: what tests ask the master's approver.
func NodeCSRManifest(name, node string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: %s
spec:
  request: %s
  signerName: kubernetes.io/kube-apiserver-client-kubelet
  usages: [digital signature, client auth]
`, name, base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))), nil
}
