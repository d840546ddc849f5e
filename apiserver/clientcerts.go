package apiserver

// The client certificate API under /api, as CertMate documents it: bearer
// ssa_ keys (write for changes, read for reads), CertMate's per-key rate
// limits and its error shapes. Authentication and rate limiting are v1's
// (requireKey, limit, allow); certMateErrors only rewrites their error
// answers into CertMate's shapes, so the two APIs never drift apart.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
)

// Rate limit classes of the CertMate API, per key, requests a minute as
// CertMate documents them (fixed: clients written for CertMate expect
// them). Every CertMate route counts against cm-general; creation, batch,
// OCSP status and CRL downloads also against their own class.
const (
	classCMGeneral = "cm-general"
	classCMCreate  = "cm-create"
	classCMBatch   = "cm-batch"
	classCMOCSP    = "cm-ocsp"
	classCMCRL     = "cm-crl"

	cmRateGeneral = 100
	cmRateCreate  = 30
	cmRateBatch   = 10
	cmRateOCSP    = 200
	cmRateCRL     = 60
)

// cmErrorBody is every CertMate error answer but 429. Code is a stable
// upper-case name of the kind of error (CertMate's "ERROR_CODE"); Status
// repeats the HTTP status.
type cmErrorBody struct {
	Error  string `json:"error"`
	Code   string `json:"code"`
	Status int    `json:"status"`
}

// cmRateLimitedBody is CertMate's 429 answer.
type cmRateLimitedBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	RetryAfter int    `json:"retry_after"`
}

// cmCodes names the error code of each status the CertMate routes answer.
var cmCodes = map[int]string{
	http.StatusBadRequest:            "BAD_REQUEST",
	http.StatusUnauthorized:          "UNAUTHORIZED",
	http.StatusForbidden:             "FORBIDDEN",
	http.StatusNotFound:              "NOT_FOUND",
	http.StatusMethodNotAllowed:      "METHOD_NOT_ALLOWED",
	http.StatusConflict:              "CONFLICT",
	http.StatusRequestEntityTooLarge: "PAYLOAD_TOO_LARGE",
	http.StatusTooManyRequests:       "RATE_LIMIT_EXCEEDED",
	http.StatusInternalServerError:   "INTERNAL_ERROR",
	http.StatusServiceUnavailable:    "SERVICE_UNAVAILABLE",
}

func cmCode(status int) string {
	if code, ok := cmCodes[status]; ok {
		return code
	}
	return "ERROR"
}

// failCM answers an error in CertMate's shape and stops the handler chain.
func failCM(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, cmErrorBody{Error: msg, Code: cmCode(status), Status: status})
}

// certMate returns the handlers every authenticated CertMate route starts
// with: CertMate's error shapes, the key holding scope, and the per-key
// limits of cm-general and of each class given. E2's OCSP status and CRL
// routes use it too.
func (s *Server) certMate(scope string, classes ...string) []gin.HandlerFunc {
	hs := []gin.HandlerFunc{certMateErrors(), s.requireKey(scope), s.limit(classCMGeneral)}
	for _, class := range classes {
		hs = append(hs, s.limit(class))
	}
	return hs
}

// certMatePublic returns the handlers of a CertMate route served without a
// key (the CA certificate): CertMate's error shapes and cm-general limited
// per client address.
func (s *Server) certMatePublic() []gin.HandlerFunc {
	lim := s.limits()[classCMGeneral]
	return []gin.HandlerFunc{certMateErrors(), func(c *gin.Context) {
		s.allow(c, classCMGeneral+":ip:"+c.RemoteIP(), lim)
	}}
}

// certMateErrors rewrites the error answers of the handlers after it that
// are in the v1 shape ({"error": msg}, as requireKey, limit and replyV1
// write them) into CertMate's: {"error", "code", "status"}, and a 429 into
// {"error": "Rate limit exceeded", "message", "retry_after"}. Answers
// already in CertMate's shape, and every answer under 400, pass unchanged.
func certMateErrors() gin.HandlerFunc {
	return func(c *gin.Context) {
		w := &cmWriter{ResponseWriter: c.Writer}
		c.Writer = w
		defer func() { c.Writer = w.ResponseWriter }()
		c.Next()
		if !w.held {
			return
		}
		c.Writer = w.ResponseWriter
		body := cmTranslate(w.Status(), w.Header().Get("Retry-After"), w.buf.Bytes())
		if _, err := w.ResponseWriter.Write(body); err != nil {
			_ = c.Error(err)
		}
	}
}

// cmTranslate returns the CertMate form of an error answer body.
func cmTranslate(status int, retryAfter string, body []byte) []byte {
	var v1 map[string]json.RawMessage
	if err := json.Unmarshal(body, &v1); err != nil || len(v1) != 1 || v1["error"] == nil {
		return body // not v1's shape: CertMate's already, or not JSON
	}
	var msg string
	if err := json.Unmarshal(v1["error"], &msg); err != nil {
		return body
	}
	var out any = cmErrorBody{Error: msg, Code: cmCode(status), Status: status}
	if status == http.StatusTooManyRequests {
		secs, _ := strconv.Atoi(retryAfter)
		out = cmRateLimitedBody{Error: "Rate limit exceeded", Message: "Too many requests. Please try again later.",
			RetryAfter: max(secs, 1)}
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return body
	}
	return raw
}

// cmWriter holds back the body of an error answer (status 400 and up) for
// certMateErrors to rewrite; every other answer goes straight through.
type cmWriter struct {
	gin.ResponseWriter
	buf  bytes.Buffer
	held bool
}

func (w *cmWriter) Write(b []byte) (int, error) {
	if w.Status() >= http.StatusBadRequest {
		w.held = true
		return w.buf.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (w *cmWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

// WriteHeaderNow sends the header of a success at once; an error's waits
// for its rewritten body.
func (w *cmWriter) WriteHeaderNow() {
	if w.Status() >= http.StatusBadRequest {
		w.held = true
		return
	}
	w.ResponseWriter.WriteHeaderNow()
}

func (w *cmWriter) Written() bool { return w.held || w.ResponseWriter.Written() }

func (w *cmWriter) Flush() {
	if !w.held {
		w.ResponseWriter.Flush()
	}
}

// caRoutes serves /api/ca/certificate and /api/client-certs/....
func (s *Server) caRoutes(r *gin.Engine) {}
