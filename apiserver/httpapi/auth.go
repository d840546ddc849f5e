package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

// MsgUnauthorized answers every refused key (SSLTrackr's wording, which
// clients may match on).
const MsgUnauthorized = "Missing or invalid API key"

// Auth authenticates bearer API keys, checks their scopes and admits the
// request through its tenant's limit of requests in flight.
type Auth struct {
	accounts *accounts.Store
	usage    *accounts.KeyUsage
	gate     *quota.Gate
	// failures limits failed authentications per client address
	// (LimitFailures); nil: no limit.
	failures     *Limiter
	failureLimit ratelimit.Limit
}

// ClassAuthFailure is the rate limit class of failed authentications,
// counted per client address.
const ClassAuthFailure = "authfail"

// LimitFailures limits failed authentications to lim per client address,
// across replicas: every check of an API key (v1, KeyChest, the client
// certificate API, the dashboard's sign-in) first asks whether the
// address still may fail (FailuresLeft), and a refused key counts one
// (Failed). Past the limit, requests from the address are answered 429
// with Retry-After before their key is looked at, so that guessing keys
// runs at lim's pace and a right guess looks like a wrong one. Accepted
// keys count nothing.
func (a *Auth) LimitFailures(l *Limiter, lim ratelimit.Limit) {
	a.failures, a.failureLimit = l, lim
}

// FailuresLeft tells whether the request's client address may still
// authenticate; when not it fails the request with 429 and Retry-After.
func (a *Auth) FailuresLeft(c *gin.Context) bool {
	if a.failures == nil {
		return true
	}
	return a.failures.Check(c, failureSubject(c), a.failureLimit)
}

// Failed counts a failed authentication of the request's client address.
// A Redis error is ignored: the request is refused anyway, and the limit
// is a brake, not the check.
func (a *Auth) Failed(c *gin.Context) {
	if a.failures == nil {
		return
	}
	_, _ = a.failures.limiter.Allow(c.Request.Context(), failureSubject(c), a.failureLimit)
}

// failureSubject is the request's subject of the failed authentication
// limit: its client address, as PerAddress's.
func failureSubject(c *gin.Context) string { return AddressSubject(ClassAuthFailure, c) }

// NewAuth returns an Auth checking keys in store and requests in flight
// with gate.
func NewAuth(store *accounts.Store, gate *quota.Gate) *Auth {
	return &Auth{accounts: store, usage: store.NewKeyUsage(), gate: gate}
}

// Enter counts the request as one of tenant's requests in flight until
// release is called, or fails it with the gate's refusal (429) and
// returns ok false.
func (a *Auth) Enter(c *gin.Context, tenant string) (release func(), ok bool) {
	release, err := a.gate.Enter(c.Request.Context(), tenant)
	if err != nil {
		Fail(c, err)
		return nil, false
	}
	return release, true
}

const principalKey = "certfleet.principal"

// RequireKey authenticates the request's bearer key and checks it holds
// scope. Every refused key (missing, malformed, unknown, expired, revoked)
// fails with the same 401 after the same work, and counts against the
// client address's failed authentications (LimitFailures); a key without
// the scope fails with 403.
func (a *Auth) RequireKey(scope string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !a.FailuresLeft(c) {
			return
		}
		token, ok := BearerToken(c.GetHeader("Authorization"))
		// A missing token is looked up too (as ""), so it costs what an
		// unknown one does.
		p, err := a.Authenticate(c.Request.Context(), token)
		if err == nil && !ok {
			err = Errorf(http.StatusUnauthorized, MsgUnauthorized)
		}
		if e := AsError(err); e != nil && e.Status == http.StatusUnauthorized {
			a.Failed(c)
		}
		if err != nil {
			Fail(c, err)
			return
		}
		a.Admit(c, p, scope)
	}
}

// Authenticate returns the principal of an API key; every refused key
// is the same 401 Error.
func (a *Auth) Authenticate(ctx context.Context, token string) (accounts.Principal, error) {
	return unknownIs401(a.accounts.AuthenticateBearer(ctx, token))
}

// AuthenticateHash is Authenticate for a key known by its hash
// (accounts.HashKey), as a dashboard session keeps it.
func (a *Auth) AuthenticateHash(ctx context.Context, hash string) (accounts.Principal, error) {
	return unknownIs401(a.accounts.AuthenticateHash(ctx, hash))
}

func unknownIs401(p accounts.Principal, err error) (accounts.Principal, error) {
	if errors.Is(err, accounts.ErrUnknownKey) {
		err = Errorf(http.StatusUnauthorized, MsgUnauthorized)
	}
	return p, err
}

// Admit runs the rest of the handler chain as p: it checks p holds scope
// (403 otherwise), records the key's use and admits the request through
// the tenant's limit of requests in flight.
func (a *Auth) Admit(c *gin.Context, p accounts.Principal, scope string) {
	if !p.Can(scope) {
		Fail(c, Errorf(http.StatusForbidden, "This API key lacks the "+scope+" permission"))
		return
	}
	a.usage.Seen(c.Request.Context(), p)
	SetPrincipal(c, p)
	if release, ok := a.Enter(c, p.TenantID); ok {
		defer release()
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

// InFlight returns how many of tenant's requests this server serves now.
func (a *Auth) InFlight(tenant string) int64 { return a.gate.InFlight(tenant) }

// CanDownloadKey refuses a private key to a key without write: a read key
// monitors, it does not get to impersonate what it monitors. nil for a
// write key, else a 403 naming readable, the files a read key may still
// download. Every API and the dashboard that serve a private key call it,
// so that the rule and its message are one.
func CanDownloadKey(p accounts.Principal, readable string) error {
	if p.Can(accounts.ScopeWrite) {
		return nil
	}
	return Errorf(http.StatusForbidden, "API key lacks the write permission, which downloading a private key needs (read is enough for "+readable+")")
}
