package keychest

import (
	"errors"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

// The KeyChest API counts against the same "general" limit as the v1 API:
//
//   - servers/add and servers/expiration per api_key (by its hash), once
//     the key is known to exist, so that a refused request stores nothing
//     of the key (it is answered 400 or 401 at the cost of one HGET);
//   - the claim calls, which create keys and accounts, per client address.
//
// An api_key that is given but unknown counts against the client
// address's failed authentications, shared with the other APIs
// (httpapi.Auth.LimitFailures); past that limit a request with an
// api_key is answered 429 before the key is looked up.

// limitKey limits a KeyChest call per api_key.
func (h *Handler) limitKey() gin.HandlerFunc {
	lim := ratelimit.PerMinute(h.cfg.RateLimitGeneral)
	return func(c *gin.Context) {
		key := requestKey(c)
		if key != "" && !h.auth.FailuresLeft(c) {
			return
		}
		p, err := h.accounts.Authenticate(c.Request.Context(), key)
		if err != nil {
			if errors.Is(err, accounts.ErrUnknownKey) {
				if key != "" {
					h.auth.Failed(c)
				}
				c.Next() // the handler refuses it
				return
			}
			httpapi.Fail(c, err)
			return
		}
		c.Set(authKey, keyAuth{key: key, principal: p})
		release, ok := h.auth.Enter(c, p.TenantID)
		if !ok {
			return
		}
		defer release()
		h.limits.Allow(c, httpapi.ClassGeneral+":keychest:"+accounts.HashKey(key), lim)
	}
}

const authKey = "certfleet.keychest"

// keyAuth is the key limitKey authenticated and who it acts as.
type keyAuth struct {
	key       string
	principal accounts.Principal
}

// principal returns who a KeyChest key acts as: the one limitKey already
// found for it, else (an unknown key, which the handler checks only after
// the request's other fields) a lookup.
func (h *Handler) principal(c *gin.Context, key string) (accounts.Principal, error) {
	if a, ok := c.Value(authKey).(keyAuth); ok && a.key == key {
		return a.principal, nil
	}
	return h.accounts.Authenticate(c.Request.Context(), key)
}

// requestKey returns the api_key of a KeyChest request, from the query or
// from a JSON or form body, or "". It leaves the body for the handler to
// read again, including a read error such as a body over the limit.
func requestKey(c *gin.Context) string {
	if k := c.Query("api_key"); k != "" {
		return k
	}
	body, err := httpapi.PeekBody(c)
	if err != nil || len(body) == 0 {
		return ""
	}
	f, err := parseFields(body, c.GetHeader("Content-Type"), "api_key")
	if err != nil {
		return ""
	}
	return f["api_key"]
}
