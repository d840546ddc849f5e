package clientcerts

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/httpapi"
)

// TestStyle: every error a CertMate route reports is answered in
// CertMate's shapes.
func TestStyle(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code int
		want string
	}{
		{"not found", httpapi.Errorf(404, "nope"), 404, `{"error":"nope","code":"NOT_FOUND","status":404}`},
		{"unknown status", httpapi.Errorf(418, "tea"), 418, `{"error":"tea","code":"ERROR","status":418}`},
		{"rate limited", &httpapi.Error{Status: 429, Msg: "Rate limit exceeded. Try again in 7 seconds.", RetryAfter: 7}, 429,
			`{"error":"Rate limit exceeded","message":"Too many requests. Please try again later.","retry_after":7}`},
		{"rate limited without retry-after", httpapi.Errorf(429, "x"), 429,
			`{"error":"Rate limit exceeded","message":"Too many requests. Please try again later.","retry_after":1}`},
		{"server error", errors.New("redis: connection refused"), 500, `{"error":"internal error","code":"INTERNAL_ERROR","status":500}`},
		{"store refusal", clientca.ErrNotFound, 404, `{"error":"Certificate not found: c1","code":"NOT_FOUND","status":404}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			_, r := gin.CreateTestContext(w)
			r.GET("/x", httpapi.Render(zap.NewNop(), style), func(c *gin.Context) { fail(c, "c1", tc.err) })
			r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/x", nil))
			if w.Code != tc.code || w.Body.String() != tc.want {
				t.Errorf("got %d %s, want %d %s", w.Code, w.Body, tc.code, tc.want)
			}
		})
	}
}
