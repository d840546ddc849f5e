package apiserver

// Notification channels at /api/v1/channels: where a tenant's alerts go
// (webhook, Slack, email), kept by internal/channels. The notifier reads the
// same records and delivers; this file only writes channels, asks for test
// messages and lists attempts.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/seal"
)

// NotifyConfig configures the notification channels API.
type NotifyConfig struct {
	// SecretsPassphrase derives the key sealing webhook secrets
	// (--secrets-passphrase); every apiserver and notifier must have the
	// same. Empty: channels with a secret are refused.
	SecretsPassphrase string
	// SecretsPassphraseFile is read for the passphrase when
	// SecretsPassphrase is empty (--secrets-passphrase-file).
	SecretsPassphraseFile string
}

func (c *NotifyConfig) validate() []error {
	if c.SecretsPassphrase != "" && len(c.SecretsPassphrase) < seal.MinPassphrase {
		return []error{fmt.Errorf("secrets passphrase must be at least %d characters", seal.MinPassphrase)}
	}
	return nil
}

// ChannelStore is what the channels API needs of the channel store: the
// tenant's channels, their delivery attempts and test messages. Every
// method is scoped to tenant; another tenant's id is not found.
type ChannelStore interface {
	List(ctx context.Context, tenant string) ([]channels.Channel, error)
	Create(ctx context.Context, tenant string, in channels.ChannelInput) (channels.Channel, error)
	Get(ctx context.Context, tenant, id string) (channels.Channel, error)
	Update(ctx context.Context, tenant, id string, in channels.ChannelInput) (channels.Channel, error)
	Delete(ctx context.Context, tenant, id string) error
	Attempts(ctx context.Context, tenant, id string, limit int) ([]channels.Attempt, error)
	EnqueueTest(ctx context.Context, tenant, id string) (string, error)
}

// notifyArea is the channels API's state.
type notifyArea struct {
	store ChannelStore
}

// initNotify builds the channel store (internal/channels) from
// Config.Notify.
func (s *Server) initNotify() error {
	pass, err := channels.Passphrase(s.cfg.Notify.SecretsPassphrase, s.cfg.Notify.SecretsPassphraseFile)
	if err != nil {
		return err
	}
	st, err := channels.New(channels.Config{Passphrase: pass, Now: s.cfg.Now}, s.rdb, s.logger)
	if err != nil {
		return err
	}
	s.notify.store = st
	return nil
}

// Paging of GET /channels/{id}/deliveries.
const (
	defaultAttempts = 50
	maxAttempts     = 200
	msgNoChannel    = "Channel not found"
)

// channelRoutes serves /api/v1/channels.
func (s *Server) channelRoutes(g *gin.RouterGroup) {
	read := []gin.HandlerFunc{s.requireKey(accounts.ScopeRead), s.limit(classGeneral)}
	write := []gin.HandlerFunc{s.requireKey(accounts.ScopeWrite), s.limit(classGeneral)}
	g.GET("/channels", append(read, s.listChannels)...)
	g.POST("/channels", append(write, s.createChannel)...)
	g.GET("/channels/:id", append(read, s.getChannel)...)
	g.PUT("/channels/:id", append(write, s.updateChannel)...)
	g.DELETE("/channels/:id", append(write, s.deleteChannel)...)
	g.GET("/channels/:id/deliveries", append(read, s.listDeliveries)...)
	g.POST("/channels/:id/test", append(write, s.testChannel)...)
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
// whether one is set.
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
	return channelJSON{ID: ch.ID, Type: ch.Type, Name: ch.Name, URL: nonEmpty(ch.URL), To: to, MinSeverity: ch.MinSeverity,
		Digest: ch.Digest, SecretSet: ch.SealedSecret != "", CreatedAt: ch.CreatedAt, UpdatedAt: ch.UpdatedAt}
}

