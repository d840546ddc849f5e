package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/certfleet/certfleet/events"
)

// Job results counted by certfleet_agent_jobs_total.
const (
	jobScanned = "scanned"
	jobStale   = "stale"
	jobBad     = "bad"
	jobFailed  = "publish-failed"
)

// Results of the legacy protocol probe.
const (
	legacyAccepted = "accepted"
	legacyRefused  = "refused"
	legacyFailed   = "no-answer"
)

var (
	handshakesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_agent_handshakes_total",
		Help: "Scans of one IP (or of a name that did not resolve), by outcome.",
	}, []string{"outcome"})
	handshakeSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "certfleet_agent_handshake_seconds",
		Help:    "Duration of completed TLS handshakes.",
		Buckets: prometheus.ExponentialBuckets(0.002, 2, 13), // 2ms .. 8s
	})
	httpProbesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_agent_http_probes_total",
		Help: "HEAD requests sent after a scan's handshake, by whether the server answered HTTP.",
	}, []string{"answered"})
	legacyProbesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_agent_legacy_tls_probes_total",
		Help: "Handshakes offering only TLS 1.0 and 1.1, by result (accepted, refused, no-answer).",
	}, []string{"result"})
	ipsSkippedTotal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "certfleet_agent_ips_skipped_total",
		Help: "Addresses of scanned domains not scanned because the domain had more than --max-ips-per-domain.",
	})
	jobsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_agent_jobs_total",
		Help: "Scan jobs taken from the job streams, by what became of them.",
	}, []string{"result"})

	// handshakes holds one counter per outcome, resolved once: the label
	// lookup would otherwise run on every handshake.
	handshakes = func() map[events.Outcome]prometheus.Counter {
		m := make(map[events.Outcome]prometheus.Counter, len(events.Outcomes))
		for _, o := range events.Outcomes {
			m[o] = handshakesTotal.WithLabelValues(string(o))
		}
		return m
	}()

	// httpProbes and legacyProbes are resolved once like handshakes.
	httpProbes = map[bool]prometheus.Counter{
		true:  httpProbesTotal.WithLabelValues("true"),
		false: httpProbesTotal.WithLabelValues("false"),
	}
	legacyProbes = map[string]prometheus.Counter{
		legacyAccepted: legacyProbesTotal.WithLabelValues(legacyAccepted),
		legacyRefused:  legacyProbesTotal.WithLabelValues(legacyRefused),
		legacyFailed:   legacyProbesTotal.WithLabelValues(legacyFailed),
	}
)

func countOutcome(o events.Outcome) {
	if c, ok := handshakes[o]; ok {
		c.Inc()
		return
	}
	handshakesTotal.WithLabelValues(string(o)).Inc()
}
