package idempotency

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

type body struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func TestNew(t *testing.T) {
	none, err := New("t1", "POST /x", "", body{"a", 1})
	if err != nil || none.Set() || none.Fingerprint() != "" {
		t.Fatalf("no key: got %+v %v, want the zero Request", none, err)
	}
	r, err := New("t1", "POST /x", "k-1", body{"a", 1})
	if err != nil || !r.Set() {
		t.Fatalf("key k-1: %v", err)
	}
	same, _ := New("t1", "POST /x", "k-1", body{"a", 1})
	if same.ID("ch_", 10) != r.ID("ch_", 10) || same.UUID() != r.UUID() || same.Check(r.Fingerprint()) != nil {
		t.Errorf("the same request: ids %s %s, check %v; want equal ids and a replay", same.ID("ch_", 10), r.ID("ch_", 10), same.Check(r.Fingerprint()))
	}
	if got := r.ID("ch_", 10); !regexp.MustCompile(`^ch_[0-9a-f]{20}$`).MatchString(got) {
		t.Errorf("ID: got %q, want ch_ and 20 hex digits", got)
	}
	if got := r.UUID(); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(got) {
		t.Errorf("UUID: got %q, want a version 8 UUID", got)
	}
	for name, args := range map[string][3]string{
		"another tenant": {"t2", "POST /x", "k-1"},
		"another route":  {"t1", "POST /y", "k-1"},
		"another key":    {"t1", "POST /x", "k-2"},
	} {
		o, err := New(args[0], args[1], args[2], body{"a", 1})
		if err != nil {
			t.Fatal(err)
		}
		if o.ID("", 10) == r.ID("", 10) || o.UUID() == r.UUID() {
			t.Errorf("%s: got the same id %s", name, o.UUID())
		}
	}
	other, _ := New("t1", "POST /x", "k-1", body{"b", 1})
	if other.ID("", 10) != r.ID("", 10) || !errors.Is(other.Check(r.Fingerprint()), ErrMismatch) {
		t.Errorf("another request under the same key: want the same id and ErrMismatch, got %v", other.Check(r.Fingerprint()))
	}
	for _, bad := range []string{" ", "a b", "\x00", "caf\u00e9", strings.Repeat("k", MaxLen+1)} {
		if _, err := New("t1", "POST /x", bad, body{}); !errors.Is(err, ErrBadKey) {
			t.Errorf("key %q: got %v, want ErrBadKey", bad, err)
		}
	}
	if _, err := New("t1", "POST /x", strings.Repeat("k", MaxLen), body{}); err != nil {
		t.Errorf("a key of %d bytes: %v", MaxLen, err)
	}
}

// FuzzNew: any header value is refused with ErrBadKey or gives ids of
// the documented forms, the same for the same request.
func FuzzNew(f *testing.F) {
	f.Add("k-1", "a")
	f.Add("", "a")
	f.Add("3f2b6a1e-0c1d-4f55-9f0e-1a2b3c4d5e6f", "x")
	f.Fuzz(func(t *testing.T, key, name string) {
		r, err := New("t1", "POST /x", key, body{name, 1})
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("key %q: got %v, want ErrBadKey or none", key, err)
			}
			return
		}
		if r.Set() != (key != "") {
			t.Fatalf("key %q: Set %v", key, r.Set())
		}
		again, _ := New("t1", "POST /x", key, body{name, 1})
		if again.UUID() != r.UUID() || again.Check(r.Fingerprint()) != nil {
			t.Fatalf("key %q: not stable", key)
		}
	})
}
