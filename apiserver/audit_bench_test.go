package apiserver

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/internal/testenv"
)

// BenchmarkAudited times a request through audited (the middleware, the
// account email lookup, the XADD of the record) against the same route
// without it, in turns within one loop on the same Redis, and reports
// both and their ratio.
func BenchmarkAudited(b *testing.B) {
	srv, err := New(Config{RateLimitGeneral: 1 << 30}, testenv.Redis(b).Client(b), testenv.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	tenant, err := srv.accounts.EnsureAccount(ctx, "bench@example.com")
	if err != nil {
		b.Fatal(err)
	}
	k, err := srv.accounts.CreateKey(ctx, tenant, "bench", []string{accounts.ScopeWrite}, nil, accounts.SourceCLI)
	if err != nil {
		b.Fatal(err)
	}
	handler := func(c *gin.Context) {
		audit.Detail(c, "common_name", "user@example.com")
		c.JSON(http.StatusOK, gin.H{"ok": true})
	}
	srv.engine.POST("/bench/plain/:id", srv.auth.RequireKey(accounts.ScopeWrite), handler)
	srv.engine.POST("/bench/audited/:id", srv.audit.Audited("revoke", "certificate"), srv.auth.RequireKey(accounts.ScopeWrite), handler)
	call := func(path string) time.Duration {
		req := httptest.NewRequest(http.MethodPost, path, nil)
		req.Header.Set("Authorization", "Bearer "+k.Key)
		w := httptest.NewRecorder()
		start := time.Now()
		srv.engine.ServeHTTP(w, req)
		took := time.Since(start)
		if w.Code != http.StatusOK {
			b.Fatalf("%s: got %d, want 200", path, w.Code)
		}
		return took
	}
	var plain, audited time.Duration
	n := 0
	for b.Loop() {
		plain += call("/bench/plain/c1")
		audited += call("/bench/audited/c1")
		n++
	}
	b.ReportMetric(float64(plain.Nanoseconds())/float64(n), "ns/plain")
	b.ReportMetric(float64(audited.Nanoseconds())/float64(n), "ns/audited")
	b.ReportMetric(float64(audited)/float64(plain), "audited/plain")
}
