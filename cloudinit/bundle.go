// Package cloudinit renders what a node needs at first boot: the cluster bundle (CA, bootstrap
// token, master endpoint), user-data for a role in every supported format (cloud-config, shell,
// Butane, Ignition), and NoCloud seed ISOs. The files a role receives are computed once
// (NodeFiles) and every format carries that same list; docs/node-contract.md names the paths.
package cloudinit

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/redact"
)

// Bundle document identity.
const (
	BundleAPIVersion = "kubebake.dev/v1alpha1"
	BundleKind       = "ClusterBundle"
)

// DefaultMasterEndpoint is the master endpoint of a bundle made without --master-endpoint: the
// address QEMU's user-mode network gives a guest, port 6443.
const DefaultMasterEndpoint = "10.0.2.15:6443"

// caValidity is the CA lifetime; kubeadm's own CA lasts ten years too.
const caValidity = 10 * 365 * 24 * time.Hour

// Bundle is everything a cluster's nodes share: the cluster CA, a kubeadm bootstrap token and
// where the API server is. It is a secret: it is written 0600 and LoadBundle refuses a bundle
// that group or other can read. Its String, GoString and LogValue methods never show the key
// or the token, so a Bundle printed or logged by mistake leaks nothing.
type Bundle struct {
	APIVersion     string `yaml:"apiVersion" json:"apiVersion"`
	Kind           string `yaml:"kind" json:"kind"`
	ClusterName    string `yaml:"clusterName" json:"clusterName"`
	MasterEndpoint string `yaml:"masterEndpoint" json:"masterEndpoint"`
	// BootstrapToken is a kubeadm token, [a-z0-9]{6}.[a-z0-9]{16}.
	BootstrapToken string `yaml:"bootstrapToken" json:"bootstrapToken"`
	// CACertHash is kubeadm's discovery-token-ca-cert-hash: sha256:<hex of the CA's SPKI>.
	CACertHash string `yaml:"caCertHash" json:"caCertHash"`
	CACert     string `yaml:"caCert" json:"caCert"` // PEM
	CAKey      string `yaml:"caKey" json:"caKey"`   // PEM
	// JoinTokenTTL is how long a node's join token lives on the master once created (Go
	// duration, at least a minute); empty means DefaultJoinTokenTTL. Tokens never last forever:
	// one read of a minion's user-data must not be a key to the cluster for its whole life.
	JoinTokenTTL string `yaml:"joinTokenTTL,omitempty" json:"joinTokenTTL,omitempty"`
}

// DefaultJoinTokenTTL is kubeadm's default bootstrap token lifetime.
const DefaultJoinTokenTTL = 24 * time.Hour

// TokenTTL is the bundle's join token lifetime.
func (b *Bundle) TokenTTL() (time.Duration, error) {
	if b.JoinTokenTTL == "" {
		return DefaultJoinTokenTTL, nil
	}
	d, err := time.ParseDuration(b.JoinTokenTTL)
	if err != nil || d < time.Minute {
		return 0, fmt.Errorf("joinTokenTTL %q is not a duration of at least a minute (like 24h or 90m)", b.JoinTokenTTL)
	}
	return d, nil
}

// NodeToken is the join token of one node: a kubeadm token derived from the bundle's token and
// the node name (HMAC-SHA256), so the master's user-data (which lists the nodes it expects) and
// each minion's agree without sharing any state. The master binds each token to its node name
// and approves a certificate for that name only; a token read from one minion's user-data
// cannot make another node's identity.
func (b *Bundle) NodeToken(node string) string {
	mac := hmac.New(sha256.New, []byte(b.BootstrapToken))
	mac.Write([]byte("kubebake node join token\x00" + node))
	token, err := NewBootstrapToken(bytes.NewReader(tokenStream(mac.Sum(nil))))
	if err != nil {
		panic(err) // tokenStream is long enough for any draw
	}
	return token
}

// tokenStream stretches a MAC into enough bytes for NewBootstrapToken's rejection sampling
// (23 characters; a byte is rejected with probability 4/256).
func tokenStream(seed []byte) []byte {
	var out []byte
	for i := byte(0); len(out) < 256; i++ {
		h := sha256.Sum256(append(append([]byte{}, seed...), i))
		out = append(out, h[:]...)
	}
	return out
}

