package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/events"
)

// filled sets every field of v (a pointer to a struct) to a value that is
// not its zero, so that a field the view's layout forgets shows.
func filled(t *testing.T, v any) {
	t.Helper()
	s := reflect.ValueOf(v).Elem()
	for i := range s.NumField() {
		f := s.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(s.Type().Field(i).Name)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 7))
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"a", s.Type().Field(i).Name}))
		case reflect.Struct:
			if f.Type() != reflect.TypeOf(time.Time{}) {
				t.Fatalf("field %s: a struct the test cannot fill", s.Type().Field(i).Name)
			}
			f.Set(reflect.ValueOf(time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC).Add(time.Duration(i) * time.Hour)))
		default:
			t.Fatalf("field %s: kind %s the test cannot fill", s.Type().Field(i).Name, f.Kind())
		}
	}
}

// Every field of a scan result comes back from the view as it went in,
// whatever field events.IPResult gains: the view's short layout must carry
// it (encodeResults, decodeEntries).
func TestEntryLayoutKeepsEveryField(t *testing.T) {
	var r events.IPResult
	filled(t, &r)
	r.IP, r.Outcome = "192.0.2.1", events.OutcomeOK
	other := r
	other.IP, other.ConnectMS = "192.0.2.2", 99 // the same leaf at another IP
	failed := events.IPResult{IP: "", Outcome: events.OutcomeNXDomain, Detail: "no such host"}
	finished := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	evt := uuid.MustParse("5deac87f-45c8-52fa-9b6b-2ef2f73d8fb1")
	all := map[string]string{}
	fields := encodeResults("eu", "", 8443, finished, evt, []events.IPResult{r, other, failed})
	for i := 0; i < len(fields); i += 2 {
		all[fields[i].(string)] = fields[i+1].(string)
	}
	if got := shapes(all); len(got) != 2 {
		t.Errorf("got shapes %v, want 2: one for both IPs of the leaf, one for the failure", got)
	}
	got, err := decodeView("dom", all)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []events.IPResult{failed, r, other} {
		w := ExpEntry{Region: "eu", Port: 8443, ScannedAt: finished, EventID: evt.String(), IPResult: want}
		if !reflect.DeepEqual(got[i], w) {
			t.Errorf("entry %d:\ngot  %+v\nwant %+v", i, got[i], w)
		}
	}
}

// A view written before the short layout (whole ExpEntry JSON objects)
// reads as it did.
func TestEntryLayoutReadsOldEntries(t *testing.T) {
	old := ExpEntry{Region: "us", Port: 443, ScannedAt: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), EventID: "evt-0",
		IPResult: events.IPResult{IP: "192.0.2.9", Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: "ab",
			Subject: "CN=a", NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}}
	body, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeView("dom", map[string]string{"@us": "1777593600000|evt-0", "us|192.0.2.9": string(body)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], old) {
		t.Errorf("got %+v, want %+v", got, old)
	}
}

