package verify

import (
	"log/slog"
	"os"

	"github.com/kubebake/kubebake/internal/redact"
)

// privateDir makes dir (and its missing parents) with mode 0700 for files that may hold
// secrets: seeds, Ignition configs, serial logs, SSH keys, kubeconfigs, journals. An existing
// folder open to group or others is closed to them, unless it is a shared sticky folder such
// as /tmp (the files in it are 0600 either way).
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, artifactDirMode); err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o077 != 0 && st.Mode()&os.ModeSticky == 0 {
		if err := os.Chmod(dir, artifactDirMode); err != nil {
			return err
		}
		slog.Debug("folder made private", "dir", dir, "was", st.Mode().Perm())
	}
	return nil
}

// redactor hides the node's user-data secrets (the bundle's tokens and CA key) and any private
// key or URL credentials in what verify saves or reports.
func (n *node) redactor() *redact.Redactor { return n.opts.Bundle.Redactor(n.tokenNodes()...) }

// redactSecrets hides r's secrets in every check of the report: a check's output can quote a
// journal line or a kubeadm command line with the token.
func (rep *Report) redactSecrets(r *redact.Redactor) {
	for i := range rep.Results {
		res := &rep.Results[i]
		for j := range res.Checks {
			c := &res.Checks[j]
			c.Got, c.Expected = r.String(c.Got), r.String(c.Expected)
		}
	}
}
