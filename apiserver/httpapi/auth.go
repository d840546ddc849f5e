package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
)

// MsgUnauthorized answers every refused key (SSLTrackr's wording, which
// clients may match on).
const MsgUnauthorized = "Missing or invalid API key"

// Auth authenticates bearer API keys and checks their scopes.
type Auth struct {
	accounts *accounts.Store
	usage    *accounts.KeyUsage
}

// NewAuth returns an Auth checking keys in store.
func NewAuth(store *accounts.Store) *Auth {
	return &Auth{accounts: store, usage: store.NewKeyUsage()}
}

const principalKey = "certfleet.principal"

// RequireKey authenticates the request's bearer key and checks it holds
// scope. Every refused key (missing, malformed, unknown, expired, revoked)
// fails with the same 401 after the same work; a key without the scope
// fails with 403.
func (a *Auth) RequireKey(scope string) gin.HandlerFunc {
	return func(c *gin.Context) {
		token, ok := BearerToken(c.GetHeader("Authorization"))
		ctx := c.Request.Context()
		// A missing token is looked up too (as ""), so it costs what an
		// unknown one does.
		p, err := a.accounts.AuthenticateBearer(ctx, token)
		if err == nil && !ok {
			err = accounts.ErrUnknownKey
		}
		if errors.Is(err, accounts.ErrUnknownKey) {
			err = Errorf(http.StatusUnauthorized, MsgUnauthorized)
		}
		if err != nil {
			Fail(c, err)
			return
		}
		if !p.Can(scope) {
			Fail(c, Errorf(http.StatusForbidden, "This API key lacks the "+scope+" permission"))
			return
		}
		a.usage.Seen(ctx, p)
		SetPrincipal(c, p)
		c.Next()
	}
}

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header; the scheme ignores case (RFC 9110).
func BearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// SetPrincipal records who the request acts as (RequireKey does).
func SetPrincipal(c *gin.Context, p accounts.Principal) { c.Set(principalKey, p) }

// PrincipalOf returns who the request acts as, if a key was accepted.
func PrincipalOf(c *gin.Context) (accounts.Principal, bool) {
	p, ok := c.Value(principalKey).(accounts.Principal)
	return p, ok
}

// Principal returns who the request acts as. It panics (a 500 through
// the recovery middleware) on a route without RequireKey: a programming
// error.
func Principal(c *gin.Context) accounts.Principal {
	return c.MustGet(principalKey).(accounts.Principal)
}
