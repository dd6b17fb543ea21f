package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

// Every command reads its flags one way: -o/--output is the result format (text or json) and
// --out PATH is where a command writes a file or folder. No command gives either another meaning.

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

// outputFormat is the value of the global -o/--output flag: text or json, checked when the
// flag is parsed so that a file name given to it ("-o demo.bundle.yaml", as older versions
// of some commands took) is refused with the flag that writes files.
type outputFormat struct{ p *string }

func newOutputFormat(p *string, def string) outputFormat {
	*p = def
	return outputFormat{p}
}

func (o outputFormat) String() string {
	if o.p == nil {
		return ""
	}
	return *o.p
}

func (o outputFormat) Set(v string) error {
	if v != "text" && v != "json" {
		return fmt.Errorf("use text or json (-o/--output is the result format; to write a file use --out %s)", v)
	}
	*o.p = v
	return nil
}

func (o outputFormat) Type() string { return "format" }
