package apiserver

import (
	"bytes"
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/ratelimit"
)

// The KeyChest API counts against the same "general" limit as the v1 API:
//
//   - servers/add and servers/expiration per api_key (by its hash), once
//     the key is known to exist, so that a refused request stores nothing
//     (it is answered 400 or 401 at the cost of one HGET);
//   - the claim calls, which create keys and accounts, per client address.
//     The address is the TCP peer's, not X-Forwarded-For, which a client
//     can forge: behind a reverse proxy every claim shares one bucket.

// limitKeyChestKey limits a KeyChest call per api_key.
func (s *Server) limitKeyChestKey() gin.HandlerFunc {
	lim := ratelimit.PerMinute(s.cfg.RateLimitGeneral)
	return func(c *gin.Context) {
		key := keyChestKey(c)
		tenantID, err := s.accounts.Authenticate(c.Request.Context(), key)
		if err != nil {
			if errors.Is(err, accounts.ErrUnknownKey) {
				c.Next() // the handler refuses it
				return
			}
			s.reply(c, err)
			return
		}
		c.Set(keyChestAuthKey, keyChestAuth{key: key, tenantID: tenantID})
		s.allow(c, classGeneral+":keychest:"+accounts.HashKey(key), lim)
	}
}

const keyChestAuthKey = "certfleet.keychest"

// keyChestAuth is the key limitKeyChestKey authenticated and its account.
type keyChestAuth struct{ key, tenantID string }

// keyChestTenant returns the account of a KeyChest key: the one
// limitKeyChestKey already found for it, else (an unknown key, which the
// handler checks only after the request's other fields) a lookup.
func (s *Server) keyChestTenant(c *gin.Context, key string) (string, error) {
	if a, ok := c.Value(keyChestAuthKey).(keyChestAuth); ok && a.key == key {
		return a.tenantID, nil
	}
	return s.accounts.Authenticate(c.Request.Context(), key)
}

// limitByAddress limits a call per client address.
func (s *Server) limitByAddress() gin.HandlerFunc {
	lim := ratelimit.PerMinute(s.cfg.RateLimitGeneral)
	return func(c *gin.Context) {
		s.allow(c, classGeneral+":ip:"+c.RemoteIP(), lim)
	}
}

// keyChestKey returns the api_key of a KeyChest request, from the query or
// from a JSON or form body, or "". It leaves the body for the handler to
// read again, including a read error such as a body over the limit.
func keyChestKey(c *gin.Context) string {
	if k := c.Query("api_key"); k != "" {
		return k
	}
	if c.Request.Body == nil || c.Request.Body == http.NoBody {
		return ""
	}
	body, err := io.ReadAll(c.Request.Body)
	var rest io.Reader = bytes.NewReader(body)
	if err != nil {
		rest = io.MultiReader(rest, errReader{err})
	}
	defer func() { c.Request.Body = io.NopCloser(rest) }()
	if err != nil {
		return ""
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	f, err := readFields(c, "api_key")
	if err != nil {
		return ""
	}
	return f["api_key"]
}

// errReader fails every read with its error.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
