package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestAddressBucket(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.7":            "192.0.2.7",
		"::ffff:192.0.2.7":     "192.0.2.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":      "2001:db8:1:3::/64",
		"fe80::1%eth0":         "fe80::/64",
		"::1":                  "::/64",
		"not an address":       "not an address",
	} {
		if got := addressBucket(ip); got != want {
			t.Errorf("addressBucket(%q) = %q, want %q", ip, got, want)
		}
	}
}

// TestPerAddressIPv6Network: the addresses of one IPv6 /64 share a
// bucket, another /64 and IPv4 addresses have their own.
func TestPerAddressIPv6Network(t *testing.T) {
	rl, err := ratelimit.New(testenv.Redis(t).Client(t), "test:")
	if err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.TestMode)
	r := gin.New()
	style := Style{Answer: AsError, Body: func(e *Error) any { return gin.H{"error": e.Msg} }}
	r.GET("/", Render(zap.NewNop(), style), NewLimiter(rl).PerAddress("claim", ratelimit.PerMinute(2)), func(c *gin.Context) { c.Status(http.StatusNoContent) })
	status := func(addr string) int {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.RemoteAddr = addr
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
	for i, addr := range []string{"[2001:db8:0:1::1]:1000", "[2001:db8:0:1::2]:1000"} {
		if got := status(addr); got != http.StatusNoContent {
			t.Fatalf("request %d from %s: %d, want 204", i, addr, got)
		}
	}
	if got := status("[2001:db8:0:1:ffff:ffff:ffff:ffff]:1000"); got != http.StatusTooManyRequests {
		t.Fatalf("third request from the same /64: %d, want 429", got)
	}
	for _, addr := range []string{"[2001:db8:0:2::1]:1000", "192.0.2.1:1000", "192.0.2.2:1000"} {
		if got := status(addr); got != http.StatusNoContent {
			t.Fatalf("request from %s: %d, want 204 (a bucket of its own)", addr, got)
		}
	}
}
