// Package verify proves a node image by booting it: once per role and user-data kind, a
// throwaway copy-on-write VM (QEMU, UEFI, user-mode network with only an SSH forward on
// 127.0.0.1) gets the role's user-data and an ephemeral SSH key, and a guest session runs
// checks derived from the image's manifest. It never imports the builder: the two meet at the
// image files and manifest.json.
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kubebake/kubebake/cloudinit"
	"github.com/kubebake/kubebake/internal/atomicfile"
	"github.com/kubebake/kubebake/internal/shell"
)

// Options say what to verify and how.
type Options struct {
	// Image is an image file or a build output folder (image.qcow2 or image.raw, manifest.json).
	Image string
	// Manifest is manifest.json; empty: beside the image, else read from the booted guest.
	Manifest string
	// Roles to boot (default master and minion); UserData kinds (default cloud-init): each
	// role boots once per kind, except a role in RoleUserData, which boots once with its kind
	// (e.g. master=ignition while the other roles take cloud-init).
	Roles        []string
	UserData     []string
	RoleUserData map[string]string
	Accel        string // auto (default), kvm or tcg
	// Stage timeouts: boot (QEMU start to SSH banner), ssh (banner to login), settle (no
	// start jobs left; on a master the API server ready), checks (run every check). Each has
	// its own budget, so a hung boot still gets its checks and journals. Zero means the
	// defaults.
	TimeoutBoot   time.Duration
	TimeoutSSH    time.Duration
	TimeoutSettle time.Duration
	TimeoutChecks time.Duration
	// Parallel is how many VMs run at once (0: one per two cores under TCG, per core under KVM).
	Parallel int
	// Keep leaves the VMs running after the checks and reports how to log in.
	Keep bool
	// WorkDir holds overlays, seeds and serial logs while VMs run (default a temp folder).
	WorkDir string
	// ArtifactsDir receives serial logs and journals of failing nodes (default
	// <image dir>/verify).
	ArtifactsDir string
	// Bundle is the cluster bundle for user-data (default a throwaway one whose master
	// endpoint is the slirp guest address).
	Bundle   *cloudinit.Bundle
	QEMU     string
	Firmware Firmware
	// CPUs and MemoryMiB per VM (default 2 and 2048).
	CPUs      int
	MemoryMiB int
	// Progress, when set, receives stage changes ("master/cloud-init", "boot").
	Progress func(node, stage string)

	// afterLogin, when set (tests), runs in the guest right after login: a way to break a
	// booted guest (power it off, fail a unit) and see verify stop waiting.
	afterLogin func(ctx context.Context, s *Session) error
}

// Default stage timeouts, sized for TCG (software emulation) on two cores.
const (
	DefaultTimeoutBoot   = 5 * time.Minute
	DefaultTimeoutSSH    = 3 * time.Minute
	DefaultTimeoutSettle = 10 * time.Minute
	DefaultTimeoutChecks = 10 * time.Minute
)

// Target is the resolved image to verify.
type Target struct {
	Image    string
	Manifest string // "" when there is none beside the image
}

// imageFormats are the formats verify boots from a build output folder, preferred first
// (raw needs no cluster lookups under the overlay).
var imageFormats = []string{"raw", "qcow2"}

// ResolveTarget finds the image and its manifest from a file or a build output folder: the
// folder's manifest.json names its outputs; without one, the first *.raw or *.qcow2 is used.
func ResolveTarget(path, manifest string) (Target, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Target{}, fmt.Errorf("image %s: %w", path, err)
	}
	t := Target{Image: path, Manifest: manifest}
	dir := filepath.Dir(path)
	if st.IsDir() {
		dir = path
		t.Image = ""
		if t.Manifest == "" && fileExists(filepath.Join(dir, "manifest.json")) {
			t.Manifest = filepath.Join(dir, "manifest.json")
		}
		outputs := manifestOutputs(t.Manifest)
		for _, format := range imageFormats {
			for _, o := range outputs {
				if o.Format == format && t.Image == "" && fileExists(filepath.Join(dir, o.Name)) {
					t.Image = filepath.Join(dir, o.Name)
				}
			}
			if t.Image == "" {
				if found, _ := filepath.Glob(filepath.Join(dir, "*."+format)); len(found) > 0 {
					t.Image = found[0]
				}
			}
		}
		if t.Image == "" {
			return Target{}, fmt.Errorf("%s holds no image (*.raw, *.qcow2): give the image file, or run kubebake build first", path)
		}
	}
	if t.Manifest == "" && fileExists(filepath.Join(dir, "manifest.json")) {
		t.Manifest = filepath.Join(dir, "manifest.json")
	}
	if t.Image, err = filepath.Abs(t.Image); err != nil {
		return Target{}, err
	}
	return t, nil
}

