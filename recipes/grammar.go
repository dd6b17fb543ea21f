package recipes

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// The grammar of the names and values a recipe puts into files on the node: sysctl keys and
// values (/usr/lib/sysctl.d), kernel module names (/usr/lib/modules-load.d), role names (the
// marker /etc/sysconfig/kubernetes-<role>) and unit names. Lint, the node layer (roles/) and
// user-data (cloudinit/) all call these functions, so a recipe lint accepts is one they render
// and a value they would refuse never passes lint. Each returns nil or an error whose text is
// a message for the user without the field name (callers add the field and the position).

// MaxRoleNameLen is the longest role name. A role becomes the file name kubernetes-<role> under
// /etc/sysconfig (a NAME_MAX of 255 is far off), appears in systemd drop-ins of units whose names
// stay well under systemd's 255 characters, and becomes the node label
// node-role.kubebake.dev/<role>, whose name part Kubernetes caps at 63. 32 rather than 63 leaves
// room to combine a role with a prefix or suffix (a host or VM name such as <cluster>-<role>-<n>)
// and still fit one 63-character DNS label.
const MaxRoleNameLen = 32

// MaxModuleNameLen is the kernel's limit (MODULE_NAME_LEN, 64 bytes less a pointer on 64-bit,
// less the terminating NUL).
const MaxModuleNameLen = 55

// MaxSysctlKeyLen and MaxSysctlValueLen bound what one line of sysctl.d holds; the kernel reads
// a value in one page.
const (
	MaxSysctlKeyLen   = 255
	MaxSysctlValueLen = 4095
)

// MaxUnitNameLen is systemd's UNIT_NAME_MAX less the terminating NUL.
const MaxUnitNameLen = 255

var (
	roleNameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	moduleNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// A sysctl key is /proc/sys/ path components joined by '.' or '/', two or more, the first
	// a lower-case subsystem (net, kernel, vm, fs, ...). No globs, no '-' prefix.
	sysctlKeyRE = regexp.MustCompile(`^[a-z0-9_]+([./][A-Za-z0-9_-]+)+$`)
	// A unit name: a prefix, an optional template instance after '@', and a unit type suffix.
	unitNameRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(service|socket|device|mount|automount|swap|target|path|timer|slice|scope)$`)
)

// CheckRoleName accepts a role name: lower-case letters, digits and '-', starting and ending
// with a letter or digit, at most MaxRoleNameLen characters.
func CheckRoleName(name string) error {
	if len(name) > MaxRoleNameLen || !roleNameRE.MatchString(name) {
		return fmt.Errorf("%q is not a role name: use lower-case letters, digits and '-' (not at either end), at most %d characters", name, MaxRoleNameLen)
	}
	return nil
}

// CheckModuleName accepts a kernel module name as modules-load.d takes it.
func CheckModuleName(name string) error {
	if len(name) > MaxModuleNameLen || !moduleNameRE.MatchString(name) {
		return fmt.Errorf("%q is not a kernel module name: use letters, digits, '_' and '-', at most %d characters", name, MaxModuleNameLen)
	}
	return nil
}

// CheckSysctlKey accepts a sysctl name such as net.ipv4.ip_forward (or net/ipv4/ip_forward).
func CheckSysctlKey(key string) error {
	if len(key) > MaxSysctlKeyLen || !sysctlKeyRE.MatchString(key) {
		return fmt.Errorf("%q is not a sysctl name such as net.ipv4.ip_forward", key)
	}
	return nil
}

// CheckSysctlValue accepts a sysctl value: one non-empty line without control characters. A
// newline would let the value write a second setting into the sysctl.d file.
func CheckSysctlValue(value string) error {
	switch {
	case strings.TrimSpace(value) == "":
		return fmt.Errorf("has no value")
	case strings.ContainsAny(value, "\n\r"):
		return fmt.Errorf("value %q is not one line: a line break would add another setting to the sysctl.d file", value)
	case strings.ContainsFunc(value, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }):
		return fmt.Errorf("value %q holds a control character", value)
	case len(value) > MaxSysctlValueLen:
		return fmt.Errorf("value is %d bytes long: at most %d", len(value), MaxSysctlValueLen)
	}
	return nil
}

// CheckUnitName accepts a systemd unit name (name.service, name@instance.timer, ...).
func CheckUnitName(name string) error {
	if len(name) > MaxUnitNameLen || !unitNameRE.MatchString(name) {
		return fmt.Errorf("%q is not a systemd unit name such as kubelet.service", name)
	}
	return nil
}
