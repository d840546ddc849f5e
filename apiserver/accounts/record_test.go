package accounts

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
)

// TestShortDomainRecord: a record leaves out the fields at their default
// (empty notes, active, updated_at and rev before the first update, port
// 443, source Source), writes them when an update moves them off it and
// drops them again when it moves them back; a record of the layout
// before, with every field, reads the same and updates alike, renames and
// goes.
func TestShortDomainRecord(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	tenant := events.TenantID("short@example.com")
	fields := func(id string) map[string]string {
		t.Helper()
		h, err := rdb.HGetAll(ctx, domainKey(tenant, id)).Result()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	check := func(name, id string, want map[string]string, absent ...string) Domain {
		t.Helper()
		h := fields(id)
		for f, v := range want {
			if h[f] != v {
				t.Errorf("%s: field %s: got %q, want %q (record %q)", name, f, h[f], v, h)
			}
		}
		for _, f := range absent {
			if _, ok := h[f]; ok {
				t.Errorf("%s: field %s stored (%q), want it left out", name, f, h[f])
			}
		}
		d, err := s.GetDomain(ctx, tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	d, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "short.example", Port: 443, Tags: []string{"prod"}, Source: "api"})
	if err != nil {
		t.Fatal(err)
	}
	got := check("added", d.ID, map[string]string{"source": "api"}, "notes", "active", "updated_at", "port", "rev")
	if !reflect.DeepEqual(got, d) || !got.Active || got.Notes != "" || got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Errorf("added: read %+v, want %+v: active, no notes, updated when created", got, d)
	}

	d, err = s.UpdateDomain(ctx, tenant, d.ID, DomainPatch{Active: ptr(false), Notes: ptr("billing")})
	if err != nil {
		t.Fatal(err)
	}
	got = check("deactivated with notes", d.ID, map[string]string{"active": "0", "notes": "billing", "rev": "1"}, "port")
	if !reflect.DeepEqual(got, d) || got.Active || got.Notes != "billing" || got.UpdatedAt.Before(got.CreatedAt) {
		t.Errorf("deactivated: read %+v, want %+v", got, d)
	}
	d, err = s.UpdateDomain(ctx, tenant, d.ID, DomainPatch{Active: ptr(true), Notes: ptr("")})
	if err != nil {
		t.Fatal(err)
	}
	got = check("reactivated, notes cleared", d.ID, map[string]string{"rev": "2"}, "notes", "active")
	if !reflect.DeepEqual(got, d) || !got.Active || got.Notes != "" {
		t.Errorf("reactivated: read %+v, want %+v", got, d)
	}
	d, err = s.UpdateDomain(ctx, tenant, d.ID, DomainPatch{Port: ptr(8443)})
	if err != nil {
		t.Fatal(err)
	}
	got = check("on port 8443", d.ID, map[string]string{"port": "8443", "rev": "3"})
	if !reflect.DeepEqual(got, d) || got.Port != 8443 {
		t.Errorf("on port 8443: read %+v, want %+v", got, d)
	}
	d, err = s.UpdateDomain(ctx, tenant, d.ID, DomainPatch{Port: ptr(443)})
	if err != nil {
		t.Fatal(err)
	}
	got = check("back on 443", d.ID, map[string]string{"rev": "4"}, "port")
	if !reflect.DeepEqual(got, d) || got.Port != 443 {
		t.Errorf("back on 443: read %+v, want %+v", got, d)
	}
	// The default source, and a port other than 443 from the start.
	kc, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "kc.example", Port: 8443})
	if err != nil {
		t.Fatal(err)
	}
	if got := check("added with the default source", kc.ID, map[string]string{"port": "8443"}, "source", "rev"); got.Source != Source || got.Port != 8443 {
		t.Errorf("added with the default source: read source %q port %d, want %q 8443", got.Source, got.Port, Source)
	}
	// A listed domain (the list's own read of ListedFields) reads the
	// same, its default source too.
	listed := map[string]string{}
	for i, v := range rdb.HMGet(ctx, domainKey(tenant, kc.ID), ListedFields...).Val() {
		if v, ok := v.(string); ok {
			listed[ListedFields[i]] = v
		}
	}
	if got, ok, err := DecodeListed(tenant, kc.ID, listed); err != nil || !ok || got.Source != Source || got.Port != 8443 {
		t.Errorf("listed: %+v %v %v, want source %q port 8443", got, ok, err, Source)
	}
	if id, err := s.LookupDomain(ctx, tenant, "kc.example", 8443); err != nil || id != kc.ID {
		t.Errorf("lookup of kc.example:8443: %q %v, want %s", id, err, kc.ID)
	}

	// A record of the layout before the short one.
	old, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "old.example", Port: 443, Source: "api"})
	if err != nil {
		t.Fatal(err)
	}
	created := time.UnixMilli(1_700_000_000_000).UTC()
	if err := rdb.HSet(ctx, domainKey(tenant, old.ID), "notes", "", "active", "1", "port", "443", "rev", "1",
		"created_at", created.UnixMilli(), "updated_at", created.Add(time.Hour).UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	got = check("old layout", old.ID, nil)
	if !got.Active || got.Notes != "" || !got.CreatedAt.Equal(created) || !got.UpdatedAt.Equal(created.Add(time.Hour)) {
		t.Errorf("old layout: read %+v, want active, no notes, created %s, updated an hour later", got, created)
	}
	if _, err := s.UpdateDomain(ctx, tenant, old.ID, DomainPatch{Tags: ptr([]string{"web"})}); err != nil {
		t.Fatal(err)
	}
	check("old layout updated", old.ID, map[string]string{"rev": "2", "tags": `["web"]`}, "notes", "active", "port")
	if _, err := s.UpdateDomain(ctx, tenant, old.ID, DomainPatch{Host: ptr("old2.example")}); err != nil {
		t.Fatal(err)
	}
	if id, err := s.LookupDomain(ctx, tenant, "old2.example", 443); err != nil || id != old.ID {
		t.Errorf("old layout renamed: lookup %q %v, want %s", id, err, old.ID)
	}
	if _, err := s.RemoveDomain(ctx, tenant, old.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupDomain(ctx, tenant, "old2.example", 443); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("old layout removed: lookup gives %v, want ErrUnknownDomain", err)
	}
}

