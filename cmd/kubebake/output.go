package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

// printResult writes a command's result to stdout: v as indented JSON with --output json,
// otherwise the text that text() returns.
func printResult(cmd *cobra.Command, v any, text func() string) error {
	out := cmd.OutOrStdout()
	if globals.output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := fmt.Fprint(out, text())
	return err
}
