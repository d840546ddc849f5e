package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/certfleet/certfleet/internal/health"
)

// The listener of roles without an API answers /healthz from liveness only
// and /readyz from both, like the API server's.
func TestMetricsHandlerHealth(t *testing.T) {
	reg := health.New()
	reg.Ready("redis", func(context.Context) error { return errors.New("connection refused") })
	h := metricsHandler("agent", reg)
	for _, tc := range []struct {
		path string
		want int
	}{{"/healthz", http.StatusOK}, {"/readyz", http.StatusServiceUnavailable}, {"/metrics", http.StatusOK}} {
		t.Run(tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rec.Code != tc.want {
				t.Fatalf("got %d, want %d", rec.Code, tc.want)
			}
		})
	}
}