// TestAlertFieldsInRecord: the alert engine's fields in a domain record
// (AlertFieldPrefix) are not the record's: reads ignore them, an update
// and a rename keep them, and a removal deletes every field of the
// record but them (the engine resolves the alerts from them and drops
// them); a record without them goes whole.
func TestAlertFieldsInRecord(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	tenant := events.TenantID("alerts@example.com")
	alertFields := map[string]string{AlertFieldPrefix + "v": "3", AlertFieldPrefix + "n": "a.example:443",
		AlertFieldPrefix + "c|chain_invalid": `{"kind":"chain_invalid"}`}
	alertState := func(id string) map[string]string {
		t.Helper()
		h := rdb.HGetAll(ctx, domainKey(tenant, id)).Val()
		out := map[string]string{}
		for f, v := range h {
			if strings.HasPrefix(f, AlertFieldPrefix) {
				out[f] = v
			}
		}
		return out
	}

	d, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "a.example", Port: 443, Tags: []string{"prod"}, Notes: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, domainKey(tenant, d.ID), alertFields).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetDomain(ctx, tenant, d.ID); err != nil || !reflect.DeepEqual(got, d) {
		t.Errorf("read with alert fields: got %+v %v, want %+v", got, err, d)
	}
	if got, err := s.ListDomains(ctx, tenant); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], d) {
		t.Errorf("list with alert fields: got %+v %v, want [%+v]", got, err, d)
	}

	d, err = s.UpdateDomain(ctx, tenant, d.ID, DomainPatch{Host: ptr("b.example"), Notes: ptr(""), Active: ptr(false)})
	if err != nil {
		t.Fatal(err)
	}
	if got := alertState(d.ID); !reflect.DeepEqual(got, alertFields) {
		t.Errorf("after a rename: alert fields %q, want %q", got, alertFields)
	}
	if got, err := s.GetDomain(ctx, tenant, d.ID); err != nil || !reflect.DeepEqual(got, d) {
		t.Errorf("read after the rename: got %+v %v, want %+v", got, err, d)
	}

	if _, err := s.RemoveDomain(ctx, tenant, d.ID); err != nil {
		t.Fatal(err)
	}
	left := maps.Clone(alertFields)
	left[RemovedTenantField] = tenant // so that the tenant leaving finds it
	if got := rdb.HGetAll(ctx, domainKey(tenant, d.ID)).Val(); !reflect.DeepEqual(got, left) {
		t.Errorf("after the removal: record %q, want the alert fields and the tenant alone %q", got, left)
	}
	if RecordExists(rdb.HGetAll(ctx, domainKey(tenant, d.ID)).Val()) {
		t.Error("after the removal: the alert fields read as a record")
	}
	if _, err := s.GetDomain(ctx, tenant, d.ID); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("read after the removal: got %v, want ErrUnknownDomain", err)
	}
	if got, err := s.ListDomains(ctx, tenant); err != nil || len(got) != 0 {
		t.Errorf("list after the removal: got %+v %v, want none", got, err)
	}
	if _, err := s.RemoveDomain(ctx, tenant, d.ID); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("second removal: got %v, want ErrUnknownDomain", err)
	}

	plain, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: "c.example", Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveDomain(ctx, tenant, plain.ID); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, domainKey(tenant, plain.ID)).Val(); n != 0 {
		t.Errorf("removal of a record without alert fields: key left (%q)", rdb.HGetAll(ctx, domainKey(tenant, plain.ID)).Val())
	}
}

