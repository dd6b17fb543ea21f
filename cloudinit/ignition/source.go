package ignition

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kubebake/kubebake/internal/run"
)

// maxConfigSize bounds a config read from any source.
const maxConfigSize = 32 << 20

// Source is a place an Ignition config may come from. Fetch returns (nil, nil) when the source
// has no config for this machine, and an error only when it has one that cannot be read.
type Source interface {
	Name() string
	Fetch(ctx context.Context) ([]byte, error)
}

// FwCfgPath is where Linux shows QEMU's -fw_cfg name=opt/com.coreos/config.
const FwCfgPath = "/sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw"

// FwCfg reads the config QEMU passes with -fw_cfg name=opt/com.coreos/config,file=...
type FwCfg struct {
	Path string // default FwCfgPath
	// LoadModule loads qemu_fw_cfg when the path is missing. nil runs "modprobe qemu_fw_cfg",
	// but only for the default Path: another path is not sysfs, so loading a module cannot help.
	LoadModule func(ctx context.Context) error
}

func (s FwCfg) Name() string { return "QEMU fw_cfg opt/com.coreos/config" }

func (s FwCfg) Fetch(ctx context.Context) ([]byte, error) {
	p := s.Path
	if p == "" {
		p = FwCfgPath
	}
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		load := s.LoadModule
		if load == nil && p != FwCfgPath {
			load = func(context.Context) error { return nil }
		}
		if load == nil {
			load = func(ctx context.Context) error { return run.Command("modprobe", "qemu_fw_cfg").Run(ctx) }
		}
		if err := load(ctx); err != nil {
			slog.Debug("qemu_fw_cfg not loaded", "err", err)
		}
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return data, nil
}

// DefaultIMDSEndpoint is EC2's instance metadata service.
const DefaultIMDSEndpoint = "http://169.254.169.254"

// IMDS reads EC2 user-data with the IMDSv2 token flow (falling back to IMDSv1 when the token
// call is refused) and returns it only when it is an Ignition config: other user-data (a
// cloud-config, a script) belongs to cloud-init. Not being on EC2 (no answer within Timeout)
// means no config.
type IMDS struct {
	Endpoint string        // default DefaultIMDSEndpoint; tests use an httptest server
	Timeout  time.Duration // for the whole exchange; default 3s
	Client   *http.Client
}

func (s IMDS) Name() string { return "EC2 instance metadata user-data" }

func (s IMDS) Fetch(ctx context.Context) ([]byte, error) {
	ep := strings.TrimRight(s.Endpoint, "/")
	if ep == "" {
		ep = DefaultIMDSEndpoint
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := s.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{Proxy: nil}}
	}

	token := ""
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, ep+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := client.Do(req)
	if err != nil {
		slog.Debug("no instance metadata service", "endpoint", ep, "err", err)
		return nil, nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		token = strings.TrimSpace(string(body))
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		slog.Debug("IMDSv2 token refused, trying IMDSv1", "status", resp.StatusCode)
	default:
		return nil, fmt.Errorf("instance metadata token: HTTP %s", resp.Status)
	}

	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, ep+"/latest/user-data", nil)
	if token != "" {
		req.Header.Set("X-aws-ec2-metadata-token", token)
	}
	resp, err = client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("instance metadata user-data: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		slog.Info("no EC2 user-data")
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("instance metadata user-data: HTTP %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxConfigSize))
	if err != nil {
		return nil, fmt.Errorf("instance metadata user-data: %w", err)
	}
	// EC2 user-data may be gzipped (cloud-init accepts that too).
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("instance metadata user-data: gzip: %w", err)
		}
		if data, err = io.ReadAll(io.LimitReader(zr, maxConfigSize)); err != nil {
			return nil, fmt.Errorf("instance metadata user-data: gzip: %w", err)
		}
	}
	if !IsIgnitionJSON(data) {
		slog.Info("EC2 user-data is not an Ignition config; leaving it to cloud-init")
		return nil, nil
	}
	return data, nil
}

// IsIgnitionJSON reports whether data is a JSON object with an ignition.version string: how
// user-data shared with cloud-init is told apart.
func IsIgnitionJSON(data []byte) bool {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return false
	}
	var stub struct {
		Ignition *struct {
			Version *string `json:"version"`
		} `json:"ignition"`
	}
	if err := json.Unmarshal(data, &stub); err != nil {
		return false
	}
	return stub.Ignition != nil && stub.Ignition.Version != nil
}

// FileSource reads a config from a file (kubebake-ignition --config, Packer, tests).
type FileSource struct{ Path string }

func (s FileSource) Name() string { return "file " + s.Path }

func (s FileSource) Fetch(ctx context.Context) ([]byte, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxConfigSize))
}
