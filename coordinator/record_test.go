package coordinator

import (
	"errors"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  domainRecord
		want string // the stored value at version 1700000000000
	}{
		{"uuid tenant, port 443", domainRecord{testTenant, "www.example.com", 443}, "1700000000000|my-PTgAAUACAAAAAAAAAAQ||www.example.com"},
		{"other port", domainRecord{testTenant, "a.example", 8443}, "1700000000000|my-PTgAAUACAAAAAAAAAAQ|8443|a.example"},
		{"tenant not a uuid", domainRecord{"t1", "a.example", 443}, "1700000000000|=t1||a.example"},
		{"upper-case uuid kept as is", domainRecord{strings.ToUpper(testTenant), "a.example", 443}, "1700000000000|=" + strings.ToUpper(testTenant) + "||a.example"},
		{"host with a bar", domainRecord{"t1", "a|b", 1}, "1700000000000|=t1|1|a|b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := encodeRecord(tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			v := storedValue(1700000000000, body)
			if v != tc.want {
				t.Errorf("stored value: got %q, want %q", v, tc.want)
			}
			version, rec, err := parseValue(v)
			if err != nil || version != 1700000000000 || rec != tc.rec {
				t.Errorf("parse %q: got %d %+v %v, want %d %+v", v, version, rec, err, int64(1700000000000), tc.rec)
			}
		})
	}
	// A short value keeps a bucket a listpack (hash-max-listpack-value 64).
	body, _ := encodeRecord(domainRecord{testTenant, "www99.shop199.example", 443})
	if v := storedValue(1700000000000, body); len(v) > 64 {
		t.Errorf("%q: %d bytes, want at most 64", v, len(v))
	}
}

func TestParseValue(t *testing.T) {
	if v, _, err := parseValue("1700000000000"); !errors.Is(err, errTombstone) || v != 1700000000000 {
		t.Errorf("tombstone: got %d %v, want 1700000000000 errTombstone", v, err)
	}
	// The JSON of the layout before.
	_, rec, err := parseValue(`5|{"tenant_id":"t1","host":"a.example","port":8443}`)
	if err != nil || rec != (domainRecord{"t1", "a.example", 8443}) {
		t.Errorf("legacy JSON: got %+v %v", rec, err)
	}
	for _, bad := range []string{"", "x", "-1", "01|=t||h", "1|", "1|=t|", "1|=t||", "1|t||h", "1|=t|0|h", "1|=t|65536|h",
		"1|=t|+1|h", "1|my-PTgAAUACAAAAAAAAAA||h", "1|my-PTgAAUACAAAAAAAAAAR||h", "1|{", `1|{"host":""}`, `1|{"host":"h","port":70000}`} {
		if _, _, err := parseValue(bad); err == nil || errors.Is(err, errTombstone) {
			t.Errorf("parseValue(%q): got %v, want an error", bad, err)
		}
	}
	if _, err := encodeRecord(domainRecord{"a|b", "h", 443}); err == nil {
		t.Errorf("tenant with a bar: got no error")
	}
}

// FuzzParseValue: parseValue reads what is stored in Redis, written by
// this or an older coordinator (or by hand); it must never panic, and
// what it accepts must survive a rewrite unchanged.
func FuzzParseValue(f *testing.F) {
	for _, s := range []string{
		"1700000000000|my-PTgAAUACAAAAAAAAAAQ||www.example.com",
		"1700000000000|=t1|8443|a.example",
		"1700000000000",
		`1700000000000|{"tenant_id":"9b2f8f4e-0000-5000-8000-000000000001","host":"a.example","port":443}`,
		`1|{"tenant_id":"t","host":"h"}`,
		"1|=|1|h|x",
		"",
		"|||",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		version, rec, err := parseValue(s)
		if err != nil {
			return
		}
		body, err := encodeRecord(rec)
		if err != nil {
			if strings.Contains(rec.TenantID, "|") {
				return // only JSON can carry such a tenant; it is not rewritten
			}
			t.Fatalf("encode %+v read from %q: %v", rec, s, err)
		}
		v2, rec2, err := parseValue(storedValue(version, body))
		if err != nil || v2 != version || rec2 != rec {
			t.Fatalf("%q read as %d %+v, rewritten as %q read as %d %+v %v", s, version, rec, storedValue(version, body), v2, rec2, err)
		}
	})
}