// TestAlertNamePinned: the alert state names no host:port while it is the
// record's (AlertNameField); a rename or a removal of a domain with alert
// state writes the name the domain had, once, so the engine resolves
// the alerts of that name. A domain without alert state gets none.
func TestAlertNamePinned(t *testing.T) {
	ctx := context.Background()
	s, rdb := newStore(t)
	tenant := events.TenantID("pinned@example.com")
	add := func(host string, state bool) Domain {
		t.Helper()
		d, _, err := s.AddDomain(ctx, tenant, NewDomain{Host: host, Port: 443})
		if err != nil {
			t.Fatal(err)
		}
		if state {
			rdb.HSet(ctx, domainKey(tenant, d.ID), AlertVersionField, "3")
		}
		return d
	}
	name := func(d Domain) (string, bool) {
		v, err := rdb.HGet(ctx, domainKey(tenant, d.ID), AlertNameField).Result()
		return v, err == nil
	}

	d := add("a.example", true)
	if got, err := s.UpdateDomain(ctx, tenant, d.ID, DomainPatch{Notes: ptr("notes")}); err != nil {
		t.Fatal(err)
	} else if n, ok := name(got); ok {
		t.Errorf("update keeping the name: alert name %q written", n)
	}
	if _, err := s.UpdateDomain(ctx, tenant, d.ID, DomainPatch{Host: ptr("b.example")}); err != nil {
		t.Fatal(err)
	}
	if n, _ := name(d); n != "a.example:443" {
		t.Errorf("after the rename: alert name %q, want the old a.example:443", n)
	}
	if _, err := s.UpdateDomain(ctx, tenant, d.ID, DomainPatch{Host: ptr("c.example")}); err != nil {
		t.Fatal(err)
	}
	if n, _ := name(d); n != "a.example:443" {
		t.Errorf("after a second rename: alert name %q, want the first a.example:443 (the alerts' name)", n)
	}

	r := add("r.example", true)
	if _, err := s.RemoveDomain(ctx, tenant, r.ID); err != nil {
		t.Fatal(err)
	}
	if n, _ := name(r); n != "r.example:443" {
		t.Errorf("after the removal: alert name %q, want r.example:443", n)
	}

	plain := add("plain.example", false)
	if _, err := s.UpdateDomain(ctx, tenant, plain.ID, DomainPatch{Host: ptr("plain2.example")}); err != nil {
		t.Fatal(err)
	}
	if n, ok := name(plain); ok {
		t.Errorf("rename without alert state: alert name %q written", n)
	}
	if _, err := s.RemoveDomain(ctx, tenant, plain.ID); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, domainKey(tenant, plain.ID)).Val(); n != 0 {
		t.Error("removal without alert state: the record is left")
	}
}
