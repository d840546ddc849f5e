package health

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
