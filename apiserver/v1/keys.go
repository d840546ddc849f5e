package v1

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/idempotency"
)

// keySourceAPI is the Source of keys created through POST /api/v1/api-keys.
const keySourceAPI = "api"

// keyRoutes serves /api/v1/api-keys.
func (h *Handler) keyRoutes(g *gin.RouterGroup) {
	g.POST("/api-keys", append(h.guard(accounts.ScopeWrite, classAPIKeys), h.createKey)...)
	g.GET("/api-keys", append(h.guard(accounts.ScopeRead), h.listKeys)...)
	g.DELETE("/api-keys/:id", append(h.guard(accounts.ScopeWrite), h.revokeKey)...)
	g.POST("/api-keys/:id/approve", append(h.guard(accounts.ScopeWrite), h.approveKey)...)
}

// apiKeyJSON is a key as SSLTrackr shows it. Key is set only in the answer
// to its creation; Prefix only in lists.
type apiKeyJSON struct {
	ID          string     `json:"id"`
	Label       string     `json:"label"`
	Key         string     `json:"key,omitempty"`
	Prefix      string     `json:"prefix,omitempty"`
	Permissions []string   `json:"permissions"`
	ExpiresAt   *time.Time `json:"expires_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	CreatedAt   time.Time  `json:"created_at"`
	// Kind is "api" (a bearer key of this API) or "claimed" (a KeyChest
	// key handed out by the claim calls); Approved is false for a claimed
	// key the account has not approved (docs/tenancy.md).
	Kind     string `json:"kind"`
	Approved bool   `json:"approved"`
}

func apiKeyOf(k accounts.APIKey) apiKeyJSON {
	return apiKeyJSON{ID: k.ID, Label: k.Label, Prefix: k.Prefix, Permissions: k.Scopes,
		ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsedAt, CreatedAt: k.CreatedAt, Kind: k.Kind, Approved: !k.Held}
}

type createKeyRequest struct {
	Label       string   `json:"label"`
	Permissions []string `json:"permissions"`
	// ExpiresAt is RFC 3339; a string rather than time.Time so that a bad
	// one is answered with the rule, not a parser's message.
	ExpiresAt *string `json:"expires_at"`
}

// createKey is POST /api-keys: a new key of the caller's account, shown
// this once.
func (h *Handler) createKey(c *gin.Context) {
	var req createKeyRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	if req.Permissions == nil {
		req.Permissions = []string{accounts.ScopeRead}
	}
	var expires *time.Time
	if req.ExpiresAt != nil {
		t, err := accounts.ParseExpiry(*req.ExpiresAt)
		if err != nil {
			httpapi.Fail(c, httpapi.BadRequest("expires_at: "+err.Error()))
			return
		}
		expires = &t
	}
	idem, err := httpapi.Idempotency(c, req)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	p := httpapi.Principal(c)
	k, err := h.accounts.CreateKeyOnce(c.Request.Context(), idem, p.TenantID, req.Label, req.Permissions, expires, keySourceAPI)
	var shown *idempotency.SecretShown
	if errors.As(err, &shown) {
		// The key exists; its secret went with the first answer. The 409
		// names it, to revoke.
		c.JSON(http.StatusConflict, existingBody{Error: shown.Error(), ID: shown.ID})
		return
	}
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	out := apiKeyOf(k.APIKey)
	out.Key, out.Prefix = k.Key, ""
	c.JSON(http.StatusCreated, out)
}

// listKeys is GET /api-keys: the account's live keys, without secrets.
func (h *Handler) listKeys(c *gin.Context) {
	keys, err := h.accounts.ListKeys(c.Request.Context(), httpapi.Principal(c).TenantID)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	data := make([]apiKeyJSON, 0, len(keys))
	for _, k := range keys {
		data = append(data, apiKeyOf(k))
	}
	c.JSON(http.StatusOK, gin.H{"data": data})
}

// revokeKey is DELETE /api-keys/{id}. Another account's key id is not
// found, as is one already revoked.
func (h *Handler) revokeKey(c *gin.Context) {
	if err := h.accounts.RevokeKey(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id")); err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"message": "API key revoked"})
}

// approveKey is POST /api-keys/{id}/approve: a claimed KeyChest key of
// the account reads all of it from now on, and the servers it added raise
// alerts. Approving a key that needs none answers it as it is.
func (h *Handler) approveKey(c *gin.Context) {
	k, err := h.accounts.ApproveKey(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, apiKeyOf(k))
}
