// Package httpapi is the request plumbing every API style of the server
// shares: API-key authentication and scopes, per-key and per-address rate
// limits, strict JSON binding, paging parameters, and errors as values
// (Error, Fail) answered by one renderer per API style (Render).
package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/idempotency"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/replicated"
)

// Error is an error answer: its HTTP status, the message the client reads
// and, for a 429, the seconds the client should wait. Handlers and
// middleware report it with Fail; the route group's renderer writes it in
// the API style's shape.
type Error struct {
	Status int
	Msg    string
	// RetryAfter is set on a 429: whole seconds, at least 1.
	RetryAfter int
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an error answered with status and msg.
func Errorf(status int, msg string) error { return &Error{Status: status, Msg: msg} }

// BadRequest returns a problem with the request itself (a missing field,
// a body that is not JSON), answered 400 with msg.
func BadRequest(msg string) error { return &Error{Status: http.StatusBadRequest, Msg: msg} }

// codes names the kind of each status the server answers: a stable
// upper-case name clients may match on (CertMate's "ERROR_CODE").
var codes = map[int]string{
	http.StatusBadRequest:            "BAD_REQUEST",
	http.StatusUnauthorized:          "UNAUTHORIZED",
	http.StatusForbidden:             "FORBIDDEN",
	http.StatusNotFound:              "NOT_FOUND",
	http.StatusMethodNotAllowed:      "METHOD_NOT_ALLOWED",
	http.StatusConflict:              "CONFLICT",
	http.StatusRequestEntityTooLarge: "PAYLOAD_TOO_LARGE",
	http.StatusUnprocessableEntity:   "UNPROCESSABLE_ENTITY",
	http.StatusTooManyRequests:       "RATE_LIMIT_EXCEEDED",
	http.StatusInternalServerError:   "INTERNAL_ERROR",
	http.StatusServiceUnavailable:    "SERVICE_UNAVAILABLE",
}

// Code is the stable name of e's kind, "ERROR" for a status without one.
func (e *Error) Code() string {
	if code, ok := codes[e.Status]; ok {
		return code
	}
	return "ERROR"
}

// Fail reports err as the request's outcome and stops the handler chain;
// the route group's renderer (Render) answers it.
func Fail(c *gin.Context, err error) {
	_ = c.Error(err)
	c.Abort()
}

// Style is how one API style answers errors.
type Style struct {
	// Answer turns an error reported with Fail into its answer; nil for
	// an error not caused by the request, which is logged and answered
	// 500 "internal error" (so Redis errors never reach clients).
	Answer func(err error) *Error
	// Body is the JSON body of an answer.
	Body func(e *Error) any
}

// Explain returns the answer to err in this style: Answer's, else the
// answer every style shares (a quota, a dependency away), else nil for an
// error the client did not cause.
func (s Style) Explain(c *gin.Context, err error) *Error {
	if e := s.Answer(err); e != nil {
		return e
	}
	return shared(c, err)
}

// outcomeKey holds the *Error Render answered.
const outcomeKey = "certfleet.outcome"

// Render returns the middleware that answers a route group's errors in
// style's shape: put it before the group's other handlers. Once the chain
// has run, the last error reported with Fail is answered, unless an answer
// was written already.
func Render(logger *zap.Logger, style Style) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		last := c.Errors.Last()
		if last == nil || c.Writer.Written() {
			return
		}
		e := style.Explain(c, last.Err)
		if e == nil {
			logger.Error("request failed", zap.String("route", c.FullPath()), zap.Error(last.Err))
			e = &Error{Status: http.StatusInternalServerError, Msg: "internal error"}
		}
		if e.RetryAfter > 0 {
			c.Header("Retry-After", strconv.Itoa(e.RetryAfter))
		}
		c.Set(outcomeKey, e)
		c.AbortWithStatusJSON(e.Status, style.Body(e))
	}
}

// UnavailableRetryAfter is the Retry-After of a 503 for a dependency that
// is away: about how long a Redis restart or failover takes.
const UnavailableRetryAfter = 5

// shared answers the errors every API style answers alike: a quota
// passed (403, or 429 for requests in flight), a claimed key's own quota
// (403), an Idempotency-Key sent again with another request (422) or
// for a creation whose secret is gone (409), and a dependency that does
// not answer (503 with Retry-After, so that clients retry instead of
// giving up on a 500). nil for others.
func shared(c *gin.Context, err error) *Error {
	var ex *quota.Exceeded
	var held *accounts.HeldQuotaError
	var shown *idempotency.SecretShown
	switch {
	case errors.As(err, &ex) && ex.Resource == quota.InFlight:
		return &Error{Status: http.StatusTooManyRequests, Msg: fmt.Sprintf(
			"too many requests in flight: this account may have %d at once on a server; retry when some have finished", ex.Limit), RetryAfter: 1}
	case errors.As(err, &ex):
		return &Error{Status: http.StatusForbidden, Msg: ex.Error()}
	case errors.As(err, &held):
		return &Error{Status: http.StatusForbidden, Msg: held.Error()}
	case errors.Is(err, idempotency.ErrMismatch):
		return &Error{Status: http.StatusUnprocessableEntity, Msg: err.Error()}
	case errors.As(err, &shown):
		return &Error{Status: http.StatusConflict, Msg: shown.Error()}
	case errors.Is(err, replicated.ErrNotReplicated):
		return &Error{Status: http.StatusServiceUnavailable, RetryAfter: 1,
			Msg: "service temporarily unavailable: the change was not confirmed by a Redis replica in time and may or may not have been applied; retry (a change that was applied answers as made already: the domain exists, the key or certificate is revoked or gone; a creation sent with an Idempotency-Key header answers what its first attempt created when retried with the same key; without one, list before creating again)"}
	case health.OutOfMemory(err):
		return &Error{Status: http.StatusServiceUnavailable, RetryAfter: UnavailableRetryAfter,
			Msg: "service temporarily unavailable: storage is full (Redis refuses writes at its memory limit); retry later"}
	case health.Unavailable(c.Request.Context(), err):
		return &Error{Status: http.StatusServiceUnavailable, RetryAfter: UnavailableRetryAfter,
			Msg: "service temporarily unavailable: a storage dependency is not answering; retry in a few seconds"}
	}
	return nil
}

// Outcome returns the error answer Render wrote for the request, nil when
// it wrote none (a success, or an answer written by the handler itself).
func Outcome(c *gin.Context) *Error {
	e, _ := c.Value(outcomeKey).(*Error)
	return e
}

// AsError returns err's *Error, or nil when it has none.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