// bundleFields lists the fields every bundle must carry, in file order, with their YAML names.
func (b *Bundle) bundleFields() []struct{ name, value string } {
	return []struct{ name, value string }{
		{"apiVersion", b.APIVersion}, {"kind", b.Kind}, {"clusterName", b.ClusterName},
		{"masterEndpoint", b.MasterEndpoint}, {"bootstrapToken", b.BootstrapToken},
		{"caCertHash", b.CACertHash}, {"caCert", b.CACert}, {"caKey", b.CAKey},
	}
}

// String shows the bundle without its secrets.
func (b *Bundle) String() string {
	return fmt.Sprintf("ClusterBundle{clusterName: %s, masterEndpoint: %s, caCertHash: %s}", b.ClusterName, b.MasterEndpoint, b.CACertHash)
}

// GoString is String, so %#v cannot leak secrets either.
func (b *Bundle) GoString() string { return b.String() }

// LogValue keeps the CA key and the token out of slog output.
func (b *Bundle) LogValue() slog.Value {
	return slog.GroupValue(slog.String("clusterName", b.ClusterName),
		slog.String("masterEndpoint", b.MasterEndpoint), slog.String("caCertHash", b.CACertHash))
}

// Redactor hides the bundle's secrets in text kubebake logs or saves (verify's serial logs
// and journals): the bootstrap token and the join tokens of nodes (each with its secret
// half), and the CA key, whole and line by line. A nil bundle gives the nil Redactor (URL
// credentials and private keys only).
func (b *Bundle) Redactor(nodes ...string) *redact.Redactor {
	if b == nil {
		return nil
	}
	secrets := []string{b.CAKey}
	for _, t := range append([]string{b.BootstrapToken}, b.nodeTokens(nodes)...) {
		secrets = append(secrets, t)
		if _, secret, ok := strings.Cut(t, "."); ok {
			secrets = append(secrets, secret)
		}
	}
	return redact.New(secrets...)
}

func (b *Bundle) nodeTokens(nodes []string) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = b.NodeToken(n)
	}
	return out
}

// KeyType selects the CA key algorithm.
type KeyType string

const (
	KeyRSA2048   KeyType = "rsa-2048"   // kubeadm's default
	KeyECDSAP256 KeyType = "ecdsa-p256" // kubeadm's ECDSA-P256 encryption algorithm
)

// BundleOptions tune NewBundle.
type BundleOptions struct {
	MasterEndpoint string  // default DefaultMasterEndpoint
	KeyType        KeyType // default KeyRSA2048
	// JoinTokenTTL is the bundle's joinTokenTTL; zero leaves it unset (DefaultJoinTokenTTL).
	JoinTokenTTL time.Duration
	Now          time.Time
	Rand         io.Reader // default crypto/rand
}

