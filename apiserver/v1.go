package apiserver

// The v1 REST API under /api/v1, modelled on SSLTrackr's: bearer keys with
// scopes, per-key rate limits shared by every replica, strict JSON bodies,
// and errors as {"error": "..."}.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/ratelimit"
)

// Rate limit classes: every v1 route counts against "general"; some also
// against a stricter class of their own.
const (
	classGeneral = "general"
	classCheck   = "check"
	classAPIKeys = "apikeys"
)

// v1Routes serves the v1 REST API. Each route group adds its own routes;
// each route states its scope and rate-limit classes.
func (s *Server) v1Routes(r *gin.Engine) {
	g := r.Group("/api/v1")
	s.keyRoutes(g)
	s.domainRoutes(g)
	s.checkRoutes(g)
	s.alertRoutes(g)   // v1_alerts.go
	s.channelRoutes(g) // v1_channels.go
}

// v1ErrorBody is every v1 error answer, as SSLTrackr sends it.
type v1ErrorBody struct {
	Error string `json:"error"`
}

// failV1 answers an error in the v1 shape and stops the handler chain.
func failV1(c *gin.Context, code int, msg string) {
	c.AbortWithStatusJSON(code, v1ErrorBody{Error: msg})
}

// v1Error is an error answered with its own status and message: a handler
// returns errV1(http.StatusConflict, "...") for a case replyV1 does not
// know.
type v1Error struct {
	code int
	msg  string
}

func (e v1Error) Error() string { return e.msg }

func errV1(code int, msg string) error { return v1Error{code: code, msg: msg} }

// Messages of the v1 API that clients may match on (SSLTrackr's wording).
const (
	msgUnauthorized = "Missing or invalid API key"
	msgNoDomain     = "Domain not found"
)

// replyV1 answers err with the status its kind calls for. Anything not
// caused by the request is logged and answered with a bare 500, so Redis
// errors never reach clients.
func (s *Server) replyV1(c *gin.Context, err error) {
	var (
		ve v1Error
		br badRequest
	)
	switch {
	case errors.As(err, &ve):
		failV1(c, ve.code, ve.msg)
	case errors.As(err, &br), domainname.IsInvalid(err), errors.Is(err, errTooLarge),
		errors.Is(err, accounts.ErrBadLabel), errors.Is(err, accounts.ErrBadScopes),
		errors.Is(err, accounts.ErrBadExpiry), errors.Is(err, accounts.ErrBadEmail):
		failV1(c, http.StatusBadRequest, err.Error())
	case errors.Is(err, accounts.ErrUnknownKey):
		failV1(c, http.StatusUnauthorized, msgUnauthorized)
	case errors.Is(err, accounts.ErrUnknownKeyID):
		failV1(c, http.StatusNotFound, err.Error())
	case errors.Is(err, accounts.ErrUnknownDomain):
		failV1(c, http.StatusNotFound, msgNoDomain)
	default:
		s.logger.Error("request failed", zap.String("route", c.FullPath()), zap.Error(err))
		failV1(c, http.StatusInternalServerError, "internal error")
	}
}

// replyJSON answers v with code. It exists so that handlers read alike.
func replyJSON(c *gin.Context, code int, v any) { c.JSON(code, v) }

// bindJSON decodes the request body, a JSON object, into dst (a pointer to
// a struct) strictly: an unknown field, a field of the wrong type, a body
// that is empty, not JSON, not an object or over the size limit is a
// badRequest naming the problem (and the field). Field names match exactly,
// not ignoring case as encoding/json would. A null leaves the field as it is.
func bindJSON(c *gin.Context, dst any) error {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return badRequest{fmt.Sprintf("request body too large: at most %d bytes", mbe.Limit)}
		}
		return badRequest{"cannot read request body"}
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return badRequest{"request body is empty; send a JSON object"}
	}
	if !json.Valid(body) {
		return badRequest{"request body is not valid JSON"}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return badRequest{"request body must be a JSON object"}
	}
	known := jsonFields(reflect.TypeOf(dst).Elem())
	for name := range obj {
		if _, ok := known[name]; !ok {
			return badRequest{fmt.Sprintf("unknown field %q", name)}
		}
	}
	if err := json.Unmarshal(body, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// Field is a path: "nested.inner" for a field inside an
			// object, "Embedded.name" for a promoted field. The first
			// element that is a top-level name is the one to name.
			for _, field := range strings.Split(te.Field, ".") {
				if t, ok := known[field]; ok {
					return badRequest{fmt.Sprintf("field %q must be %s", field, jsonKind(t))}
				}
			}
			return badRequest{fmt.Sprintf("field %q has the wrong type", te.Field)}
		}
		return badRequest{"request body is not valid JSON"}
	}
	return nil
}

