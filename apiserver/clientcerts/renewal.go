package clientcerts

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/internal/lease"
)

// Auto-renewal: every replica runs the loop, but one pass at a time runs
// across replicas (a Redis lease), and each renewal is itself checked and
// applied in one step by the store (AutoRenew: due, enabled, not revoked,
// not renewed yet), so a pass that outlives its lease still renews each
// certificate once.
const (
	// renewalLease bounds one pass's hold on the lease, should its
	// replica die mid-pass.
	renewalLease = 5 * time.Minute
	// renewalBatch is how many due certificates a pass reads at once.
	renewalBatch = 100
	// RenewalLeaseKey is the lease (owned by this file).
	RenewalLeaseKey = "clientcerts:renewal:lease"
)

// RunRenewal is the client-certificate auto-renewal loop, an actor of the
// process beside the server: every replica runs it, every
// Config.RenewalEvery, and a lease lets one pass run at a time. It returns
// nil when ctx ends.
func (h *Handler) RunRenewal(ctx context.Context) error {
	logger := h.logger.Named("renewal")
	t := time.NewTicker(h.cfg.RenewalEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := h.RenewDue(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Error("auto-renewal pass failed", zap.Int("renewed", n), zap.Error(err))
		case n > 0:
			logger.Info("auto-renewal pass", zap.Int("renewed", n))
		}
	}
}

// RenewDue is one auto-renewal pass: with the lease, it renews
// every certificate due now and returns how many it renewed. Without the
// lease (another replica's pass is running) it does nothing.
func (h *Handler) RenewDue(ctx context.Context) (int, error) {
	holder := lease.NewToken()
	ok, err := lease.Acquire(ctx, h.rdb, RenewalLeaseKey, holder, renewalLease)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, nil
	}
	defer func() {
		if _, err := lease.Release(context.WithoutCancel(ctx), h.rdb, RenewalLeaseKey, holder); err != nil {
			h.logger.Warn("renewal lease not released", zap.Error(err))
		}
	}()
	renewed := 0
	skip := map[string]bool{} // failed in this pass: not retried until the next
	for ctx.Err() == nil {
		limit := renewalBatch + len(skip)
		due, err := h.store.DueForRenewal(ctx, h.cfg.Now(), limit)
		if err != nil {
			return renewed, err
		}
		progress := false
		for _, d := range due {
			if skip[d.ID] {
				continue
			}
			progress = true
			cert, err := h.store.AutoRenew(ctx, d.TenantID, d.ID)
			switch {
			case err == nil:
				renewed++
				h.logger.Info("client certificate renewed", zap.String("tenant_id", d.TenantID),
					zap.String("cert_id", d.ID), zap.String("new_cert_id", cert.ID))
				_ = h.audit.System(ctx, d.TenantID, audit.OperationAutoRenew, auditResource, d.ID,
					map[string]any{"new_identifier": cert.ID, "serial_number": cert.Serial.String()}, "")
			case errors.Is(err, clientca.ErrNotDue), errors.Is(err, clientca.ErrRevoked),
				errors.Is(err, clientca.ErrAlreadyRenewed), errors.Is(err, clientca.ErrNotFound):
				skip[d.ID] = true // changed since it was listed
			case errors.Is(err, clientca.ErrNoCA), errors.Is(err, clientca.ErrNoPassphrase):
				return renewed, err
			default:
				skip[d.ID] = true
				h.logger.Error("auto-renewal failed", zap.String("tenant_id", d.TenantID), zap.String("cert_id", d.ID), zap.Error(err))
				_ = h.audit.System(ctx, d.TenantID, audit.OperationAutoRenew, auditResource, d.ID, nil, "automatic renewal failed")
			}
		}
		if !progress || len(due) < limit {
			break
		}
	}
	return renewed, ctx.Err()
}
