package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/kubebake/kubebake/internal/redact"
	"github.com/kubebake/kubebake/recipes"
)

func init() {
	recipeCmd := &cobra.Command{
		Use:   "recipe",
		Short: "List, show and lint recipes",
		Long: `A recipe says what a Kubernetes node image holds. NAME is an embedded recipe
(see "kubebake recipe list"); PATH is a recipe file.`,
	}
	recipeCmd.AddCommand(recipeListCmd(), recipeShowCmd(), recipeLintCmd())
	rootCmd.AddCommand(recipeCmd)
}

// completeRecipes offers the embedded names; files complete as usual.
func completeRecipes(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return recipes.EmbeddedNames(), cobra.ShellCompDirectiveDefault
}

func recipeListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the embedded recipes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := recipes.List()
			if err != nil {
				return err
			}
			return printResult(cmd, list, func() string {
				var b strings.Builder
				w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tRELEASE\tKUBERNETES\tFILE")
				for _, s := range list {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Name, s.Release, s.Kubernetes, s.File)
				}
				w.Flush()
				return b.String()
			})
		},
	}
}

func recipeShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME|PATH",
		Short: "Print a recipe with every default filled in",
		Long: `Print a recipe as kubebake sees it: parsed strictly and with every default filled in,
as YAML (or JSON with --output json). A mirror's login shows as ***@.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeRecipes,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := recipes.Load(args[0])
			if err != nil {
				return err
			}
			// A mirror's login is for the build only: it is never printed.
			data, err := json.Marshal(r)
			if err != nil {
				return err
			}
			return printResult(cmd, json.RawMessage(redact.URLs(string(data))), func() string {
				var b strings.Builder
				enc := yaml.NewEncoder(&b)
				enc.SetIndent(2)
				if err := enc.Encode(r); err != nil {
					return "# " + err.Error() + "\n"
				}
				enc.Close()
				return redact.URLs(b.String())
			})
		},
	}
}

// lintResult is one recipe's outcome for --output json.
type lintResult struct {
	Recipe   string            `json:"recipe"`
	OK       bool              `json:"ok"`
	Findings []recipes.Finding `json:"findings"`
	Errors   []recipes.Problem `json:"errors,omitempty"` // the recipe did not parse
	// Runtime says how the kubelet reaches the container runtime, and why.
	Runtime string `json:"runtime,omitempty"`
}

func recipeLintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "lint NAME|PATH...",
		Short: "Check recipes for the pitfalls that break clusters",
		Long: `Parse each recipe strictly and check it for the known pitfalls: devicemapper or loopback
storage, missing bridge-nf-call sysctls or br_netfilter/overlay modules, missing conntrack,
socat, ebtables or iptables, unpinned or skewed versions, IPv6 without ip6tables or
forwarding, and unknown names. One line per finding:

  file:line:col: field: message (why it breaks clusters)

Exits non-zero when any recipe has an error; warnings alone pass.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeRecipes,
		RunE: func(cmd *cobra.Command, args []string) error {
			var results []lintResult
			failed := 0
			for _, arg := range args {
				res := lintResult{Recipe: arg, Findings: []recipes.Finding{}}
				r, err := recipes.Load(arg)
				var list recipes.ErrorList
				switch {
				case errors.As(err, &list):
					res.Errors = list
				case err != nil:
					res.Errors = []recipes.Problem{{Msg: err.Error()}} // the message names the file
				default:
					res.Recipe = r.File
					res.Findings = recipes.Lint(r)
					res.Runtime = recipes.ExplainRuntime(r.Runtime)
				}
				res.OK = len(res.Errors) == 0 && recipes.LintError(res.Findings) == nil
				if !res.OK {
					failed++
				}
				results = append(results, res)
			}
			err := printResult(cmd, results, func() string {
				var b strings.Builder
				for _, res := range results {
					for _, p := range res.Errors {
						fmt.Fprintln(&b, p.Error())
					}
					for _, f := range res.Findings {
						fmt.Fprintln(&b, f.String())
					}
					if res.Runtime != "" {
						fmt.Fprintf(&b, "%s: runtime: %s\n", res.Recipe, res.Runtime)
					}
					if res.OK {
						fmt.Fprintf(&b, "%s: ok\n", res.Recipe)
					}
				}
				return b.String()
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("lint failed for %d of %d recipes", failed, len(args))
			}
			return nil
		},
	}
}
