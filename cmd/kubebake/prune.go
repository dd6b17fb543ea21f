package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	kbaws "github.com/kubebake/kubebake/artifacts/aws"
)

func init() {
	var (
		af      awsFlags
		req     kbaws.PruneRequest
		regions []string
	)
	cmd := &cobra.Command{
		Use:   "aws --recipe NAME --keep N [--older-than DURATION] [--dry-run]",
		Short: "Deregister a recipe's old AMIs and delete their snapshots",
		Long: `Deregister the AMIs of a recipe (tag kubebake:recipe) beyond the newest --keep, and delete their
snapshots. With --older-than only AMIs created longer ago than that go. An AMI is never
removed while an instance that is pending, running, stopping, stopped or shutting down uses
it, or while any version of a launch template names it; such AMIs are listed as kept, with
the instance or template. --dry-run says what would go and removes nothing.

Each region is pruned on its own (--region, plus --regions): copies age separately.`,
		Example: `  kubebake prune aws --region eu-west-1 --recipe debian-12 --keep 3 --dry-run
  kubebake prune aws --region eu-west-1 --regions us-east-1 --recipe debian-12 --keep 3 --older-than 720h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := af.session(cmd.Context())
			if err != nil {
				return err
			}
			var results []*kbaws.PruneResult
			var errs []error
			for _, region := range append([]string{s.Region()}, regions...) {
				res, err := s.Prune(cmd.Context(), region, req)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", region, err))
				}
				if res != nil {
					results = append(results, res)
				}
				if cmd.Context().Err() != nil {
					return cmd.Context().Err()
				}
			}
			if len(results) > 0 {
				if err := printResult(cmd, results, func() string { return pruneText(results) }); err != nil {
					return err
				}
			}
			return errors.Join(errs...)
		},
	}
	af.register(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&regions, "regions", nil, "more regions to prune, comma-separated")
	f.StringVar(&req.Recipe, "recipe", "", "the recipe name whose AMIs to prune")
	f.IntVar(&req.Keep, "keep", 0, "how many of the newest AMIs to keep (at least 1)")
	f.DurationVar(&req.OlderThan, "older-than", 0, "remove only AMIs created longer ago than this (e.g. 720h)")
	f.BoolVar(&req.DryRun, "dry-run", false, "say what would be removed, remove nothing")
	cmd.MarkFlagRequired("recipe")
	cmd.MarkFlagRequired("keep")
	pruneCmd.AddCommand(cmd)
}

func pruneText(results []*kbaws.PruneResult) string {
	var b strings.Builder
	for _, res := range results {
		n := 0
		for _, p := range res.Images {
			if p.Action == kbaws.ActionRemoved || p.Action == kbaws.ActionWouldRemove {
				n++
			}
		}
		verb := "removed"
		if res.DryRun {
			verb = "would remove"
		}
		fmt.Fprintf(&b, "%s: %s %d of %d AMIs of %s\n", res.Region, verb, n, len(res.Images), res.Recipe)
		w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "AMI\tCREATED\tACTION\tWHY\tSNAPSHOTS")
		for _, p := range res.Images {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.ImageID, p.Created.Format(time.DateOnly), p.Action, p.Reason, dash(strings.Join(p.SnapshotIDs, ",")))
		}
		w.Flush()
	}
	return b.String()
}
