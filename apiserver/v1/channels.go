package v1

// Notification channels at /api/v1/channels: where a tenant's alerts go
// (webhook, Slack, email), kept by internal/channels. The notifier reads the
// same records and delivers; this file only writes channels, asks for test
// messages and lists attempts.

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/channels"
)

// Paging of GET /channels/{id}/deliveries.
const (
	defaultAttempts = 50
	maxAttempts     = 200
)

// channelRoutes serves /api/v1/channels.
func (h *Handler) channelRoutes(g *gin.RouterGroup) {
	read, write := h.guard(accounts.ScopeRead), h.guard(accounts.ScopeWrite)
	g.GET("/channels", append(read, h.listChannels)...)
	g.POST("/channels", append(write, h.createChannel)...)
	g.GET("/channels/:id", append(read, h.getChannel)...)
	g.PUT("/channels/:id", append(write, h.updateChannel)...)
	g.DELETE("/channels/:id", append(write, h.deleteChannel)...)
	g.GET("/channels/:id/deliveries", append(read, h.listDeliveries)...)
	g.POST("/channels/:id/test", append(h.guard(accounts.ScopeWrite, ClassChannelTests), h.testChannel)...)
}

// channelRequest is the body of POST and PUT. A PUT replaces the channel;
// "secret" left out (or null) keeps the current one, "" removes it.
type channelRequest struct {
	Type        string   `json:"type"`
	Name        string   `json:"name"`
	URL         string   `json:"url"`
	Secret      *string  `json:"secret"`
	MinSeverity string   `json:"min_severity"`
	Digest      bool     `json:"digest"`
	To          []string `json:"to"`
}

func (r channelRequest) input() channels.ChannelInput {
	return channels.ChannelInput{Type: r.Type, Name: r.Name, URL: r.URL, Secret: r.Secret,
		MinSeverity: r.MinSeverity, Digest: r.Digest, To: r.To}
}

// channelJSON is a channel as the API shows it: never the secret, only
// whether one is set; to a read key, the URL redacted (Channel.Shown).
type channelJSON struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	Name        string    `json:"name"`
	URL         *string   `json:"url"`
	To          []string  `json:"to"`
	MinSeverity string    `json:"min_severity"`
	Digest      bool      `json:"digest"`
	SecretSet   bool      `json:"secret_set"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func channelOut(ch channels.Channel) channelJSON {
	to := ch.To
	if to == nil {
		to = []string{}
	}
	return channelJSON{ID: ch.ID, Type: ch.Type, Name: ch.Name, URL: httpapi.NullIfEmpty(ch.URL), To: to, MinSeverity: ch.MinSeverity,
		Digest: ch.Digest, SecretSet: ch.SealedSecret != "", CreatedAt: ch.CreatedAt, UpdatedAt: ch.UpdatedAt}
}

func (h *Handler) listChannels(c *gin.Context) {
	list, err := h.channels.List(c.Request.Context(), httpapi.Principal(c).TenantID)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	canWrite := httpapi.Principal(c).Can(accounts.ScopeWrite)
	out := make([]channelJSON, len(list))
	for i, ch := range list {
		out[i] = channelOut(ch.Shown(canWrite))
	}
	c.JSON(http.StatusOK, gin.H{"data": out})
}

func (h *Handler) createChannel(c *gin.Context) {
	var req channelRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	in := req.input()
	// The secret stays out of the fingerprint, which is stored: only
	// whether one is set counts.
	fp := req
	if fp.Secret != nil && *fp.Secret != "" {
		set := "set"
		fp.Secret = &set
	}
	var err error
	if in.Idempotency, err = httpapi.Idempotency(c, fp); err != nil {
		httpapi.Fail(c, err)
		return
	}
	ch, err := h.channels.Create(c.Request.Context(), httpapi.Principal(c).TenantID, in)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	httpapi.Created(c, ch.Replayed, channelOut(ch))
}

func (h *Handler) getChannel(c *gin.Context) {
	p := httpapi.Principal(c)
	ch, err := h.channels.Get(c.Request.Context(), p.TenantID, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, channelOut(ch.Shown(p.Can(accounts.ScopeWrite))))
}

func (h *Handler) updateChannel(c *gin.Context) {
	var req channelRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	ch, err := h.channels.Update(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"), req.input())
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, channelOut(ch))
}

func (h *Handler) deleteChannel(c *gin.Context) {
	if err := h.channels.Delete(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id")); err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"message": "Channel deleted"})
}

// listDeliveries lists the channel's latest attempts, newest first.
func (h *Handler) listDeliveries(c *gin.Context) {
	limit, err := httpapi.PageParam(c, "limit", defaultAttempts, maxAttempts)
	if err != nil {
		// This route's message never quoted the value.
		httpapi.Fail(c, httpapi.Errorf(http.StatusBadRequest, fmt.Sprintf("limit must be a whole number from 1 to %d", maxAttempts)))
		return
	}
	list, err := h.channels.Attempts(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"), limit)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"data": list})
}

// testChannel asks the notifier (a channel.test_requested.v1 event) to
// queue a sample message; it sends it and its attempts show in the
// deliveries list.
func (h *Handler) testChannel(c *gin.Context) {
	id, err := h.channels.EnqueueTest(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"delivery_id": id, "message": "Test notification queued"})
}