// NewBundle makes a new cluster bundle: a fresh self-signed CA (CN kubernetes, ten years, as
// kubeadm makes it), a fresh bootstrap token and the CA hash.
func NewBundle(clusterName string, opts BundleOptions) (*Bundle, error) {
	if err := ValidateClusterName(clusterName); err != nil {
		return nil, err
	}
	if opts.MasterEndpoint == "" {
		opts.MasterEndpoint = DefaultMasterEndpoint
	}
	if err := ValidateEndpoint(opts.MasterEndpoint); err != nil {
		return nil, fmt.Errorf("--master-endpoint: %w", err)
	}
	if opts.KeyType == "" {
		opts.KeyType = KeyRSA2048
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	certPEM, keyPEM, err := newCA(opts)
	if err != nil {
		return nil, err
	}
	token, err := NewBootstrapToken(opts.Rand)
	if err != nil {
		return nil, err
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	var ttl string
	if opts.JoinTokenTTL != 0 {
		if opts.JoinTokenTTL < time.Minute {
			return nil, fmt.Errorf("join token TTL %s is under a minute: nodes could not join in time", opts.JoinTokenTTL)
		}
		ttl = opts.JoinTokenTTL.String()
	}
	return &Bundle{
		JoinTokenTTL:   ttl,
		APIVersion:     BundleAPIVersion,
		Kind:           BundleKind,
		ClusterName:    clusterName,
		MasterEndpoint: opts.MasterEndpoint,
		BootstrapToken: token,
		CACertHash:     CACertHash(cert),
		CACert:         string(certPEM),
		CAKey:          string(keyPEM),
	}, nil
}

func newCA(opts BundleOptions) (certPEM, keyPEM []byte, err error) {
	var signer crypto.Signer
	switch opts.KeyType {
	case KeyRSA2048:
		k, err := rsa.GenerateKey(opts.Rand, 2048)
		if err != nil {
			return nil, nil, fmt.Errorf("generating the CA key: %w", err)
		}
		signer = k
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	case KeyECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), opts.Rand)
		if err != nil {
			return nil, nil, fmt.Errorf("generating the CA key: %w", err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		signer = k
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	default:
		return nil, nil, fmt.Errorf("key type %q: use %s or %s", opts.KeyType, KeyRSA2048, KeyECDSAP256)
	}
	serial, err := rand.Int(opts.Rand, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, nil, err
	}
	ski := sha256.Sum256(spki)
	now := opts.Now.UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kubernetes"},
		NotBefore:             now.Add(-5 * time.Minute), // tolerate a guest clock slightly behind
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          ski[:20],
	}
	der, err := x509.CreateCertificate(opts.Rand, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the CA certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// CACertHash is kubeadm's --discovery-token-ca-cert-hash for cert: "sha256:" and the hex
// SHA-256 of its DER SubjectPublicKeyInfo.
func CACertHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

var tokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

// ValidateToken checks a kubeadm bootstrap token's format without showing the token.
func ValidateToken(token string) error {
	if !tokenRE.MatchString(token) {
		return errors.New(`bootstrapToken is not a kubeadm token: want 6 and 16 characters of [a-z0-9] joined by "." (like 07401b.f395accd246ae52d)`)
	}
	return nil
}

// NewBootstrapToken makes a kubeadm token [a-z0-9]{6}.[a-z0-9]{16} from r (crypto/rand if nil).
func NewBootstrapToken(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, 23)
	buf := make([]byte, 1)
	for len(out) < 23 {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("generating the bootstrap token: %w", err)
		}
		if int(buf[0]) >= 252 { // 252 = 7*36: reject to keep the draw uniform
			continue
		}
		out = append(out, alphabet[int(buf[0])%36])
		if len(out) == 6 {
			out = append(out, '.')
		}
	}
	return string(out), nil
}

// dnsLabelRE is for cluster names and user names. Role names have their own, stricter grammar,
// recipes.CheckRoleName (32 characters), shared with lint and the node layer; every user-data
// format checks it (roleFiles).
var (
	dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	hostRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
)

// ValidateClusterName accepts a DNS label: it ends up in host names and env files.
func ValidateClusterName(name string) error {
	if !dnsLabelRE.MatchString(name) {
		return fmt.Errorf("cluster name %q: use lower-case letters, digits and '-' (a DNS label, at most 63 characters)", name)
	}
	return nil
}

// ValidateEndpoint accepts host:port with a DNS name, an IPv4 address or a bracketed IPv6
// address, and a port 1-65535.
func ValidateEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("endpoint %q is not HOST:PORT (e.g. 10.0.2.15:6443)", ep)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("endpoint %q: port %q is not 1-65535", ep, port)
	}
	if net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		return fmt.Errorf("endpoint %q: %q is not a host name or IP address", ep, host)
	}
	return nil
}

// Validate checks every field: presence, formats, that the key matches the certificate and
// that the hash is the certificate's. Errors name the field and never show a secret.
func (b *Bundle) Validate() error {
	for _, f := range b.bundleFields() {
		if strings.TrimSpace(f.value) == "" {
			return fmt.Errorf("field %q is missing", f.name)
		}
	}
	if b.APIVersion != BundleAPIVersion {
		return fmt.Errorf("apiVersion %q is not supported: want %s", b.APIVersion, BundleAPIVersion)
	}
	if b.Kind != BundleKind {
		return fmt.Errorf("kind %q: want %s", b.Kind, BundleKind)
	}
	if err := ValidateClusterName(b.ClusterName); err != nil {
		return fmt.Errorf("clusterName: %w", err)
	}
	if err := ValidateEndpoint(b.MasterEndpoint); err != nil {
		return fmt.Errorf("masterEndpoint: %w", err)
	}
	if err := ValidateToken(b.BootstrapToken); err != nil {
		return err
	}
	if _, err := b.TokenTTL(); err != nil {
		return err
	}
	cert, err := parseCertPEM([]byte(b.CACert))
	if err != nil {
		return fmt.Errorf("caCert: %w", err)
	}
	if !cert.IsCA {
		return errors.New("caCert is not a CA certificate (basicConstraints CA:TRUE missing)")
	}
	key, err := parseKeyPEM([]byte(b.CAKey))
	if err != nil {
		return fmt.Errorf("caKey: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return errors.New("caKey does not match caCert: the key is not the certificate's; regenerate the bundle with \"kubebake cluster init\"")
	}
	if want := CACertHash(cert); b.CACertHash != want {
		return fmt.Errorf("caCertHash %s is not the hash of caCert (%s)", b.CACertHash, want)
	}
	return nil
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	blk, err := decodeOnePEM(data)
	if err != nil {
		return nil, err
	}
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("bad certificate: %w", err)
	}
	return cert, nil
}

