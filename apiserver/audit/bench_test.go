package audit

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// BenchmarkAudited times a request through Audited (the middleware, the
// account email lookup, the XADD of the record) against the same route
// without it, in turns within one loop on the same Redis, and reports
// both and their ratio.
func BenchmarkAudited(b *testing.B) {
	rdb := testenv.Redis(b).Client(b)
	logger := testenv.Logger(b)
	store, err := accounts.New(accounts.Config{}, rdb, logger)
	if err != nil {
		b.Fatal(err)
	}
	log, err := New(Config{}, rdb, store, logger)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	tenant, err := store.EnsureAccount(ctx, "bench@example.com")
	if err != nil {
		b.Fatal(err)
	}
	k, err := store.CreateKey(ctx, tenant, "bench", []string{accounts.ScopeWrite}, nil, accounts.SourceCLI)
	if err != nil {
		b.Fatal(err)
	}
	handler := func(c *gin.Context) {
		Detail(c, "common_name", "user@example.com")
		c.JSON(http.StatusOK, gin.H{"ok": true})
	}
	auth := httpapi.NewAuth(store, quota.NewGate(rdb, nil))
	gin.SetMode(gin.ReleaseMode)
	engine := gin.New()
	engine.POST("/bench/plain/:id", auth.RequireKey(accounts.ScopeWrite), handler)
	engine.POST("/bench/audited/:id", log.Audited("revoke", "certificate"), auth.RequireKey(accounts.ScopeWrite), handler)
	call := func(path string) time.Duration {
		req := httptest.NewRequest(http.MethodPost, path, nil)
		req.Header.Set("Authorization", "Bearer "+k.Key)
		w := httptest.NewRecorder()
		start := time.Now()
		engine.ServeHTTP(w, req)
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