// shapes are the names of the shapes of a view (their chunks apart).
func shapes(all map[string]string) []string {
	var out []string
	for f := range all {
		if strings.HasPrefix(f, leafPrefix) && !strings.Contains(f, chunkSep) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// Two certificates without a fingerprint (results fed by hand) keep their
// own facts (TestSSLCheck found them sharing one).
func TestEntryLayoutUnnamedLeaves(t *testing.T) {
	a := events.IPResult{IP: "192.0.2.1", Outcome: events.OutcomeOK, CertificateFound: true, Serial: "aa"}
	b := events.IPResult{IP: "192.0.2.2", Outcome: events.OutcomeOK, CertificateFound: true, Serial: "bb"}
	fields := encodeResults("eu", "", 443, t0, uuid.New(), []events.IPResult{a, b})
	all := map[string]string{}
	for i := 0; i < len(fields); i += 2 {
		all[fields[i].(string)] = fields[i+1].(string)
	}
	got, err := decodeView("dom", all)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Serial != "aa" || got[1].Serial != "bb" {
		t.Errorf("got %+v, want serials aa and bb", got)
	}
}

// A shape (a leaf's facts with what the IPs saw) is kept once per view
// while any entry refers to it, and goes with its chunks when none does:
// after the regions moved to another leaf, and after the domain's removal.
func TestShapesOncePerView(t *testing.T) {
	p, rdb := newProjector(t)
	ctx := context.Background()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	step := func(name string, want int, evs ...events.Envelope) {
		t.Helper()
		for _, e := range evs {
			if err := p.Apply(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		all := rdb.HGetAll(ctx, ViewKey(domainID)).Val()
		if got := shapes(all); len(got) != want {
			t.Errorf("%s: shapes %v, want %d", name, got, want)
		}
		for f := range all {
			if base, _, ok := strings.Cut(f, chunkSep); ok && strings.HasPrefix(f, leafPrefix) && all[base] == "" {
				t.Errorf("%s: chunk %s left without its shape", name, f)
			}
		}
		view(t, rdb) // every entry still finds its shape
	}
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	long := okResult("192.0.2.1", a, t0.Add(90*24*time.Hour))
	long.SANs = []string{strings.Repeat("x", 60) + ".example.com", strings.Repeat("y", 60) + ".example.com"} // in chunks
	other := long
	other.IP, other.ConnectMS = "192.0.2.2", 40
	step("two regions, one leaf", 1, scan(t, "eu", t0, long, other), scan(t, "us", t0, long))
	step("eu renewed, us not yet", 2,
		scan(t, "eu", t0.Add(time.Hour), okResult("192.0.2.1", b, t0.Add(180*24*time.Hour))))
	step("us renewed too", 1,
		scan(t, "us", t0.Add(time.Hour), okResult("192.0.2.1", b, t0.Add(180*24*time.Hour))))
	step("unnamed leaf, hand-fed", 2,
		scan(t, "us", t0.Add(2*time.Hour), okResult("192.0.2.9", "", t0.Add(180*24*time.Hour))))
	step("removed", 0, removed(t, t0.Add(3*time.Hour)))
}

// A shape reads back as it was written, with TLS names by their code and
// what a shape leaves out (a subject naming the view's host, a first SAN
// naming the subject) put back.
func TestShapeRoundTrip(t *testing.T) {
	na := time.Date(2027, 2, 4, 7, 9, 32, 0, time.UTC)
	tests := []struct {
		name string
		host string
		port int
		r    events.IPResult
	}{
		{"a common leaf", "example.com", 443, events.IPResult{Outcome: events.OutcomeOK, CertificateFound: true,
			Subject: "CN=example.com", Issuer: "CN=R3,O=Let's Encrypt,C=US", SANs: []string{"example.com", "www.example.com"},
			Serial: strings.Repeat("0a", 18), NotBefore: na.AddDate(0, 0, -90), NotAfter: na, LeafSHA256: strings.Repeat("0f", 32),
			KeyType: "ECDSA", KeyBits: 256, SignatureAlgorithm: "SHA256-RSA", ChainLength: 3, TLSVersion: "TLS 1.3",
			CipherSuite: "TLS_AES_128_GCM_SHA256", ChainValid: true, HostnameValid: true, HTTPStatus: 200, HSTSMaxAge: 31536000,
			HSTSIncludeSubdomains: true, LegacyTLSChecked: true, LegacyTLS: []string{"TLS 1.0", "TLS 1.1"}}},
		{"names crypto/tls does not know, separators", "example.com", 8443, events.IPResult{Outcome: events.OutcomeOK,
			CertificateFound: true, Subject: "CN=a|b%7C,O=x", Issuer: "|", SANs: []string{"", "a|b", ""},
			NotAfter: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), NotBefore: time.Date(1960, 1, 1, 0, 0, 0, 5, time.UTC),
			LeafSHA256: "not-hex", TLSVersion: "TLS 9.9", CipherSuite: "0x1234", LegacyTLS: []string{"=x", ""}}},
		{"a failure", "", 0, events.IPResult{Outcome: events.OutcomeHandshakeError, Detail: "unknown-authority"}},
		{"the subject names the host, no SAN", "example.com", 443, events.IPResult{Outcome: events.OutcomeOK,
			CertificateFound: true, Subject: "CN=example.com", NotAfter: na}},
		{"the subject names an IPv6 host", "2001:db8::1", 443, events.IPResult{Outcome: events.OutcomeOK,
			CertificateFound: true, Subject: "CN=2001:db8::1", SANs: []string{"2001:db8::1"}, NotAfter: na}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got events.IPResult
			s := encodeShape(tc.host, tc.port, tc.r)
			// The name as the view's name field gives it back.
			port, err := decodeShape(s, viewName(map[string]string{nameField: domainname.Key(tc.host, tc.port) + "|0"}), &got)
			if err != nil {
				t.Fatalf("decode %q: %v", s, err)
			}
			if port != tc.port || !reflect.DeepEqual(got, tc.r) {
				t.Errorf("%q:\ngot  %d %+v\nwant %d %+v", s, port, got, tc.port, tc.r)
			}
		})
	}
}

// FuzzShapeRoundTrip: whatever the strings, a shape reads back as written.
func FuzzShapeRoundTrip(f *testing.F) {
	f.Add("example.com", "CN=example.com", "example.com", "CN=R3,O=x", "TLS 1.3", "|%7C", int64(1796540972), int64(0))
	f.Add("", "CN=", "", "", "=TLS 1.3", "", int64(-1), int64(999999999))
	f.Fuzz(func(t *testing.T, host, subject, san, issuer, version, detail string, sec, ns int64) {
		r := events.IPResult{Outcome: events.OutcomeOK, CertificateFound: true, Subject: subject, Issuer: issuer,
			SANs: []string{san, detail}, TLSVersion: version, CipherSuite: version, Detail: detail, LegacyTLS: []string{version},
			NotAfter: time.Unix(sec%1e12, ns%1e9).UTC(), LeafSHA256: detail}
		if r.NotAfter.IsZero() {
			r.NotAfter = time.Time{}
		}
		var got events.IPResult
		if _, err := decodeShape(encodeShape(host, 443, r), domainname.Key(host, 443), &got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("got %+v, want %+v", got, r)
		}
	})
}

// FuzzDecodeView: a view hash of any content (lines "<field>\t<value>")
// decodes or fails, and never panics.
func FuzzDecodeView(f *testing.F) {
	for _, v := range []map[string]string{
		{"eu": "5P8DbsEhDAta7qtCLF5a5LbJU74jJ-3mSb9W_4;lYCp-F,B,T;lYCp-V,B,T", "us": "5P8DbsEhiyVt6XCSJvHDcGLHJt_LW-",
			"@n": "www17.shop7.example|mxcqfbnl", "@t": "oLkvxtsgUmWzu7fwt72acg", "@v": "4",
			"#3mSb9W_4": "ok|6f|2|4||----------------------------------------0fJ|tsqtbi|t", "#3mSb9W_4|1": "o45bi||CN=Example Issuing CA 1,O=Example"},
		{"eu": "5=P8DbsEhDAta7qtCLF5a5LbJU74jJ-3mSb9W_4;=x,=1,zzzzzzzzzz", "@n": "2001:db8::1:8443|0", "#3mSb9W_4": "ok|3k"},
		{"ap": "5", "us": "5P8DbsEh;"},
		{"@eu": "mxc5p362|iGQmdo6GKamXdXyWV4SPdk", "eu": "4-FsaHwIQ;lYCp-F,12,30;=a%2Cb,0,0;-FsaHwIQ", "eu|1": ";,1,2", "@v": "3",
			"@name": "example.com:443|0", "@t": "oLkvxtsgUmWzu7fwt72acg", "us|192.0.2.1": "3-FsaHwIQ,12,30",
			"#-FsaHwIQ": "ok|2v|2|304|443|----------------------------------------0fJ|tsp", "#-FsaHwIQ|1": "8my|to2kmy||CN=Lab CA"},
		{"@eu": "mxbiotsa|6O7sgI1-JcyJNuaqN8ApRk", "eu|192.0.2.1": "3-FsaHwIQ,12,30", "@v": "3", "@name": "example.com:443|0",
			"#-FsaHwIQ": "ok|2v|2|304|443|----------------------------------------0fJ|tsp", "#-FsaHwIQ|1": "8my|to2kmy||CN=Lab CA"},
		{"@eu": "1796540972652|5deac87f-45c8-52fa-9b6b-2ef2f73d8fb1", "eu|192.0.2.1": `2{"p":443,"o":"ok","f":true,"l":"ab"}`,
			"#ab": `{"s":"CN=a","a":"2027-02-04T07:09:32Z","b":"2026-11-06T07:09:32Z"}`},
		{"us|192.0.2.1": `{"region":"us","port":443,"ip":"192.0.2.1","outcome":"ok"}`, "@fails|us": "2", "@removed": "1"},
	} {
		f.Add(encodeFields(v))
	}
	f.Fuzz(func(t *testing.T, data string) {
		fields := decodeFields(data)
		_, _ = decodeSnapshot("dom", fields, "")
	})
}

// encodeFields is a fuzz input holding a view hash's fields, one
// "<field>\t<value>" line each in field order; decodeFields reads it back.
func encodeFields(v map[string]string) string {
	lines := make([]string, 0, len(v))
	for k, val := range v {
		lines = append(lines, k+"\t"+val)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func decodeFields(data string) map[string]string {
	fields := map[string]string{}
	for _, line := range strings.Split(data, "\n") {
		k, v, _ := strings.Cut(line, "\t")
		fields[k] = v
	}
	return fields
}

// A region with more IPs than one field holds goes on in chunks
// ("<region>|1"...): its entries read back, a shape only a chunk names
// stays, and a scan with fewer IPs or a removal leaves no chunk behind.
func TestRegionFieldInChunks(t *testing.T) {
	p, rdb := newProjector(t)
	ctx := context.Background()
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	var many []events.IPResult
	for i := range 8 {
		sha := a
		if i == 7 {
			sha = b // named only past the first chunk
		}
		many = append(many, okResult(fmt.Sprintf("2001:db8::%d", i+1), sha, t0.Add(90*24*time.Hour)))
	}
	many = append(many, failed(""), failed("not,an;ip%"))
	if err := p.Apply(ctx, scan(t, "eu", t0, many...)); err != nil {
		t.Fatal(err)
	}
	all := rdb.HGetAll(ctx, ViewKey(domainID)).Val()
	if _, ok := all["eu|2"]; !ok {
		t.Fatalf("want the region's field in chunks: %v", all)
	}
	if got := shapes(all); len(got) != 3 {
		t.Errorf("got shapes %v, want 3 (two leaves and the failure)", got)
	}
	got := view(t, rdb)
	if len(got) != len(many) {
		t.Fatalf("got %d entries, want %d", len(got), len(many))
	}
	ips := map[string]bool{}
	for _, e := range got {
		ips[e.IP] = true
	}
	for _, r := range many {
		if !ips[r.IP] {
			t.Errorf("IP %q missing from %+v", r.IP, got)
		}
	}
	if err := p.Apply(ctx, scan(t, "eu", t0.Add(time.Hour), okResult("192.0.2.1", a, t0.Add(90*24*time.Hour)))); err != nil {
		t.Fatal(err)
	}
	all = rdb.HGetAll(ctx, ViewKey(domainID)).Val()
	for f := range all {
		if strings.HasPrefix(f, "eu|") {
			t.Errorf("chunk %s left after a scan with one IP: %v", f, all)
		}
	}
	if got := shapes(all); len(got) != 1 || len(view(t, rdb)) != 1 {
		t.Errorf("got shapes %v and entries %+v, want one each", got, view(t, rdb))
	}
	if err := p.Apply(ctx, scan(t, "eu", t0.Add(2*time.Hour), many...)); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, removed(t, t0.Add(3*time.Hour))); err != nil {
		t.Fatal(err)
	}
	for f := range rdb.HGetAll(ctx, ViewKey(domainID)).Val() {
		if !strings.HasPrefix(f, metaPrefix) {
			t.Errorf("field %s left after the removal", f)
		}
	}
}

// FuzzRegionRoundTrip: whatever the IPs and timings, a region's field
// reads back as written, and so does the tenant.
func FuzzRegionRoundTrip(f *testing.F) {
	f.Add("198.51.117.1", "2001:db8::1", int64(12), int64(30), "a0b92fc6-db20-5265-b3bb-b7f0b7bd9a72")
	f.Add("", "=x,y;z%3B", int64(-1), int64(0), "tenant-a")
	f.Add("::ffff:192.0.2.1", "fe80::1%eth0", int64(1<<40), int64(7), "=")
	f.Fuzz(func(t *testing.T, ip1, ip2 string, connect, handshake int64, tenant string) {
		if ip1 == ip2 {
			return
		}
		results := []events.IPResult{
			{IP: ip1, Outcome: events.OutcomeOK, ConnectMS: connect, HandshakeMS: handshake},
			{IP: ip2, Outcome: events.OutcomeConnectionRefused, ConnectMS: handshake},
		}
		fields := encodeResults("eu", "example.com", 443, t0, uuid.New(), results)
		all := map[string]string{tenantField: tenantCode(tenant), nameField: "example.com:443|0"}
		for i := 0; i < len(fields); i += 2 {
			all[fields[i].(string)] = fields[i+1].(string)
		}
		got, err := decodeEntries("dom", all)
		if err != nil {
			t.Fatalf("decode %v: %v", all, err)
		}
		want := map[string]events.IPResult{}
		for _, r := range results {
			want[r.IP] = r
		}
		if len(got) != len(results) {
			t.Fatalf("got %d entries, want %d", len(got), len(results))
		}
		for _, e := range got {
			w, ok := want[e.IP]
			if !ok || e.Outcome != w.Outcome || e.ConnectMS != w.ConnectMS || e.HandshakeMS != w.HandshakeMS || e.Port != 443 {
				t.Errorf("got %+v, want %+v", e, w)
			}
		}
		if id, err := viewTenant(all); err != nil || id != tenant {
			t.Errorf("tenant %q: got %q, %v", tenant, id, err)
		}
	})
}

// A number reads back as numCode wrote it, whatever its sign and size,
// and its digits are short: a timing under 64 ms one, a time in Unix ms
// of this century seven.
func TestNumCode(t *testing.T) {
	for _, n := range []int64{0, 1, 63, 64, 4095, 4096, -1, -64, math.MaxInt64, math.MinInt64, t0.UnixMilli()} {
		s := numCode(n)
		if got, err := numOf(s); err != nil || got != n {
			t.Errorf("%d: %q reads %d, %v", n, s, got, err)
		}
	}
	if got := len(numCode(t0.UnixMilli())); got != 7 {
		t.Errorf("a time of this century in %d digits, want 7", got)
	}
	for _, bad := range []string{"", "=", "a,b", "zzzzzzzzzzzz", "=zzzzzzzzzzz", "F__________"} {
		if n, err := numOf(bad); err == nil {
			t.Errorf("%q read as %d, want an error", bad, n)
		}
	}
}

// FuzzNumCode: numOf never panics, and what it reads numCode writes back
// alike (one spelling per number, leading zeros apart).
func FuzzNumCode(f *testing.F) {
	for _, s := range []string{"P8DbsEh", "-", "=1", "B", "=8----------", "7__________"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := numOf(s)
		if err != nil {
			return
		}
		if got, err := numOf(numCode(n)); err != nil || got != n {
			t.Errorf("%q: %d, written %q, reads %d, %v", s, n, numCode(n), got, err)
		}
	})
}