// Run verifies the image for each role and user-data kind and returns the report. The error
// is for a run that could not take place (no image, no QEMU); failed checks are in the report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	target, err := ResolveTarget(opts.Image, opts.Manifest)
	if err != nil {
		return nil, err
	}
	if len(opts.UserData) == 0 {
		opts.UserData = []string{UserDataCloudInit}
	}
	for _, u := range opts.UserData {
		if u != UserDataCloudInit && u != UserDataIgnition {
			return nil, fmt.Errorf("--userdata %q: use cloud-init, ignition or both", u)
		}
	}
	for role, u := range opts.RoleUserData {
		if u != UserDataCloudInit && u != UserDataIgnition {
			return nil, fmt.Errorf("--userdata %s=%s: use %s=cloud-init or %s=ignition", role, u, role, role)
		}
	}
	if opts.TimeoutBoot == 0 {
		opts.TimeoutBoot = DefaultTimeoutBoot
	}
	if opts.TimeoutSSH == 0 {
		opts.TimeoutSSH = DefaultTimeoutSSH
	}
	if opts.TimeoutSettle == 0 {
		opts.TimeoutSettle = DefaultTimeoutSettle
	}
	if opts.TimeoutChecks == 0 {
		opts.TimeoutChecks = DefaultTimeoutChecks
	}
	if opts.Firmware.Code == "" {
		if opts.Firmware, err = FindFirmware(); err != nil {
			return nil, err
		}
	}
	var manifest *Manifest
	if target.Manifest != "" {
		if manifest, err = LoadManifest(target.Manifest); err != nil {
			return nil, err
		}
	}
	if len(opts.Roles) == 0 {
		opts.Roles = DeclaredRoles(manifest)
	}
	jobs, err := planBoots(opts.Roles, opts.UserData, opts.RoleUserData)
	if err != nil {
		return nil, err
	}
	accel, verdict, err := ResolveAccel(ctx, opts.Accel, opts.QEMU, opts.Firmware)
	if err != nil {
		return nil, err
	}
	slog.Info("verify", "image", target.Image, "manifest", target.Manifest, "accel", accel, "why", verdict)
	if opts.Parallel <= 0 {
		opts.Parallel = max(1, runtime.NumCPU()/2)
		if accel == AccelKVM {
			opts.Parallel = runtime.NumCPU()
		}
	}
	if opts.Bundle == nil {
		if opts.Bundle, err = cloudinit.NewBundle("kubebake-verify", cloudinit.BundleOptions{}); err != nil {
			return nil, err
		}
	}
	if opts.ArtifactsDir == "" {
		opts.ArtifactsDir = filepath.Join(filepath.Dir(target.Image), "verify")
	}
	tempWork := false
	if opts.WorkDir == "" {
		if opts.WorkDir, err = os.MkdirTemp("", "kubebake-verify-"); err != nil {
			return nil, err
		}
		tempWork = true
	} else if err := privateDir(opts.WorkDir); err != nil {
		return nil, err
	}

	rep := &Report{Image: target.Image, Manifest: target.Manifest, Started: time.Now().UTC()}
	rep.Results = make([]Result, len(jobs))
	// Workers take the nodes in order (master before minion, cloud-init before Ignition).
	next := make(chan int, len(jobs))
	for i := range jobs {
		next <- i
	}
	close(next)
	var keptMu sync.Mutex
	var wg sync.WaitGroup
	for range min(opts.Parallel, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				j := jobs[i]
				if ctx.Err() != nil {
					rep.Results[i] = Result{Role: j.role, UserData: j.userData, Accel: accel,
						Checks: []Check{{Name: "stage/start", Expected: "VM started", Got: "cancelled before start"}}}
					continue
				}
				n := &node{opts: opts, target: target, manifest: manifest, accel: accel, role: j.role, userData: j.userData}
				rep.Results[i] = n.run(ctx)
				if n.kept {
					keptMu.Lock()
					rep.kept = append(rep.kept, n.machine)
					keptMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if tempWork {
		if rep.Kept() {
			rep.keptDir = opts.WorkDir
		} else {
			os.RemoveAll(opts.WorkDir)
		}
	}
	rep.Finish()
	rep.redactSecrets(opts.Bundle.Redactor())
	if !rep.Pass {
		rep.ArtifactsDir = opts.ArtifactsDir
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	return rep, nil
}

// node verifies one role with one user-data kind. Its phases can be driven separately (a
// cluster boots every node before proving any): begin, boot, prove, conclude, release.
type node struct {
	opts     Options
	target   Target
	manifest *Manifest
	accel    string
	role     string
	userData string
	// hostname names the node in a cluster (host name, VM, files, report); "" outside one.
	hostname string
	// inCluster: a master is there to join, so a minion's join must finish, not wait.
	inCluster bool
	// Cluster networking: the NIC on the cluster segment, forwards besides SSH, and the
	// address a master advertises.
	nics      []NIC
	forwards  []Forward
	advertise string
	// joinNodes (a cluster's master) are the minions whose join tokens it creates.
	joinNodes []string
	// nice lowers QEMU's host scheduling priority (a cluster's minions under TCG: the
	// master, which every step goes through, gets the host CPU first).
	nice int

	res     Result
	started time.Time
	machine *Machine
	session *Session
	key     *KeyPair
	seed    seedInfo
	kept    bool
}

type seedInfo struct {
	paths   []string
	secrets []string
}

// name is how logs and progress call the node: its host name in a cluster, else role/kind.
func (n *node) name() string {
	if n.hostname != "" {
		return n.hostname
	}
	return n.role + "/" + n.userData
}

// id names the node's files (VM overlay, seed, saved logs).
func (n *node) id() string {
	if n.hostname != "" {
		return n.hostname
	}
	return n.role + "-" + n.userData
}

func (n *node) progress(stage string) {
	slog.Info("verify stage", "node", n.name(), "stage", stage)
	if n.opts.Progress != nil {
		n.opts.Progress(n.name(), stage)
	}
}

// stageError is a stage that did not complete: it becomes a failed "stage/<name>" check.
type stageError struct {
	stage, expected, got string
}

func (e *stageError) Error() string { return e.stage + ": " + e.got }

// run verifies one node alone: boot, prove, verdict, then the VM is stopped (or kept).
func (n *node) run(ctx context.Context) Result {
	n.begin()
	err := n.boot(ctx)
	if err == nil {
		err = n.prove(ctx)
	}
	n.conclude(err)
	if !n.res.Pass {
		// Journals even after a cancel, as before: the VM may still answer.
		n.saveArtifacts(context.Background(), nil)
	}
	n.release(ctx)
	return n.res
}

func (n *node) begin() {
	n.res = Result{Role: n.role, UserData: n.userData, Accel: n.accel, Node: n.hostname}
	n.started = time.Now()
}

// conclude records the error that ended the node's phases (if any) and the verdict.
func (n *node) conclude(err error) {
	var se *stageError
	switch {
	case errors.As(err, &se):
		n.res.Checks = append(n.res.Checks, Check{Name: "stage/" + se.stage, Expected: se.expected, Got: se.got})
	case err != nil:
		n.res.Checks = append(n.res.Checks, Check{Name: "stage/setup", Expected: "VM set up", Got: err.Error()})
	}
	n.res.Seconds = time.Since(n.started).Seconds()
	n.res.Finish()
}

// release closes the session and stops the VM, or leaves it running for --keep.
func (n *node) release(ctx context.Context) {
	if n.session != nil {
		n.session.Close()
	}
	if n.machine != nil {
		if n.opts.Keep && ctx.Err() == nil {
			n.keep()
		} else {
			n.machine.Stop()
		}
	}
}

func (n *node) timed(name string, f func() error) error {
	n.progress(name)
	t := time.Now()
	err := f()
	n.res.Stages = append(n.res.Stages, Stage{Name: name, Seconds: time.Since(t).Seconds()})
	return err
}

// boot writes the user-data, starts the VM, waits for its SSH server and logs in.
func (n *node) boot(ctx context.Context) error {
	var err error
	if n.key, err = NewKeyPair(); err != nil {
		return err
	}
	cfg := MachineConfig{
		Name: n.id(), Image: n.target.Image, WorkDir: n.opts.WorkDir, Accel: n.accel,
		CPUs: n.opts.CPUs, MemoryMiB: n.opts.MemoryMiB, Firmware: n.opts.Firmware, QEMU: n.opts.QEMU,
		NICs: n.nics, Forwards: n.forwards, Nice: n.nice,
	}
	if err := n.writeSeed(&cfg); err != nil {
		return err
	}
	if err := n.timed("start", func() error {
		n.machine, err = StartMachine(ctx, cfg)
		return err
	}); err != nil {
		return &stageError{"start", "QEMU starts", err.Error()}
	}
	if err := n.timed("boot", func() error { return n.waitBoot(ctx) }); err != nil {
		return err
	}
	if err := n.timed("ssh", func() error { return n.login(ctx) }); err != nil {
		return err
	}
	if n.opts.Keep {
		// Write the key now, not only at the end: a kept run is one to look into while it runs.
		n.writeKey()
	}
	return nil
}

// prove waits for the boot to settle and runs the role's checks (image checks meanwhile).
func (n *node) prove(ctx context.Context) error {
	vctx, stop := n.vmContext(ctx)
	defer stop()
	sctx, cancelSettle := context.WithTimeout(vctx, n.opts.TimeoutSettle)
	defer cancelSettle()
	if err := n.loadManifest(sctx); err != nil {
		if n.vmGone(vctx) {
			return &stageError{"settle", "the VM runs until its checks are done", n.vmGoneGot("during settle")}
		}
		return &stageError{"checks", "a manifest to derive the checks from", err.Error()}
	}
	spec := n.spec()
	if err := spec.Check(); err != nil {
		return &stageError{"checks", "a manifest to derive the checks from", err.Error()}
	}
	probes := Probes(spec)
	// Checks of what the image holds (binaries, packages, tools) do not depend on the boot
	// having finished: they run while the boot settles.
	var static, dynamic []Probe
	for _, p := range probes {
		if p.Static {
			static = append(static, p)
		} else {
			dynamic = append(dynamic, p)
		}
	}
	type scriptResult struct {
		outs map[string]Output
		err  error
	}
	staticCtx, cancelStatic := context.WithTimeout(vctx, n.opts.TimeoutSettle+n.opts.TimeoutChecks)
	defer cancelStatic()
	staticDone := make(chan scriptResult, 1)
	session := n.session // the static probes keep the session they started on
	go func() {
		outs, err := n.runProbesOn(staticCtx, session, static)
		staticDone <- scriptResult{outs, err}
	}()
	var settleNote *Check
	_ = n.timed("settle", func() error {
		settleNote = n.settle(sctx)
		return nil
	})
	if n.vmGone(vctx) {
		// Nothing left to check: say how the VM ended, with its console, at once.
		return &stageError{"settle", "the VM runs until its checks are done", n.vmGoneGot("during settle")}
	}
	// The checks have their own budget: a boot that hung still gets them and its journals.
	cctx, cancelChecks := context.WithTimeout(vctx, n.opts.TimeoutChecks)
	defer cancelChecks()
	return n.timed("checks", func() error {
		outs, err := n.runProbes(cctx, dynamic)
		// The image checks started during settle; they end with the checks' budget too.
		var st scriptResult
		select {
		case st = <-staticDone:
		case <-cctx.Done():
			cancelStatic()
			st = <-staticDone
		}
		for k, v := range st.outs {
			outs[k] = v
		}
		if err == nil {
			err = st.err
		}
		logSlowProbes(n.name(), outs)
		checks := Evaluate(probes, outs)
		if settleNote != nil {
			checks = append([]Check{*settleNote}, checks...)
		}
		n.res.Checks = append(n.res.Checks, checks...)
		switch {
		case err != nil && n.vmGone(vctx):
			return &stageError{"checks", "the VM runs until its checks are done", n.vmGoneGot("during the checks")}
		case err != nil:
			return &stageError{"checks", fmt.Sprintf("checks finish within %s", n.opts.TimeoutChecks), err.Error()}
		}
		return nil
	})
}

func (n *node) writeSeed(cfg *MachineConfig) error {
	b := n.opts.Bundle
	copts := cloudinit.Options{SSHAuthorizedKeys: []string{n.key.AuthorizedKey}, Roles: n.knownRoles(),
		Hostname: n.hostname, AdvertiseAddress: n.advertise, JoinNodes: n.joinNodes}
	files, err := cloudinit.NodeFiles(b, n.role, copts)
	if err != nil {
		return err
	}
	for _, f := range files {
		n.seed.paths = append(n.seed.paths, f.Path)
	}
	n.seed.secrets = bundleSecrets(b, n.tokenNodes()...)
	id := n.id()
	switch n.userData {
	case UserDataIgnition:
		ign, err := cloudinit.RenderIgnition(b, n.role, copts)
		if err != nil {
			return err
		}
		cfg.IgnitionConfig = filepath.Join(n.opts.WorkDir, id+".ign")
		return atomicfile.WriteFile(cfg.IgnitionConfig, ign, 0o600)
	default:
		cfg.SeedISO = filepath.Join(n.opts.WorkDir, id+"-seed.iso")
		return cloudinit.Seed(cfg.SeedISO, b, n.role, cloudinit.SeedOptions{Options: copts})
	}
}

// boot is one VM of a verify run: a role and the user-data kind that gives it.
type boot struct{ role, userData string }

// planBoots lists the boots in order (master before minion, cloud-init before Ignition): each
// role once per kind, or once with its kind in byRole. A role in byRole that is not booted is
// an error: a typo would otherwise prove nothing.
func planBoots(roles, kinds []string, byRole map[string]string) ([]boot, error) {
	var boots []boot
	for role := range byRole {
		if !slices.Contains(roles, role) {
			return nil, fmt.Errorf("--userdata %s=%s: %s is not a role this run boots (%s)", role, byRole[role], role, strings.Join(roles, ", "))
		}
	}
	for _, r := range roles {
		if u, ok := byRole[r]; ok {
			boots = append(boots, boot{r, u})
			continue
		}
		for _, u := range kinds {
			boots = append(boots, boot{r, u})
		}
	}
	return boots, nil
}

// DeclaredRoles are the roles "verify --role all" boots: master and minion, then every other
// role the image's recipe declares, by name. Without a manifest: master and minion.
func DeclaredRoles(m *Manifest) []string {
	roles := []string{RoleMaster, RoleMinion}
	if m == nil {
		return roles
	}
	var custom []string
	for r := range m.RoleUnits() {
		if !slices.Contains(roles, r) {
			custom = append(custom, r)
		}
	}
	slices.Sort(custom)
	return append(roles, custom...)
}

// knownRoles are the roles user-data may select: the image's (DeclaredRoles) and this node's.
func (n *node) knownRoles() []string {
	roles := DeclaredRoles(n.manifest)
	if !slices.Contains(roles, n.role) {
		roles = append(roles, n.role)
	}
	return roles
}

// tokenNodes are the nodes whose join tokens this node's user-data holds: its own (a named
// node) and, on a master, the minions it expects.
func (n *node) tokenNodes() []string {
	nodes := slices.Clone(n.joinNodes)
	if n.hostname != "" && n.role != RoleMaster {
		nodes = append(nodes, n.hostname)
	}
	return nodes
}

// bundleSecrets are single-line strings that identify the bundle's secrets on disk: the
// shared token, the join tokens of nodes, and one line from the middle of the CA key's PEM
// body.
func bundleSecrets(b *cloudinit.Bundle, nodes ...string) []string {
	s := []string{b.BootstrapToken}
	for _, node := range nodes {
		s = append(s, b.NodeToken(node))
	}
	var body []string
	for _, l := range strings.Split(b.CAKey, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "-----") {
			body = append(body, l)
		}
	}
	if len(body) > 0 {
		s = append(s, body[len(body)/2])
	}
	return s
}

// waitBoot waits for the guest's SSH server to send its banner.
func (n *node) waitBoot(ctx context.Context) error {
	bctx, cancel := context.WithTimeout(ctx, n.opts.TimeoutBoot)
	defer cancel()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		if _, err := SSHBanner(bctx, n.machine.SSHAddr, 5*time.Second); err == nil {
			return nil
		}
		select {
		case <-n.machine.Done():
			_, werr := n.machine.Exited()
			return &stageError{"boot", "the guest boots and its SSH server answers",
				fmt.Sprintf("QEMU exited after %s (%v); %s", n.machine.Uptime().Round(time.Second), werr, n.serialHint())}
		case <-bctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &stageError{"boot", fmt.Sprintf("the guest's SSH server answers within %s", n.opts.TimeoutBoot),
				fmt.Sprintf("boot hung: no SSH banner on %s after %s; %s", n.machine.SSHAddr, n.opts.TimeoutBoot, n.serialHint())}
		case <-tick.C:
		}
	}
}

