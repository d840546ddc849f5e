package events

import "testing"

func TestStreamFieldsRoundTrip(t *testing.T) {
	e, err := New(DomainAdded, "t", "d", DomainAddedV1{DomainID: "d", Host: "example.com", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	fields, err := e.StreamFields()
	if err != nil {
		t.Fatal(err)
	}
	if len(fields)%2 != 0 {
		t.Fatalf("len(fields): got %d, want an even number", len(fields))
	}
	values := map[string]any{}
	for i := 0; i < len(fields); i += 2 {
		values[fields[i].(string)] = fields[i+1]
	}
	got, err := FromStreamValues(values)
	if err != nil {
		t.Fatalf("FromStreamValues: %v", err)
	}
	if got.EventID != e.EventID || got.Name != e.Name || string(got.Payload) != string(e.Payload) {
		t.Errorf("round trip: got %+v, want %+v", got, e)
	}
}
