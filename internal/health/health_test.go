package health

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestEndpoints(t *testing.T) {
	down := func(context.Context) error { return errors.New("down") }
	up := func(context.Context) error { return nil }
	tests := []struct {
		name              string
		live, ready       Check
		wantLive, wantRdy int
	}{
		{"all well", up, up, 200, 200},
		{"dependency down keeps healthz", up, down, 200, 503},
		{"dead loop fails both", down, up, 503, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New()
			r.Live("loop", tt.live)
			r.Ready("redis", tt.ready)
			for _, c := range []struct {
				h    http.Handler
				want int
			}{{r.Healthz(), tt.wantLive}, {r.Readyz(), tt.wantRdy}} {
				rec := httptest.NewRecorder()
				c.h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				if rec.Code != c.want {
					t.Fatalf("got status %d, want %d (body %q)", rec.Code, c.want, rec.Body.String())
				}
				if want := `"status":"ok"`; c.want == 200 && !strings.Contains(rec.Body.String(), want) {
					t.Fatalf("got body %q, want %s", rec.Body.String(), want)
				}
				if c.want == 503 && !strings.Contains(rec.Body.String(), "down") {
					t.Fatalf("got body %q, want the failing check's error", rec.Body.String())
				}
			}
		})
	}
}

// TestCheckIgnoringDeadline: a check stuck past its deadline (a client
// dialing a hung server with a timeout of its own) fails readiness at the
// deadline instead of holding the answer.
func TestCheckIgnoringDeadline(t *testing.T) {
	r := New()
	release := make(chan struct{})
	defer close(release)
	r.Ready("clickhouse", func(context.Context) error { <-release; return nil })
	r.Ready("redis", func(context.Context) error { return nil })
	start := time.Now()
	rec := httptest.NewRecorder()
	r.Readyz().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if took := time.Since(start); took > CheckTimeout+time.Second {
		t.Errorf("answered after %s, want by the %s deadline", took, CheckTimeout)
	}
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "clickhouse: no answer within") || strings.Contains(rec.Body.String(), "redis") {
		t.Errorf("got %d %s, want 503 naming only the stuck check", rec.Code, rec.Body.String())
	}
}