func (n *node) serialHint() string {
	tail := n.machine.SerialTail(3)
	if tail == "" {
		return "the serial console is empty (firmware or boot loader hung?)"
	}
	hint := ""
	if failed := n.machine.SerialFailures(3); len(failed) > 0 {
		hint = "console shows: " + strings.Join(failed, " | ") + "; "
	}
	if n.machine.SerialHas(" login: ") {
		hint += "the guest reached its login prompt, so SSH is unreachable rather than the boot stuck: " +
			"is the NIC configured (DHCP) without cloud-init, and does sshd run?; "
	}
	return hint + "last console lines: " + strings.ReplaceAll(tail, "\n", " | ")
}

// login authenticates with the ephemeral key, which the user-data installs.
func (n *node) login(ctx context.Context) error {
	vctx, stop := n.vmContext(ctx)
	defer stop()
	sctx, cancel := context.WithTimeout(vctx, n.opts.TimeoutSSH)
	defer cancel()
	s, err := DialRetry(sctx, n.machine.SSHAddr, "root", n.key.Signer)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if n.vmGone(vctx) {
			return &stageError{"ssh", "root logs in with the user-data's SSH key", n.vmGoneGot("before root could log in")}
		}
		got := fmt.Sprintf("SSH login hung for %s: %v", n.opts.TimeoutSSH, err)
		if errors.Is(err, ErrAuth) {
			got = fmt.Sprintf("the guest refused the key for %s (user-data not applied?): %v", n.opts.TimeoutSSH, err)
		}
		return &stageError{"ssh", "root logs in with the user-data's SSH key", got}
	}
	n.session = s
	if n.opts.afterLogin != nil {
		return n.opts.afterLogin(ctx, s)
	}
	return nil
}

