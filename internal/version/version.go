// Package version holds Isobar's version, set at build time with
//
//	go build -ldflags "-X github.com/isobar-mq/isobar/internal/version.Version=v1.2.3" ./cmd/isobar
//
// and otherwise taken from the module build information ("dev" for a
// development build).
package version

import "runtime/debug"

// Version is set by the linker; empty means "use the build information".
var Version = ""

// String returns the version to report.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
