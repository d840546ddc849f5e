package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// version is the release, set at build time with
// -ldflags "-X main.version=v1.2.3"; else the module's version or "devel".
var version = ""

// buildInfo is what `certfleet version` prints and certfleet_build_info
// carries: the release, the VCS revision and time the binary was built
// from (when Go recorded them), and the Go version.
type buildInfo struct {
	Version, Revision, Time, Modified, GoVersion string
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		b.Version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	return b
}

// buildInfoGauge is certfleet_build_info, 1, labelled with the build, on
// every role's /metrics (the Prometheus convention for versions).
var buildInfoGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
	Name: "certfleet_build_info",
	Help: "Always 1; the labels say which build of certfleet runs.",
}, []string{"version", "revision", "goversion"})

func init() {
	b := readBuildInfo()
	buildInfoGauge.WithLabelValues(b.Version, b.Revision, b.GoVersion).Set(1)
}

// runVersion is `certfleet version`.
func runVersion(stdout io.Writer) error {
	b := readBuildInfo()
	fmt.Fprintf(stdout, "certfleet %s\n", b.Version)
	if b.Revision != "" {
		dirty := ""
		if b.Modified == "true" {
			dirty = " (modified)"
		}
		fmt.Fprintf(stdout, "revision   %s%s, %s\n", b.Revision, dirty, b.Time)
	}
	fmt.Fprintf(stdout, "go         %s\n", b.GoVersion)
	return nil
}
