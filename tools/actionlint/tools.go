//go:build tools

// Package tools pins actionlint for `go run github.com/rhysd/actionlint/cmd/actionlint`.
package tools

import _ "github.com/rhysd/actionlint/cmd/actionlint"
