package v1

// Notification channels at /api/v1/channels: where a tenant's alerts go
// (webhook, Slack, email), kept by internal/channels. The notifier reads the
// same records and delivers; this file only writes channels, asks for test
// messages and lists attempts.

import (
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/ratelimit"
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
	// A confirmation mail goes to an address the tenant chose, as a test
	// message does: it counts against the same limit per tenant.
	g.POST("/channels/:id/confirmations", append(h.guard(accounts.ScopeWrite, ClassChannelTests), h.requestConfirmation)...)
	// The mailed confirmation link: its recipient has no key.
	byAddress := h.limits.PerAddress(httpapi.ClassGeneral, ratelimit.PerMinute(h.cfg.RateLimitGeneral))
	g.GET("/recipients/confirm/:token", byAddress, h.confirmRecipientPage)
	g.POST("/recipients/confirm/:token", byAddress, h.confirmRecipient)
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
	ID          string   `json:"id"`
	Type        string   `json:"type"`
	Name        string   `json:"name"`
	URL         *string  `json:"url"`
	To          []string `json:"to"`
	MinSeverity string   `json:"min_severity"`
	Digest      bool     `json:"digest"`
	SecretSet   bool     `json:"secret_set"`
	// RecipientsPending are the addresses of To that get no message until
	// their owners confirm them (internal/channels' confirm.go).
	RecipientsPending []string  `json:"recipients_pending"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

func channelOut(ch channels.Channel, pending []string) channelJSON {
	to := ch.To
	if to == nil {
		to = []string{}
	}
	if pending == nil {
		pending = []string{}
	}
	return channelJSON{ID: ch.ID, Type: ch.Type, Name: ch.Name, URL: httpapi.NullIfEmpty(ch.URL), To: to, MinSeverity: ch.MinSeverity,
		Digest: ch.Digest, SecretSet: ch.SealedSecret != "", RecipientsPending: pending, CreatedAt: ch.CreatedAt, UpdatedAt: ch.UpdatedAt}
}

// channelsOut shows the tenant's channels chs with their pending
// recipients.
func (h *Handler) channelsOut(c *gin.Context, chs ...channels.Channel) ([]channelJSON, error) {
	p := httpapi.Principal(c)
	pending, err := h.channels.Pending(c.Request.Context(), p.TenantID, chs...)
	if err != nil {
		return nil, err
	}
	out := make([]channelJSON, len(chs))
	for i, ch := range chs {
		out[i] = channelOut(ch.Shown(p.Can(accounts.ScopeWrite)), pending[i])
	}
	return out, nil
}

// channelAnswer answers status with ch as channelsOut shows it.
func (h *Handler) channelAnswer(c *gin.Context, ch channels.Channel, answer func(body any)) {
	out, err := h.channelsOut(c, ch)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	answer(out[0])
}

func (h *Handler) listChannels(c *gin.Context) {
	list, err := h.channels.List(c.Request.Context(), httpapi.Principal(c).TenantID)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	out, err := h.channelsOut(c, list...)
	if err != nil {
		httpapi.Fail(c, err)
		return
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
	h.channelAnswer(c, ch, func(body any) { httpapi.Created(c, ch.Replayed, body) })
}

func (h *Handler) getChannel(c *gin.Context) {
	p := httpapi.Principal(c)
	ch, err := h.channels.Get(c.Request.Context(), p.TenantID, c.Param("id"))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	h.channelAnswer(c, ch, func(body any) { c.JSON(http.StatusOK, body) })
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
	h.channelAnswer(c, ch, func(body any) { c.JSON(http.StatusOK, body) })
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

// confirmationRequest is the body of POST /channels/{id}/confirmations.
type confirmationRequest struct {
	Address string `json:"address"`
}

// requestConfirmation asks the notifier (a
// channel.confirmation_requested.v1 event) to mail a pending recipient
// its confirmation link again, within its limits per tenant and address.
func (h *Handler) requestConfirmation(c *gin.Context) {
	var req confirmationRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	if err := h.channels.RequestConfirmation(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("id"), req.Address); err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"message": "Confirmation email queued"})
}

// recipientLink opens the token of a confirmation link and finds its
// account's email, answering the error when it is not a valid, unexpired
// link of this server, or its account was deleted since (a confirmation
// would outlive it).
func (h *Handler) recipientLink(c *gin.Context) (claimlink.Recipient, string, bool) {
	if h.cfg.Links == nil {
		httpapi.Fail(c, httpapi.Errorf(http.StatusNotFound, "confirmation links are not enabled on this server"))
		return claimlink.Recipient{}, "", false
	}
	r, err := h.cfg.Links.OpenRecipient(c.Request.Context(), c.Param("token"))
	if err != nil {
		httpapi.Fail(c, err)
		return claimlink.Recipient{}, "", false
	}
	account, err := h.accounts.Email(c.Request.Context(), r.TenantID)
	if err == nil && account == "" {
		err = httpapi.Errorf(http.StatusNotFound, "the account that mailed this link no longer exists")
	}
	if err != nil {
		httpapi.Fail(c, err)
		return claimlink.Recipient{}, "", false
	}
	return r, account, true
}

// confirmRecipientPage is GET /recipients/confirm/{token}, the link
// mailed to a pending recipient: a page naming the address and the
// account asking, which confirms only when its button is pressed (a POST
// to the same address, confirmRecipient). The GET itself changes nothing,
// because mail gateways and link scanners fetch every link of a message
// before anyone reads it: a GET that confirmed would let a tenant have the
// victim's own mail filter opt the victim in. An invalid or expired link
// answers as the POST would.
func (h *Handler) confirmRecipientPage(c *gin.Context) {
	r, account, ok := h.recipientLink(c)
	if !ok {
		return
	}
	httpapi.LinkPage(c, recipientTemplate, struct {
		claimlink.Recipient
		Account string
	}{r, account})
}

// recipientTemplate is the confirmation page: one form posting back to
// the page's own address.
var recipientTemplate = template.Must(template.New("confirm").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Confirm certfleet alerts</title></head>
<body><main>
<h1>Confirm certfleet alerts</h1>
<p>The certfleet account <strong>{{.Account}}</strong> wants to send its TLS certificate alerts to <strong>{{.Address}}</strong>.</p>
<p>Confirm only if you expect these alerts. If not, close this page: nothing is sent to this address.</p>
<form method="post"><button type="submit">Confirm {{.Address}}</button></form>
<p>This link works until {{.ExpiresAt.UTC.Format "2006-01-02 15:04 UTC"}}.</p>
</main></body></html>
`))

// confirmRecipient is POST /recipients/confirm/{token}, the confirmation
// page's button: the address gets the alerts of every email channel of
// the link's account that lists it, from the next send. Confirming twice
// confirms once.
func (h *Handler) confirmRecipient(c *gin.Context) {
	r, _, ok := h.recipientLink(c)
	if !ok {
		return
	}
	if err := h.channels.ConfirmRecipient(c.Request.Context(), r.TenantID, r.Address); err != nil {
		httpapi.Fail(c, err)
		return
	}
	c.JSON(http.StatusOK, recipientConfirmed{Message: "Confirmed: " + r.Address + " now receives this account's alerts", Address: r.Address})
}

// recipientConfirmed answers POST /recipients/confirm/{token}.
type recipientConfirmed struct {
	Message string `json:"message"`
	Address string `json:"address"`
}
