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
)

// Join tokens on the master: what kubebake-master-bootstrap makes at first boot (lib.sh
// join_token_secret) and "kubebake cluster token" mints later, in the same shape.
const (
	// JoinTokenGroup is the group every join token authenticates with: it may ask for a node
	// client certificate, which kubebake-csr-approver alone decides.
	JoinTokenGroup = "system:bootstrappers:kubebake:nodes"
	// JoinTokenNodeLabel on a token's Secret binds it to a node name.
	JoinTokenNodeLabel = "kubebake.dev/node-name"
)

// JoinTokenSecret is the Secret (YAML, for kubectl apply) of a join token bound to node that
// expires ttl after now.
func JoinTokenSecret(token, node string, ttl time.Duration, now time.Time) ([]byte, error) {
	if err := ValidateToken(token); err != nil {
		return nil, err
	}
	if !nodeNameRE.MatchString(node) {
		return nil, fmt.Errorf("node name %q: use lower-case letters, digits, '-' and '.', at most 63 characters", node)
	}
	if ttl < time.Minute {
		return nil, fmt.Errorf("join token TTL %s is under a minute", ttl)
	}
	id, secret, _ := strings.Cut(token, ".")
	return fmt.Appendf(nil, `apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-%s
  namespace: kube-system
  labels:
    %s: %q
type: bootstrap.kubernetes.io/token
stringData:
  description: "kubebake join token of node %s: a certificate for that name only"
  token-id: %q
  token-secret: %q
  expiration: %q
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: %q
`, id, JoinTokenNodeLabel, node, node, id, secret, now.Add(ttl).UTC().Format(time.RFC3339), JoinTokenGroup), nil
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
