package stream_test

import (
	"testing"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
)

// FuzzDecode feeds arbitrary entry fields to the decoder: it must never
// panic, and what it accepts must be an envelope with an id and a name that
// survives a round trip through the stream format.
func FuzzDecode(f *testing.F) {
	e, err := events.New("domain.added.v1", "tenant", "agg", map[string]any{"host": "example.com"})
	if err != nil {
		f.Fatal(err)
	}
	v, err := e.StreamValues()
	if err != nil {
		f.Fatal(err)
	}
	f.Add("_watermill_message_uuid", v["_watermill_message_uuid"].(string), "payload", v["payload"].(string))
	f.Add("foo", "bar", "", "")
	f.Add("payload", "{}", "x", "y")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		got, err := stream.Decode(map[string]any{k1: v1, k2: v2})
		if err != nil {
			return
		}
		if got.EventID.String() == "00000000-0000-0000-0000-000000000000" || got.Name == "" {
			t.Fatalf("decoded %+v without an id or a name", got)
		}
		again, err := got.StreamValues()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := stream.Decode(again)
		if err != nil || back.EventID != got.EventID || back.Name != got.Name {
			t.Fatalf("round trip: got %+v, %v, want %+v", back, err, got)
		}
	})
}