// errVMExited is the cause of a context cancelled because QEMU exited.
var errVMExited = errors.New("the VM exited")

// vmContext is ctx, cancelled with errVMExited the moment QEMU exits, so that no stage waits
// out its deadline on a VM that is gone (QEMU runs with -no-reboot: a guest reboot or power
// off ends it). stop releases the watcher.
func (n *node) vmContext(ctx context.Context) (context.Context, func()) {
	vctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-n.machine.Done():
			cancel(errVMExited)
		case <-done:
		}
	}()
	return vctx, func() { close(done); cancel(context.Canceled) }
}

// vmGone says whether ctx (from vmContext) ended because QEMU exited.
func (n *node) vmGone(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errVMExited)
}

// vmGoneGot says how the VM ended, with the serial console's last lines.
func (n *node) vmGoneGot(when string) string {
	_, werr := n.machine.Exited()
	how := "powered off or rebooted"
	if werr != nil {
		how = fmt.Sprintf("died (%v)", werr)
	}
	return fmt.Sprintf("the VM %s %s, %s after it started; %s", how, when, n.machine.Uptime().Round(time.Second), n.serialHint())
}

// redial replaces a session that broke (the guest's sshd restarted, a deadline cut it) while
// the VM still runs. It gives up after a minute: the session has dropped for good.
func (n *node) redial(ctx context.Context) error {
	if n.session != nil {
		n.session.Close()
	}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := DialRetry(dctx, n.machine.SSHAddr, "root", n.key.Signer)
	if err != nil {
		return err
	}
	n.session = s
	return nil
}

