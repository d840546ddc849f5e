package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

// maxRegistrationViewBytes is what MEMORY USAGE gave the registration view
// of internal/scalebench's TestRedisMemoryPerDomain (one lookup of an ok
// registration, four domains under it), when measured: a listpack of 256
// B (jemalloc's size class for its 232 B; the next one down is 224 B)
// and 72 B of key. Before the compact layout the view and its index key
// took 1,120 B.
const maxRegistrationViewBytes = 328

// The registration view of the benchmark's registrable domain stays a
// listpack, index included, and does not grow; so does one of a common
// real registration (statuses, name servers, a server).
func TestRegistrationViewStaysCompact(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	const reg = "shop7.example"
	var evs []events.Envelope
	for i := range 4 {
		id := uuid.NewString()
		e, err := events.New(events.DomainAdded, events.TenantID("owner7@example.com"), id,
			events.DomainAddedV1{DomainID: id, Host: fmt.Sprintf("www%d.%s", i, reg), Port: 443})
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	expires := now.AddDate(0, 6, 18).Truncate(time.Second)
	// As the benchmark's lookup.
	r := events.RegistrationV1{Domain: reg, Status: events.RegistrationOK, Source: "rdap", LookedUpAt: now,
		ExpiresAt: &expires, Registrar: "Example Registrar, Inc."}
	e, err := events.New(events.RegistrationLookedUp, "", reg, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ApplyBatch(ctx, append(evs, e)); err != nil {
		t.Fatal(err)
	}
	all := rdb.HGetAll(ctx, RegistrationKey(reg)).Val()
	for _, f := range slices.Sorted(maps.Keys(all)) {
		t.Logf("%q = %q (%d B)", f, all[f], len(all[f]))
	}
	if enc := rdb.ObjectEncoding(ctx, RegistrationKey(reg)).Val(); enc != "listpack" {
		t.Errorf("registration view encoding: got %s, want listpack", enc)
	}
	if n := rdb.Exists(ctx, RegistrationIndexKey(reg)).Val(); n != 0 {
		t.Errorf("an index key of its own was written")
	}
	size := rdb.MemoryUsage(ctx, RegistrationKey(reg), 0).Val()
	t.Logf("registration view: %d B (%d B per domain)", size, size/4)
	if size > maxRegistrationViewBytes {
		t.Errorf("registration view: got %d B, want at most %d B", size, maxRegistrationViewBytes)
	}

	// A real registration, then a failed lookup: the answer gets a copy.
	created, updated := expires.AddDate(-12, 0, 0), now.AddDate(0, -1, 0).Truncate(time.Second)
	r.LookedUpAt, r.CreatedAt, r.UpdatedAt = now.Add(time.Hour), &created, &updated
	r.Registrar, r.Server = "MarkMonitor Inc.", "https://rdap.verisign.com/com/v1/domain/shop7.example"
	r.Statuses = []string{"client delete prohibited", "client transfer prohibited", "client update prohibited",
		"server delete prohibited", "server transfer prohibited", "server update prohibited"}
	r.NameServers = []string{"ns1.p31.dynect.net", "ns2.p31.dynect.net", "ns3.p31.dynect.net", "ns4.p31.dynect.net"}
	failed := events.RegistrationV1{Domain: reg, Status: events.RegistrationRateLimited, Source: "rdap",
		Detail: "too-many-requests", LookedUpAt: now.Add(2 * time.Hour), RetryAfter: ptime(now.Add(3 * time.Hour))}
	for _, r := range []events.RegistrationV1{r, failed} {
		e, err := events.New(events.RegistrationLookedUp, "", reg, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Apply(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	all = rdb.HGetAll(ctx, RegistrationKey(reg)).Val()
	for _, f := range slices.Sorted(maps.Keys(all)) {
		t.Logf("%q = %q (%d B)", f, all[f], len(all[f]))
	}
	if enc := rdb.ObjectEncoding(ctx, RegistrationKey(reg)).Val(); enc != "listpack" {
		t.Errorf("registration view of a real registration and a failure: got %s, want listpack", enc)
	}
	t.Logf("registration view of a real registration and a failure: %d B", rdb.MemoryUsage(ctx, RegistrationKey(reg), 0).Val())
	got, err := ReadRegistration(ctx, rdb, reg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Answer, &r) || !reflect.DeepEqual(got.Last, &failed) {
		t.Errorf("got answer %+v, last %+v\nwant %+v, %+v", got.Answer, got.Last, r, failed)
	}
}

// A lookup reads back from its view as it was, whatever it holds.
func TestLookupRoundTrip(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6_007_008, time.UTC)
	zero, old, far := time.Time{}, time.Date(1985, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
	tests := []struct {
		name string
		r    events.RegistrationV1
	}{
		{"benchmark", events.RegistrationV1{Status: "ok", Source: "rdap", Registrar: "Example Registrar, Inc.", ExpiresAt: &far}},
		{"everything", events.RegistrationV1{Status: "no-expiry", Source: "whois", Server: "whois.denic.de:43",
			Registrar: "Registrar|with%7Cseparators", CreatedAt: &old, UpdatedAt: &zero, Detail: "x",
			Statuses: []string{"active", "", "%a", "client hold", "Something|Else"}, NameServers: []string{"ns1.example.de", "", "|"}}},
		{"failure", events.RegistrationV1{Status: "error", Detail: "timeout", RetryAfter: &far}},
		{"words it does not know", events.RegistrationV1{Status: "fine", Source: "%b", NameServers: []string{""}}},
		{"statuses only", events.RegistrationV1{Status: "not-found", Statuses: []string{"removed"}}},
		{"empty", events.RegistrationV1{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.r
			want.Domain, want.LookedUpAt = "example.de", at
			s := encodeLookup(want)
			ms, _ := encodeMark(at, uuid.Nil)
			got, err := decodeLookup(s, "example.de", markTime(t, ms))
			if err != nil {
				t.Fatalf("decode %q: %v", s, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%q:\ngot  %+v\nwant %+v", s, got, want)
			}
		})
	}
}

// markTime is the time of a mark's ms part.
func markTime(t testing.TB, ms string) time.Time {
	t.Helper()
	at, _, err := decodeMark(ms + "|" + Compact.EncodeToString(make([]byte, 16)))
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// FuzzLookupRoundTrip: whatever its strings and times, a lookup reads
// back from its view as the JSON of the layout before did (times in UTC).
func FuzzLookupRoundTrip(f *testing.F) {
	f.Add("ok", "rdap", "Example Registrar, Inc.", "client hold", "ns1.example.net", int64(1796542876), int64(337_000_001), 1)
	f.Add("%a", "|", "%7C|%25", "", "%", int64(-62135596800), int64(0), 0)
	f.Fuzz(func(t *testing.T, status, source, text, item1, item2 string, sec, ns int64, statuses int) {
		for _, s := range []string{status, source, text, item1, item2} {
			if !utf8.ValidString(s) {
				return // JSON would have replaced it; the view keeps it
			}
		}
		// A lookup time as DecodeRegistration accepts: after 1970.
		at := time.Unix(max(sec%1e11, -(sec%1e11)), max(ns%1e9, -(ns%1e9))).UTC()
		items := []string{item1, item2, text}
		statuses = (statuses%4 + 4) % 4
		r := events.RegistrationV1{Domain: "example.com", Status: status, Source: source, Registrar: text, Server: item1,
			Detail: item2, ExpiresAt: &at, CreatedAt: ptime(time.Unix(sec%1e11, 0).UTC()), UpdatedAt: &time.Time{},
			Statuses: items[:min(statuses, 3)], NameServers: items[min(statuses, 3):], LookedUpAt: at}
		// What the layout before read back: the JSON round trip.
		b, err := json.Marshal(r)
		if err != nil {
			return
		}
		var want events.RegistrationV1
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		ms, _ := encodeMark(r.LookedUpAt, uuid.Nil)
		got, err := decodeLookup(encodeLookup(r), r.Domain, markTime(t, ms))
		if err != nil {
			t.Fatalf("decode %q: %v", encodeLookup(r), err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q:\ngot  %+v\nwant %+v", encodeLookup(r), got, want)
		}
	})
}

// FuzzDecodeRegistrationView: a registration view of any content (lines
// "<field>\t<value>") decodes or fails, and never panics.
func FuzzDecodeRegistrationView(f *testing.F) {
	for _, v := range []map[string]string{
		{"@l": "mxbiotsa|6O7sgI1-JcyJNuaqN8ApRk", "l": "%a|%a|Example Registrar, Inc.|1d9ruwg", "@a": "=",
			"+6O7sgI1-JcyJNuaqN8ApRk": "1796542876337"},
		{"@l": "mxbiotsa|6O7sgI1-JcyJNuaqN8ApRk", "l": "%d|%a|||||||1s|8l8rju4||||||||||||||||||||||||||||||||||||||||||||||||",
			"l|1": "|||", "@a": "mxbi1tsa|5O7sgI1-JcyJNuaqN8ApRk", "a": "%a|%b|R|1d9ruwg|=|||||||3|%a|%c|x|ns1.example.de"},
		{"@last": "1796542876337|46adba3f-ba4c-4820-8258-26e87247b856", "last": `{"domain":"shop0.example","status":"ok","looked_up_at":"2026-12-06T07:41:16.337Z"}`,
			"@answer": "1796542876337|46adba3f-ba4c-4820-8258-26e87247b856", "answer": `{"domain":"shop0.example","status":"ok","looked_up_at":"2026-12-06T07:41:16.337Z"}`},
	} {
		f.Add(encodeFields(v))
	}
	f.Fuzz(func(t *testing.T, data string) {
		fields := decodeFields(data)
		_ = indexMembers(fields, fields)
		r, err := decodeRegistration("example.com", fields)
		if err != nil {
			return
		}
		if fields[regAnswerMark] == regSameAsLast && (r.Answer == nil || r.AnswerID != r.LastID) {
			t.Fatalf("the answer is not the newest lookup: %+v", r)
		}
		if _, ok := fields[regLastMark]; ok && (r.Last == nil || r.Last.Domain != "example.com") {
			t.Fatalf("a lookup of this layout not of the view's domain: %+v", r.Last)
		}
	})
}

// A view of the layout before (whole JSON, decimal marks, an index key of
// its own) reads as it did; a redelivered lookup changes nothing; a newer
// failure replaces "last" and keeps "answer"; a newer answer replaces
// both; domain events and the fan-out move the old index into the view.
func TestRegistrationOlderLayout(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	const reg = "example.com"
	exp := t0.AddDate(1, 0, 0)
	ok := lookup(t, reg, events.RegistrationOK, t0, &exp)
	r, err := DecodeRegistration(ok)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	mark := fmt.Sprint(t0.UnixMilli()) + "|" + ok.EventID.String()
	if err := rdb.HSet(ctx, RegistrationKey(reg), regOldLast, body, regOldLastMark, mark, regOldAnswer, body, regOldAnswerMark, mark).Err(); err != nil {
		t.Fatal(err)
	}
	// Two domains under it in the old index: one still there, one renamed away.
	stay, gone := uuid.NewString(), uuid.NewString()
	for _, e := range []events.Envelope{
		domainEventOf(t, events.DomainAdded, stay, "www.example.com", t0.Add(-time.Hour)),
		domainEventOf(t, events.DomainAdded, gone, "shop.example.net", t0.Add(-time.Hour)),
	} {
		if err := p.Apply(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.Del(ctx, RegistrationKey("example.net")).Err(); err != nil {
		t.Fatal(err)
	}
	for k := range maps.Keys(rdb.HGetAll(ctx, RegistrationKey(reg)).Val()) {
		if strings.HasPrefix(k, regMemberPrefix) {
			rdb.HDel(ctx, RegistrationKey(reg), k)
		}
	}
	oldMS := t0.Add(-time.Hour).UnixMilli()
	if err := rdb.HSet(ctx, RegistrationIndexKey(reg), stay, oldMS, gone, oldMS).Err(); err != nil {
		t.Fatal(err)
	}
	want := Registration{Domain: reg, Last: &r, LastID: ok.EventID.String(), Answer: &r, AnswerID: ok.EventID.String()}
	check := func(step string, want Registration) {
		t.Helper()
		got, err := ReadRegistration(ctx, rdb, reg)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\ngot  %+v %+v\nwant %+v %+v", step, got.Last, got.Answer, want.Last, want.Answer)
		}
	}
	check("layout before", want)

	if err := p.Apply(ctx, ok); err != nil {
		t.Fatal(err)
	}
	check("redelivered", want)
	if all := rdb.HGetAll(ctx, RegistrationKey(reg)).Val(); all[regOldLast] == "" || all[regLastMark] != "" {
		t.Errorf("a redelivered lookup rewrote the view: %v", all)
	}
	// The fan-out moved the live member into the view and pruned the other.
	index, err := ReadRegistrationIndex(ctx, rdb, reg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(index, map[string]int64{stay: oldMS}) {
		t.Errorf("index after the fan-out: got %v, want %s at %d", index, stay, oldMS)
	}
	if n := rdb.Exists(ctx, RegistrationIndexKey(reg)).Val(); n != 0 {
		t.Errorf("the old index stayed: %v", rdb.HGetAll(ctx, RegistrationIndexKey(reg)).Val())
	}

	failed := lookup(t, reg, events.RegistrationError, t0.Add(time.Hour), nil)
	if err := p.Apply(ctx, failed); err != nil {
		t.Fatal(err)
	}
	fr, _ := DecodeRegistration(failed)
	want.Last, want.LastID = &fr, failed.EventID.String()
	check("a newer failure", want)

	newer := lookup(t, reg, events.RegistrationOK, t0.Add(2*time.Hour), &exp)
	if err := p.Apply(ctx, newer); err != nil {
		t.Fatal(err)
	}
	nr, _ := DecodeRegistration(newer)
	want = Registration{Domain: reg, Last: &nr, LastID: newer.EventID.String(), Answer: &nr, AnswerID: newer.EventID.String()}
	check("a newer answer", want)
	all := rdb.HGetAll(ctx, RegistrationKey(reg)).Val()
	for _, f := range []string{regOldLast, regOldLastMark, regOldAnswer, regOldAnswerMark, regAnswerBody} {
		if _, ok := all[f]; ok {
			t.Errorf("%s stayed: %v", f, all)
		}
	}
	if all[regAnswerMark] != regSameAsLast {
		t.Errorf("@a: got %q, want %q", all[regAnswerMark], regSameAsLast)
	}

	// A join of a domain the old index holds moves it, keeping the newer
	// time; ForgetDomain drops a member of either.
	other := uuid.NewString()
	if err := rdb.HSet(ctx, RegistrationIndexKey(reg), stay, t0.UnixMilli(), other, t0.UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, domainEventOf(t, events.DomainUpdated, stay, "www.example.com", t0.Add(-time.Minute))); err != nil {
		t.Fatal(err)
	}
	if got := rdb.HGetAll(ctx, RegistrationKey(reg)).Val()[memberField(stay)]; got != fmt.Sprint(t0.UnixMilli()) {
		t.Errorf("joined member: got %q, want the old index's newer %d", got, t0.UnixMilli())
	}
	if _, err := ForgetDomain(ctx, rdb, stay, "www.example.com"); err != nil {
		t.Fatal(err)
	}
	if n, err := ForgetDomain(ctx, rdb, other, "www.example.com"); err != nil || n != 1 {
		t.Errorf("forget %s: got %d, %v, want its reference in the old index", other, n, err)
	}
	if index, _ := ReadRegistrationIndex(ctx, rdb, reg); len(index) != 0 {
		t.Errorf("index after forgetting: %v", index)
	}
}

// A lookup of several chunks, replaced by a shorter one, leaves no chunk
// behind; a failure after it moves it to the answer whole.
func TestRegistrationChunks(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	const reg = "example.org"
	exp := t0.AddDate(1, 0, 0)
	apply := func(status string, at time.Time, mod func(r *events.RegistrationV1)) events.RegistrationV1 {
		t.Helper()
		r := events.RegistrationV1{Domain: reg, Status: status, LookedUpAt: at}
		if status == events.RegistrationOK {
			r.ExpiresAt = &exp
		}
		mod(&r)
		e, err := events.New(events.RegistrationLookedUp, "", reg, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Apply(ctx, e); err != nil {
			t.Fatal(err)
		}
		return r
	}
	chunks := func(name string) int {
		n := 0
		for f := range rdb.HGetAll(ctx, RegistrationKey(reg)).Val() {
			if f == name || strings.HasPrefix(f, name+chunkSep) {
				n++
			}
		}
		return n
	}
	long := func(r *events.RegistrationV1) {
		for i := range 12 {
			r.NameServers = append(r.NameServers, fmt.Sprintf("ns%d.long-name-server-host.example.net", i))
		}
	}
	apply(events.RegistrationOK, t0, long)
	if n := chunks(regLastBody); n < 5 {
		t.Fatalf("a long lookup in %d chunks, want at least 5", n)
	}
	second := apply(events.RegistrationOK, t0.Add(time.Hour), long)
	third := apply(events.RegistrationError, t0.Add(2*time.Hour), func(r *events.RegistrationV1) { r.Detail = "timeout" })
	if n, m := chunks(regLastBody), chunks(regAnswerBody); n != 1 || m < 5 {
		t.Errorf("after a failure: %d chunks of the last, %d of the answer, want 1 and at least 5", n, m)
	}
	got, err := ReadRegistration(ctx, rdb, reg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Answer, &second) || !reflect.DeepEqual(got.Last, &third) {
		t.Errorf("got answer %+v, last %+v\nwant %+v, %+v", got.Answer, got.Last, second, third)
	}
	short := apply(events.RegistrationOK, t0.Add(3*time.Hour), func(*events.RegistrationV1) {})
	if n, m := chunks(regLastBody), chunks(regAnswerBody); n != 1 || m != 0 {
		t.Errorf("after a short answer: %d chunks of the last, %d of the answer, want 1 and 0", n, m)
	}
	if got, err := ReadRegistration(ctx, rdb, reg); err != nil || !reflect.DeepEqual(got.Answer, &short) || !reflect.DeepEqual(got.Last, &short) {
		t.Errorf("after a short answer: got %+v, %v", got, err)
	}
}

// domainEventOf is a domain.added or domain.updated of domain id naming
// host:443 at at.
func domainEventOf(t *testing.T, name, id, host string, at time.Time) events.Envelope {
	t.Helper()
	var payload any = events.DomainAddedV1{DomainID: id, Host: host, Port: 443}
	if name == events.DomainUpdated {
		payload = events.DomainUpdatedV1{DomainID: id, Host: host, Port: 443, Active: true}
	}
	e, err := events.New(name, tenant, id, payload)
	if err != nil {
		t.Fatal(err)
	}
	e.OccurredAt = at
	return e
}
