// A go.mod shaped like k8s.io/kubernetes's: staging modules required at the placeholder
// v0.0.0 and replaced by folders inside the module.

module example.com/kube

go 1.25.0

godebug default=go1.25

require (
	github.com/google/go-cmp v0.7.0
	example.com/api v0.0.0
	"example.com/quoted" v0.0.0 // a quoted path
)

require (
	github.com/davecgh/go-spew v1.1.1 // indirect
	example.com/indirect v0.0.0-00010101000000-000000000000 // indirect
)

replace (
	example.com/api => ./staging/src/example.com/api
	example.com/quoted => ./staging/src/example.com/quoted
	example.com/indirect => ./staging/src/example.com/indirect
)

// A replace by another published module is kept.
replace github.com/davecgh/go-spew v1.1.1 => github.com/example/go-spew v1.1.2

// A guard against an unwanted dependency: local, not required, dropped.
replace example.com/kube/forbidden => ./FORBIDDEN_DEPENDENCY

toolchain go1.25.3
