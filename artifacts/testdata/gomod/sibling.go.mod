// A go.mod shaped like go.etcd.io/etcd/server/v3's: sibling modules required at real
// versions, replaced by ../ folders for development only.
module example.com/db/server/v3

go 1.26.0

toolchain go1.26.10

require (
	example.com/db/api/v3 v3.6.16
	example.com/db/client/v3 v3.6.16
)

replace (
	example.com/db/api/v3 => ../api
	example.com/db/client/v3 => ../client/v3
)

replace example.com/db => ./FORBIDDEN_DEPENDENCY
