package channels

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/certfleet/certfleet/events"
)

// A new email channel's recipients are pending but the account's own
// email; a confirmation is the tenant's, per address (any case), holds
// for its other channels and survives removing and re-adding the address,
// and is no other tenant's. A channel written before double opt-in keeps
// its recipients confirmed, also through its next update.
func TestRecipientsConfirmation(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	owner := "owner@example.com"
	tenant, other := events.TenantID(owner), events.TenantID("other@example.com")
	pending := func(tenant string, ch Channel) []string {
		t.Helper()
		got, err := e.store.Pending(ctx, tenant, ch)
		if err != nil {
			t.Fatal(err)
		}
		return got[0]
	}
	ch := e.channel(tenant, ChannelInput{Type: TypeEmail, To: []string{"Owner@Example.com", "a@example.com", "b@example.com"}})
	if got := pending(tenant, ch); !slices.Equal(got, []string{"a@example.com", "b@example.com"}) {
		t.Fatalf("pending of a new channel: got %v, want a and b (the owner's own address is confirmed)", got)
	}
	hook := e.channel(tenant, ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/x"})
	if got := pending(tenant, hook); got != nil {
		t.Errorf("pending of a webhook: got %v, want none", got)
	}

	if err := e.store.ConfirmRecipient(ctx, tenant, "A@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.ConfirmRecipient(ctx, tenant, "a@example.com"); err != nil { // again: nothing new
		t.Fatal(err)
	}
	if n := len(streamEvents(t, e.rdb, events.RecipientConfirmed)); n != 1 {
		t.Errorf("confirmed events: got %d, want 1", n)
	}
	if got := pending(tenant, ch); !slices.Equal(got, []string{"b@example.com"}) {
		t.Fatalf("pending after a's confirmation: got %v, want b", got)
	}
	to, err := e.store.Confirmed(ctx, ch)
	if err != nil || !slices.Equal(to, []string{"Owner@Example.com", "a@example.com"}) {
		t.Fatalf("confirmed: got %v %v, want the owner and a", to, err)
	}
	// Removed and added again, here and in another channel: still confirmed.
	ch, err = e.store.Update(ctx, tenant, ch.ID, ChannelInput{To: []string{"b@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	ch, err = e.store.Update(ctx, tenant, ch.ID, ChannelInput{To: []string{"b@example.com", "a@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	second := e.channel(tenant, ChannelInput{Type: TypeEmail, To: []string{"a@example.com"}})
	if got, _ := e.store.Pending(ctx, tenant, ch, second); !slices.Equal(got[0], []string{"b@example.com"}) || got[1] != nil {
		t.Fatalf("pending after re-adding a: got %v, want [b] and none", got)
	}
	// Another tenant's confirmation of b confirms nothing here, and this
	// tenant's of a nothing there.
	if err := e.store.ConfirmRecipient(ctx, other, "b@example.com"); err != nil {
		t.Fatal(err)
	}
	if got := pending(tenant, ch); !slices.Equal(got, []string{"b@example.com"}) {
		t.Fatalf("pending after another tenant confirmed b: got %v, want b", got)
	}
	theirs := e.channel(other, ChannelInput{Type: TypeEmail, To: []string{"a@example.com"}})
	if got := pending(other, theirs); !slices.Equal(got, []string{"a@example.com"}) {
		t.Fatalf("another tenant's pending: got %v, want a", got)
	}

	// Resend: only for a pending recipient of the tenant's channel.
	if err := e.store.RequestConfirmation(ctx, tenant, ch.ID, "B@example.com"); err != nil {
		t.Fatalf("request for b: %v", err)
	}
	for _, tc := range []struct {
		name, tenant, addr string
		want               error
	}{
		{"confirmed", tenant, "a@example.com", ErrNotPending},
		{"not listed", tenant, "z@example.com", ErrNotPending},
		{"another tenant's channel", other, "b@example.com", ErrNotFound},
	} {
		if err := e.store.RequestConfirmation(ctx, tc.tenant, ch.ID, tc.addr); !errors.Is(err, tc.want) {
			t.Errorf("request %s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if evs := streamEvents(t, e.rdb, events.ConfirmationRequested); len(evs) != 1 {
		t.Errorf("confirmation requests: got %d, want 1", len(evs))
	}

	// A channel written before double opt-in (no "confirm"): its
	// recipients count as confirmed, and stay so through an update that
	// adds one, which is pending.
	legacy := e.channel(tenant, ChannelInput{Type: TypeEmail, To: []string{"old@example.com"}})
	legacy.Confirm = false
	raw, _ := json.Marshal(legacy)
	if err := e.rdb.Set(ctx, channelKey(tenant, legacy.ID), raw, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if legacy, err = e.store.Get(ctx, tenant, legacy.ID); err != nil {
		t.Fatal(err)
	}
	if got := pending(tenant, legacy); got != nil {
		t.Fatalf("pending of a channel of before: got %v, want none", got)
	}
	legacy, err = e.store.Update(ctx, tenant, legacy.ID, ChannelInput{To: []string{"old@example.com", "new@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pending(tenant, legacy); !legacy.Confirm || !slices.Equal(got, []string{"new@example.com"}) {
		t.Fatalf("after updating a channel of before: confirm %v, pending %v, want true and the new address only", legacy.Confirm, got)
	}

	// A tenant leaving takes its confirmations.
	if _, err := e.store.Forget(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.rdb.Exists(ctx, confirmedKey(tenant)).Result(); n != 0 {
		t.Error("the confirmed set outlived its tenant")
	}
}
