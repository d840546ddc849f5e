package acme

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var (
	ordersTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_acme_orders_total",
		Help: "ACME orders by result: issued, renewed, failed, postponed (the account's daily order quota is spent).",
	}, []string{"result"})
	orderSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "certfleet_acme_order_seconds",
		Help:    "Time from the start of an order to the certificate, challenges included, of orders that succeeded.",
		Buckets: []float64{1, 2, 5, 10, 20, 30, 60, 120, 300},
	})
	dueGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "certfleet_acme_due",
		Help: "Managed certificates due now (requests, renewals, retries, deletions), as counted at the worker's last poll; it stays high when the worker falls behind.",
	})
	revocationsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_acme_revocations_total",
		Help: "Managed certificates deleted with revocation asked, by result: revoked, failed (retried), removed (given up or nothing to revoke).",
	}, []string{"result"})
)

// slogHandler hands lego's log records to zap at debug level: lego's
// messages help when an order fails, but the worker logs what matters.
type slogHandler struct {
	logger *zap.Logger
	attrs  []zap.Field
}

func newSlogger(logger *zap.Logger) *slog.Logger { return slog.New(&slogHandler{logger: logger}) }

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.logger.Core().Enabled(zapcore.DebugLevel)
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	fields := append([]zap.Field(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	})
	// lego's message is its own text ("[INFO] acme: ..."): a field, so
	// that the log message stays a fixed, lower-case one.
	h.logger.Debug("lego", append(fields, zap.String("message", r.Message))...)
	return nil
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := &slogHandler{logger: h.logger, attrs: append([]zap.Field(nil), h.attrs...)}
	for _, a := range attrs {
		out.attrs = append(out.attrs, zap.Any(a.Key, a.Value.Any()))
	}
	return out
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	return &slogHandler{logger: h.logger.Named(name), attrs: h.attrs}
}
