package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kubebake/kubebake/recipes"
	"github.com/kubebake/kubebake/roles"
)

func init() {
	var (
		lockFile string
		units    bool
		cat      string
	)
	cmd := &cobra.Command{
		Use:   "layer NAME|PATH",
		Short: "Show the node layer: every file kubebake adds to the image",
		Long: `Render a recipe's node layer and print it: binaries, systemd units and role drop-ins,
runtime, kubelet and CNI configuration, sysctl.d, modules-load.d and scripts, with path, mode,
owner and size (or the lock artifact whose cached blob is the content).

The lock is read from beside the recipe (x.yaml -> x.lock) or from --lock. Without a lock the
layer is still shown, with the recipe's versions and no digests; an image cannot be built
from it.`,
		Example: `  kubebake layer debian-12
  kubebake layer debian-12 --units
  kubebake layer debian-12 --cat /usr/lib/systemd/system/kubelet.service
  kubebake layer recipes/debian-12.yaml -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeRecipes,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLayer(cmd, args[0], lockFile, units, cat)
		},
	}
	cmd.Flags().StringVar(&lockFile, "lock", "", "lock file (default: the recipe's own lock)")
	cmd.Flags().BoolVar(&units, "units", false, "list the systemd units and the roles that start them")
	cmd.Flags().StringVar(&cat, "cat", "", "print the content of one rendered file of the layer")
	rootCmd.AddCommand(cmd)
}

// layerEntry is one file as `kubebake layer -o json` shows it (contents left out).
type layerEntry struct {
	Path     string `json:"path"`
	Type     string `json:"type"`
	Mode     string `json:"mode"`
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256,omitempty"`
	Artifact string `json:"artifact,omitempty"`
	Target   string `json:"target,omitempty"`
}

type layerResult struct {
	Recipe   string         `json:"recipe"`
	Lock     string         `json:"lock,omitempty"`
	LockHash string         `json:"lockHash,omitempty"`
	Unlocked bool           `json:"unlocked"`
	Files    []layerEntry   `json:"files,omitempty"`
	Units    []roles.Unit   `json:"units,omitempty"`
	Summary  map[string]int `json:"summary,omitempty"`
}

func runLayer(cmd *cobra.Command, arg, lockFile string, showUnits bool, cat string) error {
	r, err := recipes.Load(arg)
	if err != nil {
		return err
	}
	res := layerResult{Recipe: r.Name}
	var lock *recipes.Lock
	if lockFile != "" {
		if lock, err = recipes.ReadLock(lockFile); err != nil {
			return err
		}
		res.Lock = lockFile
	} else if lock, err = recipes.ReadRecipeLock(r); err != nil {
		slog.Warn("showing the layer without a lock: no digests, versions as the recipe says", "err", err)
		lock = nil
	} else {
		res.Lock = recipes.LockPath(r.File)
	}
	if lock != nil {
		if err := recipes.CheckLock(r, lock); err != nil {
			var drift *recipes.DriftError
			if !errors.As(err, &drift) {
				return err
			}
			slog.Warn("the lock does not match the recipe; showing what it pins", "err", err)
		}
		res.LockHash = recipes.LockHash(lock)
	}
	res.Unlocked = lock == nil

	layer, err := roles.Render(r, lock)
	if err != nil {
		return err
	}

	if cat != "" {
		f, ok := layer.File(cat)
		if !ok {
			return fmt.Errorf("the layer of %s has no %s; see \"kubebake layer %s\"", r.Name, cat, arg)
		}
		if f.Type != roles.TypeFile || f.Artifact != "" {
			return fmt.Errorf("%s is a %s, not a rendered file", cat, describeKind(f))
		}
		_, err := cmd.OutOrStdout().Write(f.Content)
		return err
	}

	if showUnits {
		if res.Units, err = roles.Units(r); err != nil {
			return err
		}
		return printResult(cmd, res, func() string { return unitsText(res.Units) })
	}

	res.Summary = map[string]int{}
	var total int64
	for _, f := range layer.Files {
		e := layerEntry{Path: f.Path, Type: string(f.Type), Mode: fmt.Sprintf("%04o", f.Mode.Perm()), UID: f.UID, GID: f.GID,
			Size: f.Size, SHA256: f.SHA256, Artifact: f.Artifact, Target: f.Target}
		res.Files = append(res.Files, e)
		res.Summary[string(f.Type)]++
		if f.Artifact != "" {
			res.Summary["artifact"]++
		}
		total += f.Size
	}
	return printResult(cmd, res, func() string {
		var b strings.Builder
		w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "MODE\tOWNER\tSIZE\tPATH\tFROM")
		for _, e := range res.Files {
			size, from, path := fmt.Sprint(e.Size), "", e.Path
			switch {
			case e.Type == string(roles.TypeDir):
				size, path = "-", path+"/"
			case e.Type == string(roles.TypeSymlink):
				size, from = "-", "-> "+e.Target
			case e.Artifact != "" && e.SHA256 == "":
				size, from = "?", "artifact "+e.Artifact+" (not locked)"
			case e.Artifact != "":
				from = "artifact " + e.Artifact + " sha256:" + e.SHA256[:12]
			default:
				from = "rendered"
			}
			fmt.Fprintf(w, "%s\t%d:%d\t%s\t%s\t%s\n", e.Mode, e.UID, e.GID, size, path, from)
		}
		w.Flush()
		lockNote := "lock " + res.Lock
		if res.Unlocked {
			lockNote = "no lock: digests and pinned versions unknown"
		}
		fmt.Fprintf(&b, "\n%s: %d files (%d artifacts), %d directories, %d symlinks, %d bytes known; %s\n",
			r.Name, res.Summary["file"], res.Summary["artifact"], res.Summary["dir"], res.Summary["symlink"], total, lockNote)
		return b.String()
	})
}

func unitsText(units []roles.Unit) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "UNIT\tROLES\tSTARTED BY\tFROM")
	for _, u := range units {
		rolesCol := strings.Join(u.Roles, ",")
		if rolesCol == "" {
			rolesCol = "(every node)"
		}
		started := "a unit that needs it"
		switch {
		case u.Enabled && len(u.Roles) > 0:
			started = roles.RolesTarget
		case u.Enabled:
			started = "multi-user.target"
		case len(u.Roles) == 0:
			started = "-"
		}
		from := "layer"
		if u.Foreign {
			from = "Debian package (drop-in only)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", u.Name, rolesCol, started, from)
	}
	w.Flush()
	return b.String()
}

func describeKind(f roles.File) string {
	if f.Artifact != "" {
		return "binary (artifact " + f.Artifact + ")"
	}
	return string(f.Type)
}
