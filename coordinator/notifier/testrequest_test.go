package notifier

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/channels"
)

// testRequestEvent returns the channel.test_requested.v1 event EnqueueTest
// wrote for channel id, and the delivery id it answered with.
func (e *testEnv) testRequestEvent(tenant, id string) (events.Envelope, string) {
	e.t.Helper()
	did, err := e.channels.EnqueueTest(context.Background(), tenant, id)
	if err != nil {
		e.t.Fatal(err)
	}
	all, err := events.ReadAll(context.Background(), e.rdb, events.EventStream(tenant))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range all {
		var p events.ChannelTestRequestedV1
		if ev.Name == events.ChannelTestRequested && ev.Decode(&p) == nil && p.DeliveryID == did {
			return ev, did
		}
	}
	e.t.Fatalf("no %s event for delivery %s", events.ChannelTestRequested, did)
	return events.Envelope{}, ""
}

// TestTestRequestQueuedOnce applies one test request delivered twice in a
// batch, twice more in a second batch, then again to two running
// notifiers: one delivery, one message, under the id the API answered.
func TestTestRequestQueuedOnce(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	rcv := newReceiver(t)
	ch := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: rcv.srv.URL, MinSeverity: SeverityCritical, Digest: true})
	ev, did := e.testRequestEvent("t1", ch.ID)

	n := e.newNotifier(fastConfig("n0"))
	batch := []stream.Entry{{Event: ev}, {Event: ev}}
	for range 2 {
		if err := n.handle(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	due, err := e.rdb.ZRange(ctx, dueKeyIn(events.TenantTag("t1"), "t1"), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0] != did {
		t.Fatalf("queued deliveries: got %v, want only %s", due, did)
	}

	e.xadd(ev) // and the same entry read by the notifiers' group
	e.xadd(ev)
	e.start(fastConfig("n1"))
	e.start(fastConfig("n2"))
	at := e.waitAttempts("t1", ch.ID, 1)
	if at[0].DeliveryID != did || at[0].EventID != ev.EventID.String() || at[0].Status != DeliveryDelivered {
		t.Errorf("attempt: got %+v, want %s of event %s delivered", at[0], did, ev.EventID)
	}
	time.Sleep(200 * time.Millisecond)
	reqs := rcv.got()
	if len(reqs) != 1 {
		t.Fatalf("requests: got %d, want 1", len(reqs))
	}
	var body WebhookBody
	if err := json.Unmarshal(reqs[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if body.DeliveryID != did || len(body.Messages) != 1 || body.Messages[0].Status != StatusTest {
		t.Errorf("body: got %+v, want one test message of %s", body, did)
	}
	if got := e.waitAttempts("t1", ch.ID, 1); len(got) != 1 {
		t.Errorf("attempts after the redeliveries: got %d, want 1", len(got))
	}
}

// TestTestRequestNotApplied: requests the notifier must drop queue nothing.
func TestTestRequestNotApplied(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	ch := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/x"})
	gone := e.channel("t1", channels.ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/y"})
	goneEv, _ := e.testRequestEvent("t1", gone.ID)
	if err := e.channels.Delete(ctx, "t1", gone.ID); err != nil {
		t.Fatal(err)
	}
	forged := func(tenant, channelID, deliveryID string) events.Envelope {
		id := uuid.New()
		if deliveryID == "" {
			deliveryID = channels.DeliveryID(id.String(), channelID)
		}
		ev, err := events.NewWithID(id, events.ChannelTestRequested, tenant, channelID,
			events.ChannelTestRequestedV1{ChannelID: channelID, DeliveryID: deliveryID})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	tests := []struct {
		name string
		ev   events.Envelope
	}{
		{name: "deleted channel", ev: goneEv},
		{name: "another tenant's channel", ev: forged("t2", ch.ID, "")},
		{name: "delivery id not derived", ev: forged("t1", ch.ID, "dl_00000000000000000000000000000000")},
		{name: "not a channel id", ev: forged("t1", "notify:due", "")},
	}
	n := e.newNotifier(fastConfig("n0"))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := n.handle(ctx, []stream.Entry{{Event: tc.ev}}); err != nil {
				t.Fatalf("handle: got %v, want the request dropped without an error", err)
			}
			if due, err := e.store.Depth(ctx); err != nil || due != 0 {
				t.Errorf("queued deliveries: got %d %v, want 0", due, err)
			}
		})
	}
}

func TestDecodeTestRequest(t *testing.T) {
	id := uuid.MustParse("6a0c2f1e-0000-4c55-9a4e-1d7f3c2b8e90")
	const ch = "ch_0123456789abcdef0123"
	good := channels.DeliveryID(id.String(), ch)
	tests := []struct {
		name, aggregate, payload, want string
	}{
		{name: "valid", aggregate: ch, payload: `{"channel_id":"` + ch + `","delivery_id":"` + good + `"}`},
		{name: "other aggregate", aggregate: "ch_x", payload: `{"channel_id":"` + ch + `","delivery_id":"` + good + `"}`, want: "does not match"},
		{name: "no channel", aggregate: "", payload: `{"delivery_id":"` + good + `"}`, want: "does not match"},
		{name: "other delivery", aggregate: ch, payload: `{"channel_id":"` + ch + `","delivery_id":"dl_1"}`, want: "want"},
		{name: "not json", aggregate: ch, payload: `{`, want: "decode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := events.Envelope{EventID: id, Name: events.ChannelTestRequested, AggregateID: tc.aggregate, Payload: []byte(tc.payload)}
			got, err := decodeTestRequest(ev)
			switch {
			case tc.want == "" && (err != nil || got.DeliveryID != good):
				t.Errorf("got %+v %v, want delivery %s", got, err, good)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeTestRequest: whatever a stream entry's payload, decoding never
// panics and accepts only a delivery id derived from the event and channel.
func FuzzDecodeTestRequest(f *testing.F) {
	f.Add("ch_0123456789abcdef0123", `{"channel_id":"ch_0123456789abcdef0123","delivery_id":"dl_1"}`)
	f.Add("", `null`)
	f.Fuzz(func(t *testing.T, aggregate, payload string) {
		ev := events.Envelope{EventID: uuid.MustParse("6a0c2f1e-0000-4c55-9a4e-1d7f3c2b8e90"),
			Name: events.ChannelTestRequested, AggregateID: aggregate, Payload: []byte(payload)}
		req, err := decodeTestRequest(ev)
		if err == nil && (req.ChannelID != aggregate || req.DeliveryID != channels.DeliveryID(ev.EventID.String(), req.ChannelID)) {
			t.Errorf("accepted %+v for aggregate %q", req, aggregate)
		}
	})
}
