package main

import (
	"errors"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metricOwners maps the name prefix of each role's own metrics to the
// roles that run the parts declaring them. Every package registers its
// metrics on the default registry when the binary starts, so without this
// an agent would export the sink's and the API's series, always zero.
// Metrics under no prefix here (certfleet_stream_*, certfleet_build_info,
// go_*, process_*, and any new one until it is listed) are every role's.
var metricOwners = map[string][]string{
	"certfleet_agent_":        {"agent"},
	"certfleet_registration_": {"agent"}, // the agent's registration lookups
	"certfleet_coordinator_":  {"coordinator"},
	"certfleet_sink_":         {"coordinator"},
	"certfleet_notifier_":     {"coordinator"},
	"certfleet_acme_":         {"coordinator"}, // the ACME worker (managed certificates)
	"certfleet_apiserver_":    {"apiserver"},
	"certfleet_audit_":        {"apiserver"},
	"certfleet_projector_":    {"apiserver"},
	"certfleet_certificate_":  {"apiserver"}, // the expiry series: the API server serves them itself, with a token
}

// exports tells whether role's process exports the metric named name;
// "all" runs every part and exports everything.
func exports(role, name string) bool {
	if role == "all" {
		return true
	}
	for prefix, roles := range metricOwners {
		if strings.HasPrefix(name, prefix) {
			for _, r := range roles {
				if r == role {
					return true
				}
			}
			return false
		}
	}
	return true
}

// roleGatherer gathers the default registry's metrics that role exports.
func roleGatherer(role string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := prometheus.DefaultGatherer.Gather()
		out := mfs[:0]
		for _, mf := range mfs {
			if exports(role, mf.GetName()) {
				out = append(out, mf)
			}
		}
		return out, err
	})
}

// roleMetrics serves /metrics for role, instrumented as promhttp.Handler is.
func roleMetrics(role string) http.Handler {
	return promhttp.InstrumentMetricHandler(prometheus.DefaultRegisterer,
		promhttp.HandlerFor(roleGatherer(role), promhttp.HandlerOpts{}))
}

// roleRegisterer is where a role registers the collectors bound to its
// own objects (the notifier's queue depth).
// A collector takes the place of one already registered with the same
// metrics, so a process that runs a role again (the tests run
// `certfleet all` more than once in one binary) serves the new role's
// values instead of failing to start.
var roleRegisterer prometheus.Registerer = replacing{prometheus.DefaultRegisterer}

type replacing struct{ prometheus.Registerer }

func (r replacing) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		r.Registerer.Unregister(are.ExistingCollector)
		return r.Registerer.Register(c)
	}
	return err
}