// decodeOnePEM decodes data as one PEM block in the form NewBundle writes, the only form that
// a YAML or JSON round trip (WriteBundle, LoadBundle) keeps byte for byte: the block first,
// nothing after it but blank space, no headers. pem.Decode alone would skip any text before
// the block and ignore any after it, and yaml.v3 drops a leading blank line of a block
// scalar, so a bundle LoadBundle accepted could change when written again. It returns a nil
// block when data holds none; its errors never quote data.
func decodeOnePEM(data []byte) (*pem.Block, error) {
	blk, rest := pem.Decode(data)
	switch {
	case blk == nil:
		return nil, nil
	case !bytes.HasPrefix(data, []byte("-----BEGIN ")):
		return nil, errors.New("there is text before the PEM block: it must start the field")
	case len(bytes.Trim(rest, " \t\r\n")) > 0:
		return nil, errors.New("there is text after the PEM block: the field holds one block only")
	case len(blk.Headers) > 0:
		return nil, fmt.Errorf("the PEM block %q has headers (an encrypted key?): kubeadm reads plain blocks only", blk.Type)
	}
	return blk, nil
}

// parseKeyPEM reads the key formats kubeadm reads: PKCS#1 RSA, SEC1 EC, PKCS#8. Its errors
// never quote key material.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	blk, err := decodeOnePEM(data)
	if err != nil {
		return nil, err
	}
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", blk.Type)
	}
	if err != nil {
		return nil, errors.New("the private key does not parse")
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("unsupported private key type")
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// Marshal encodes the bundle as YAML, or as JSON when asJSON.
func (b *Bundle) Marshal(asJSON bool) ([]byte, error) {
	if asJSON {
		data, err := json.MarshalIndent(b, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(data, '\n'), nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(b); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// IsJSONPath reports whether a bundle path asks for JSON (it ends in .json).
func IsJSONPath(path string) bool { return strings.EqualFold(filepath.Ext(path), ".json") }

// WriteBundle writes the bundle to path atomically with mode 0600, as JSON when the path ends
// in .json and as YAML otherwise. It refuses to replace an existing file unless force is set.
func WriteBundle(path string, b *Bundle, force bool) error {
	if err := b.Validate(); err != nil {
		return fmt.Errorf("refusing to write an invalid bundle: %w", err)
	}
	data, err := b.Marshal(IsJSONPath(path))
	if err != nil {
		return err
	}
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s already exists: it may hold a live cluster's CA; pass --force to replace it", path)
		}
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

// LoadBundle reads and validates a bundle. It refuses a bundle that group or other can read
// (it holds the CA key), a missing field, a malformed token or a key that is not the cert's.
func LoadBundle(path string) (*Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cluster bundle: %w; create one with \"kubebake cluster init NAME --out %s\"", err, path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("cluster bundle %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("cluster bundle %s has mode %04o: it holds the cluster CA key and must not be readable by group or others; run \"chmod 600 %s\"", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	b, err := ParseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("cluster bundle %s: %w", path, err)
	}
	return b, nil
}

// ParseBundle decodes a YAML or JSON bundle strictly (unknown fields are errors) and validates it.
func ParseBundle(data []byte) (*Bundle, error) {
	var b Bundle
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&b); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, fmt.Errorf("not a cluster bundle: %s", redactYAMLError(err))
	}
	if err := b.Validate(); err != nil {
		return nil, err
	}
	return &b, nil
}

// redactYAMLError keeps yaml.v3's line numbers and field names but drops quoted values, which
// could be pieces of a key.
func redactYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		lines := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			if j := strings.Index(e, "`"); j >= 0 {
				e = e[:j] + "(value hidden)"
			}
			lines[i] = e
		}
		return strings.Join(lines, "; ")
	}
	return err.Error()
}
