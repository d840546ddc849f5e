package httpapi

import (
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/internal/ratelimit"
)

// ClassGeneral is the rate limit class every v1 and KeyChest request
// counts against; some routes count against a stricter class too.
const ClassGeneral = "general"

// Limiter applies rate limits shared by every replica (apiserver/ratelimit).
type Limiter struct {
	limiter *ratelimit.Limiter
}

// NewLimiter returns a Limiter over l.
func NewLimiter(l *ratelimit.Limiter) *Limiter { return &Limiter{limiter: l} }

// PerKey limits a request per API key under class (after RequireKey).
func (l *Limiter) PerKey(class string, lim ratelimit.Limit) gin.HandlerFunc {
	return func(c *gin.Context) { l.Allow(c, class+":key:"+Principal(c).KeyID, lim) }
}

// PerTenant limits a request per tenant under class (after RequireKey):
// for what reaches outside the service, which a tenant's many keys must
// not multiply.
func (l *Limiter) PerTenant(class string, lim ratelimit.Limit) gin.HandlerFunc {
	return func(c *gin.Context) { l.Allow(c, class+":tenant:"+Principal(c).TenantID, lim) }
}

// PerAddress limits a request per client address under class. The address
// is the TCP peer's, not X-Forwarded-For, which a client can forge: behind
// a reverse proxy every client shares one bucket.
func (l *Limiter) PerAddress(class string, lim ratelimit.Limit) gin.HandlerFunc {
	return func(c *gin.Context) { l.Allow(c, AddressSubject(class, c), lim) }
}

// AddressSubject is the subject of a limit per client address under
// class: the TCP peer's IPv4 address, or the /64 network of an IPv6 one.
// An IPv6 host is usually given a whole /64, so a limit per IPv6 address
// would give it 2^64 buckets.
func AddressSubject(class string, c *gin.Context) string {
	return class + ":ip:" + addressBucket(c.RemoteIP())
}

// addressBucket is what a per-address limit counts an address under.
func addressBucket(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

// Check lets the request go on (true) when subject is within lim, and
// else fails it with a 429 and Retry-After, counting nothing either way:
// for limits counted only on some outcomes (Auth.LimitFailures).
func (l *Limiter) Check(c *gin.Context, subject string, lim ratelimit.Limit) bool {
	res, err := l.limiter.Check(c.Request.Context(), subject, lim)
	if err != nil {
		Fail(c, err)
		return false
	}
	if res.Allowed {
		return true
	}
	tooMany(c, res)
	return false
}

// Allow decides one request of subject under lim: every answer carries
// X-RateLimit-Limit and X-RateLimit-Remaining; over the limit the request
// fails with a 429 and Retry-After.
func (l *Limiter) Allow(c *gin.Context, subject string, lim ratelimit.Limit) {
	res, err := l.limiter.Allow(c.Request.Context(), subject, lim)
	if err != nil {
		Fail(c, err)
		return
	}
	h := c.Writer.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(lim.Rate))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(res.Remaining))
	if res.Allowed {
		c.Next()
		return
	}
	tooMany(c, res)
}

// tooMany fails the request with a 429 and the Retry-After of res.
func tooMany(c *gin.Context, res ratelimit.Result) {
	secs := max(int(math.Ceil(res.RetryAfter.Seconds())), 1)
	c.Writer.Header().Set("Retry-After", strconv.Itoa(secs))
	Fail(c, &Error{Status: http.StatusTooManyRequests, Msg: fmt.Sprintf("Rate limit exceeded. Try again in %d seconds.", secs), RetryAfter: secs})
}