// jsonFields maps the JSON names of a struct's fields to their types, as
// encoding/json sees them (fields of embedded structs without a tag are
// promoted).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for n, ft := range jsonFields(et) {
					if _, ok := out[n]; !ok {
						out[n] = ft
					}
				}
				continue
			}
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// jsonKind names what a value of t looks like in JSON, with its article.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[json.RawMessage]() {
		return "a JSON value"
	}
	if t.Implements(reflect.TypeFor[json.Unmarshaler]()) || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(jsonKind(t.Elem()), "a "), "an ") + "s"
	default:
		return "an object"
	}
}

const principalKey = "certfleet.principal"

// requireKey authenticates the request's bearer key and checks it holds
// scope. Every refused key (missing, malformed, unknown, expired, revoked)
// gets the same 401 after the same work; a key without the scope gets 403.
func (s *Server) requireKey(scope string) gin.HandlerFunc {
	return func(c *gin.Context) {
		token, ok := bearerToken(c.GetHeader("Authorization"))
		ctx := c.Request.Context()
		// A missing token is looked up too (as ""), so it costs what an
		// unknown one does.
		p, err := s.accounts.AuthenticateBearer(ctx, token)
		if err == nil && !ok {
			err = accounts.ErrUnknownKey
		}
		if err != nil {
			s.replyV1(c, err)
			return
		}
		if !p.Can(scope) {
			failV1(c, http.StatusForbidden, "This API key lacks the "+scope+" permission")
			return
		}
		s.keyUsage.Seen(ctx, p)
		c.Set(principalKey, p)
		c.Next()
	}
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header; the scheme ignores case (RFC 9110).
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// principalOf returns who the request acts as. It panics (a 500 through
// recovery) on a route without requireKey: a programming error.
func principalOf(c *gin.Context) accounts.Principal {
	return c.MustGet(principalKey).(accounts.Principal)
}

// limit counts the request against the class's per-key limit (after
// requireKey). Over the limit it answers 429 with Retry-After; every
// answer carries X-RateLimit-Limit and X-RateLimit-Remaining.
func (s *Server) limit(class string) gin.HandlerFunc {
	lim, ok := s.limits()[class]
	return func(c *gin.Context) {
		if !ok {
			s.replyV1(c, fmt.Errorf("rate limit: unknown class %q", class))
			return
		}
		s.allow(c, class+":key:"+principalOf(c).KeyID, lim)
	}
}

// limits returns the limit of each class, from the configuration.
func (s *Server) limits() map[string]ratelimit.Limit {
	return map[string]ratelimit.Limit{
		classGeneral: ratelimit.PerMinute(s.cfg.RateLimitGeneral),
		classCheck:   ratelimit.PerMinute(s.cfg.RateLimitCheck),
		classAPIKeys: ratelimit.PerMinute(s.cfg.RateLimitAPIKeys),
		// The CertMate API's classes (clientcerts.go).
		classCMGeneral: ratelimit.PerMinute(cmRateGeneral),
		classCMCreate:  ratelimit.PerMinute(cmRateCreate),
		classCMBatch:   ratelimit.PerMinute(cmRateBatch),
		classCMOCSP:    ratelimit.PerMinute(cmRateOCSP),
		classCMCRL:     ratelimit.PerMinute(cmRateCRL),
	}
}

// allow decides one request of subject under lim and answers 429 (in the
// v1 shape, or KeyChest's for the KeyChest API) when it is over.
func (s *Server) allow(c *gin.Context, subject string, lim ratelimit.Limit) {
	res, err := s.limiter.Allow(c.Request.Context(), subject, lim)
	if err != nil {
		s.replyV1(c, err)
		return
	}
	h := c.Writer.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(lim.Rate))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(res.Remaining))
	if res.Allowed {
		c.Next()
		return
	}
	secs := max(int(math.Ceil(res.RetryAfter.Seconds())), 1)
	h.Set("Retry-After", strconv.Itoa(secs))
	msg := fmt.Sprintf("Rate limit exceeded. Try again in %d seconds.", secs)
	if strings.HasPrefix(c.FullPath(), "/api/v1.0/") {
		fail(c, http.StatusTooManyRequests, msg)
		return
	}
	failV1(c, http.StatusTooManyRequests, msg)
}