// replyChannel answers the channel store's errors, then anything else as
// replyV1 does.
func (s *Server) replyChannel(c *gin.Context, err error) {
	var ie *channels.InvalidError
	switch {
	case errors.As(err, &ie):
		failV1(c, http.StatusBadRequest, ie.Error())
	case errors.Is(err, channels.ErrNotFound):
		failV1(c, http.StatusNotFound, msgNoChannel)
	case errors.Is(err, channels.ErrNoPassphrase):
		// The request can succeed at once without a secret; the server
		// is not failing, it lacks a setting: 400, saying which.
		failV1(c, http.StatusBadRequest, "webhook secrets are disabled on this server (the operator has not set --secrets-passphrase): create the channel without a secret or ask the operator")
	case errors.Is(err, channels.ErrTooMany):
		failV1(c, http.StatusConflict, err.Error())
	default:
		s.replyV1(c, err)
	}
}

func (s *Server) listChannels(c *gin.Context) {
	list, err := s.notify.store.List(c.Request.Context(), principalOf(c).TenantID)
	if err != nil {
		s.replyChannel(c, err)
		return
	}
	out := make([]channelJSON, len(list))
	for i, ch := range list {
		out[i] = channelOut(ch)
	}
	replyJSON(c, http.StatusOK, gin.H{"data": out})
}

func (s *Server) createChannel(c *gin.Context) {
	var req channelRequest
	if err := bindJSON(c, &req); err != nil {
		s.replyV1(c, err)
		return
	}
	ch, err := s.notify.store.Create(c.Request.Context(), principalOf(c).TenantID, req.input())
	if err != nil {
		s.replyChannel(c, err)
		return
	}
	replyJSON(c, http.StatusCreated, channelOut(ch))
}

func (s *Server) getChannel(c *gin.Context) {
	ch, err := s.notify.store.Get(c.Request.Context(), principalOf(c).TenantID, c.Param("id"))
	if err != nil {
		s.replyChannel(c, err)
		return
	}
	replyJSON(c, http.StatusOK, channelOut(ch))
}

func (s *Server) updateChannel(c *gin.Context) {
	var req channelRequest
	if err := bindJSON(c, &req); err != nil {
		s.replyV1(c, err)
		return
	}
	ch, err := s.notify.store.Update(c.Request.Context(), principalOf(c).TenantID, c.Param("id"), req.input())
	if err != nil {
		s.replyChannel(c, err)
		return
	}
	replyJSON(c, http.StatusOK, channelOut(ch))
}

func (s *Server) deleteChannel(c *gin.Context) {
	if err := s.notify.store.Delete(c.Request.Context(), principalOf(c).TenantID, c.Param("id")); err != nil {
		s.replyChannel(c, err)
		return
	}
	replyJSON(c, http.StatusOK, gin.H{"message": "Channel deleted"})
}

// listDeliveries lists the channel's latest attempts, newest first.
func (s *Server) listDeliveries(c *gin.Context) {
	limit, err := pageParam(c, "limit", defaultAttempts, maxAttempts)
	if err != nil {
		// This route's message never quoted the value.
		failV1(c, http.StatusBadRequest, fmt.Sprintf("limit must be a whole number from 1 to %d", maxAttempts))
		return
	}
	list, err := s.notify.store.Attempts(c.Request.Context(), principalOf(c).TenantID, c.Param("id"), limit)
	if err != nil {
		s.replyChannel(c, err)
		return
	}
	replyJSON(c, http.StatusOK, gin.H{"data": list})
}

// testChannel asks the notifier (a channel.test_requested.v1 event) to
// queue a sample message; it sends it and its attempts show in the
// deliveries list.
func (s *Server) testChannel(c *gin.Context) {
	id, err := s.notify.store.EnqueueTest(c.Request.Context(), principalOf(c).TenantID, c.Param("id"))
	if err != nil {
		s.replyChannel(c, err)
		return
	}
	replyJSON(c, http.StatusAccepted, gin.H{"delivery_id": id, "message": "Test notification queued"})
}
