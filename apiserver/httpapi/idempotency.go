package httpapi

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/internal/idempotency"
)

// ReplayedHeader marks the answer to a creation's retry that found what
// an earlier attempt of the same Idempotency-Key request created.
const ReplayedHeader = "Idempotent-Replayed"

// Idempotency reads the Idempotency-Key of a creation by the caller's
// account on c's route; body is the parsed request (secrets left out),
// whose fingerprint a retry must match. A malformed key is a 400.
func Idempotency(c *gin.Context, body any) (idempotency.Request, error) {
	return idempotencyOf(c, c.Request.Method+" "+c.FullPath(), body)
}

// IdempotencyItem is Idempotency for item i of a batch, each item a
// creation of its own under the request's one key: a retried batch finds
// the items its first attempt created.
func IdempotencyItem(c *gin.Context, i int, body any) (idempotency.Request, error) {
	return idempotencyOf(c, c.Request.Method+" "+c.FullPath()+" #"+strconv.Itoa(i), body)
}

func idempotencyOf(c *gin.Context, route string, body any) (idempotency.Request, error) {
	r, err := idempotency.New(Principal(c).TenantID, route, c.GetHeader(idempotency.Header), body)
	if errors.Is(err, idempotency.ErrBadKey) {
		return r, BadRequest(err.Error())
	}
	return r, err
}

// Created answers a creation 201 with body; a replay (replayed) answers
// the same, marked with ReplayedHeader.
func Created(c *gin.Context, replayed bool, body any) {
	if replayed {
		c.Header(ReplayedHeader, "true")
	}
	c.JSON(http.StatusCreated, body)
}