// settle waits until boot is done: no start jobs left except those of units allowed to wait
// (a lone minion's join and what depends on it), and on a master until the API server is
// ready. It returns a failed check when the deadline passes first, when a unit of the role
// fails (no point waiting for a boot that cannot finish), or when the session drops for
// good; it returns at once when the VM exits (prove then says how).
func (n *node) settle(ctx context.Context) *Check {
	mayWait := map[string]bool{}
	if n.loneJoiner() {
		for _, u := range n.roleUnits()[n.role] {
			mayWait[u] = true
		}
	}
	roleUnits := n.roleUnits()[n.role]
	var pending []string
	apiReady := n.role != RoleMaster
	var lastReadyz string
	for {
		out, err := n.session.Run(ctx, settleCommand)
		switch {
		case err != nil && ctx.Err() == nil:
			// The connection broke while the VM runs: re-dial, or stop waiting.
			if rerr := n.redial(ctx); rerr != nil && ctx.Err() == nil {
				return &Check{Name: "stage/settle", Expected: "boot finishes (no start jobs left)",
					Got: fmt.Sprintf("the SSH session dropped (%v) and could not be re-established: %v", err, rerr)}
			}
			continue
		case err == nil:
			jobs, failed, readyz := parseSettle(string(out.Stdout))
			if f := slices.DeleteFunc(failed, func(u string) bool { return !slices.Contains(roleUnits, u) || mayWait[u] }); len(f) > 0 {
				return &Check{Name: "stage/settle", Expected: "boot finishes (no start jobs left)",
					Got: "a unit of the role failed during boot: " + strings.Join(f, " "), Units: f}
			}
			pending = pending[:0]
			for _, j := range jobs {
				if !mayWait[j] {
					pending = append(pending, j)
				}
			}
			if !apiReady {
				apiReady = readyz == "ok"
				lastReadyz = readyz
			}
			if len(pending) == 0 && apiReady {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if n.vmGone(ctx) {
				return nil // prove reports the VM's end
			}
			if len(pending) > 0 {
				return &Check{Name: "stage/settle", Expected: "boot finishes (no start jobs left)",
					Got: "boot hung: jobs still pending: " + strings.Join(pending, " "), Units: slices.Clone(pending)}
			}
			return &Check{Name: "stage/settle", Expected: "the API server becomes ready",
				Got: "API server not ready: " + lastReadyz, Units: n.roleUnits()[RoleMaster]}
		case <-time.After(3 * time.Second):
		}
	}
}

// settleCommand reports, in three sections, the pending start jobs, the failed units and,
// once no job is left on a master, the API server's readiness (asked only then: kubectl is
// not free on a loaded guest).
var settleCommand = "jobs=$(systemctl list-jobs --no-legend --plain --no-pager | grep '^[0-9]'); printf '%s\\n' \"$jobs\"; echo " + settleSep +
	"; systemctl list-units --failed --no-legend --plain --no-pager; echo " + settleSep +
	"; if [ -z \"$jobs\" ] && [ -e " + AdminKubeconfig + " ]; then " + ReadyzCommand + " 2>&1 | head -n 1; fi"

const settleSep = "--kubebake-settle--"

// parseSettle reads settleCommand's output: the units with start jobs, the failed units and
// the first line of the readyz answer.
func parseSettle(out string) (jobs, failed []string, readyz string) {
	sections := strings.SplitN(out, settleSep+"\n", 3)
	for _, l := range strings.Split(sections[0], "\n") {
		if f := strings.Fields(l); len(f) >= 2 && isNumber(f[0]) {
			jobs = append(jobs, f[1])
		}
	}
	if len(sections) > 1 {
		for _, l := range strings.Split(sections[1], "\n") {
			if f := strings.Fields(l); len(f) >= 1 && strings.Contains(f[0], ".") {
				failed = append(failed, f[0])
			}
		}
	}
	if len(sections) > 2 {
		readyz, _, _ = strings.Cut(strings.TrimSpace(sections[2]), "\n")
	}
	return jobs, failed, readyz
}

func (n *node) roleUnits() map[string][]string {
	if n.manifest == nil {
		return nil
	}
	return n.manifest.RoleUnits()
}

// loadManifest reads the image's manifest from the guest when none was found beside it.
func (n *node) loadManifest(ctx context.Context) error {
	if n.manifest != nil {
		return nil
	}
	data, err := n.session.ReadFile(ctx, GuestManifestPath)
	if err != nil {
		return fmt.Errorf("no manifest.json beside the image and none in the guest: %w", err)
	}
	if n.manifest, err = ParseManifest(data, GuestManifestPath+" in the guest"); err != nil {
		return err
	}
	return nil
}

// loneJoiner: a node of a role that joins a master (every role but master, custom ones
// included), booted with no master to join. Its join, and what waits for it, may retry.
func (n *node) loneJoiner() bool { return n.role != RoleMaster && !n.inCluster }

// spec is what this node must show, from the manifest and its user-data.
func (n *node) spec() Spec {
	spec := n.manifest.Spec(n.role)
	spec.UserData = n.userData
	spec.LoneMinion = n.loneJoiner()
	spec.UserDataPaths = n.seed.paths
	spec.Secrets = n.seed.secrets
	return spec
}

// runProbes runs probes in one guest script and returns their outputs by name.
func (n *node) runProbes(ctx context.Context, probes []Probe) (map[string]Output, error) {
	return n.runProbesOn(ctx, n.session, probes)
}

// runProbesOn runs probes on a given session (the static probes keep theirs while settle may
// re-dial).
func (n *node) runProbesOn(ctx context.Context, s *Session, probes []Probe) (map[string]Output, error) {
	if len(probes) == 0 {
		return map[string]Output{}, nil
	}
	out, err := s.RunScript(ctx, BuildScript(probes))
	return ParseScriptOutput(probes, string(out.Stdout)), err
}

// logSlowProbes says where the checks' time went, slowest first.
func logSlowProbes(node string, outs map[string]Output) {
	type pt struct {
		name string
		ms   int
	}
	var all []pt
	total := 0
	for name, o := range outs {
		all = append(all, pt{name, o.Millis})
		total += o.Millis
	}
	slices.SortFunc(all, func(a, b pt) int { return b.ms - a.ms })
	var top []string
	for _, p := range all[:min(5, len(all))] {
		top = append(top, fmt.Sprintf("%s %.1fs", p.name, float64(p.ms)/1000))
	}
	slog.Debug("check times", "node", node, "probes", len(outs), "guest_cpu_s", float64(total)/1000, "slowest", strings.Join(top, ", "))
}

// Failure artifacts can hold secrets (journals of the bootstrap units, the cluster's
// kubeconfig): files are 0600 in a 0700 folder (privateDir), and what is saved from the
// guest has the user-data's secrets hidden (node.redactor).
const (
	artifactDirMode  = 0o700
	artifactFileMode = 0o600
)

// saveArtifacts keeps the serial logs (every boot's) and the journals of the units that
// failed checks name, plus extraUnits, and the whole journal of the current boot. Journals
// are not fetched once ctx has ended (an interrupted run) or QEMU has exited.
func (n *node) saveArtifacts(ctx context.Context, extraUnits []string) {
	dir := n.opts.ArtifactsDir
	if err := privateDir(dir); err != nil {
		slog.Warn("cannot save failure logs", "dir", dir, "err", err)
		return
	}
	red := n.redactor()
	save := func(name string, data []byte) {
		p := filepath.Join(dir, n.id()+"-"+name)
		if err := atomicfile.WriteFile(p, red.Bytes(data), artifactFileMode); err != nil {
			slog.Warn("cannot save a failure log", "file", p, "err", err)
			return
		}
		n.res.Artifacts = append(n.res.Artifacts, p)
	}
	if n.machine != nil {
		for i, log := range n.machine.SerialLogs {
			if b, err := os.ReadFile(log); err == nil {
				name := "serial.log"
				if i > 0 {
					name = fmt.Sprintf("serial-boot%d.log", i+1)
				}
				save(name, b)
			}
		}
	}
	if n.session == nil || ctx.Err() != nil {
		return
	}
	if exited, _ := n.machine.Exited(); exited {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	units := append(UnitsToExplain(n.res.Checks), extraUnits...)
	for _, c := range n.res.Checks {
		units = append(units, FailedUnitsIn(c)...)
	}
	slices.Sort(units)
	for _, u := range slices.Compact(units) {
		// Every boot the journal kept: a node restarted by the cluster test has two.
		// Unit names may come from the guest's own output (FailedUnitsIn): quoted, or skipped.
		q, err := shell.QuoteErr(u)
		if err != nil {
			continue
		}
		out, err := n.session.Run(ctx, "journalctl --no-pager -u "+q+"; systemctl status --no-pager -l "+q)
		if err != nil {
			continue
		}
		save(strings.ReplaceAll(u, "/", "_")+".journal.txt", out.Stdout)
	}
	if out, err := n.session.Run(ctx, "journalctl -b --no-pager"); err == nil {
		save("journal.txt", out.Stdout)
	}
}

// keep leaves the VM running and records how to log in: the ephemeral private key is
// written 0600 beside the report.
func (n *node) keep() {
	keyFile := n.writeKey()
	n.kept = true
	_, port, _ := strings.Cut(n.machine.SSHAddr, ":")
	n.res.SSH = sshCommand(keyFile, port)
}

// writeKey saves the node's SSH key (0600) in the artifacts folder for --keep; it returns
// the file's path.
func (n *node) writeKey() string {
	dir := n.opts.ArtifactsDir
	keyFile := filepath.Join(dir, n.id()+"-id_ed25519")
	err := privateDir(dir)
	var pemKey []byte
	if err == nil {
		pemKey, err = n.key.PrivateKeyPEM()
	}
	if err == nil {
		err = atomicfile.WriteFile(keyFile, pemKey, artifactFileMode)
	}
	if err != nil {
		slog.Warn("cannot write the SSH key for --keep", "err", err)
	}
	return keyFile
}

func isNumber(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
