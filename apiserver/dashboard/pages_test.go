package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

// TestDomainsPages covers the domains pages through the HTTP client: list,
// search, filters, sort, add, edit, check, delete, the scopes and other
// tenants.
func TestDomainsPages(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(t, e.write)
	e.addDomain(t, "alpha.example.com", 443, "prod")
	e.addDomain(t, "beta.example.com", 8443, "staging")
	_, bobRead, _ := e.newTenant(t, "bob@example.com")

	t.Run("list", func(t *testing.T) {
		code, body := c.get("/domains")
		if code != http.StatusOK {
			t.Fatalf("GET /domains: got HTTP %d", code)
		}
		mustContain(t, "list", body, "alpha.example.com", "beta.example.com:8443", "2 domains", `action="/domains/add"`, "Check now")
	})

	tests := []struct {
		name, query string
		want, not   []string
	}{
		{"search", "?search=alp", []string{"alpha.example.com"}, []string{"beta.example.com"}},
		{"tag", "?tag=staging", []string{"beta.example.com"}, []string{"alpha.example.com"}},
		{"status", "?status=valid", []string{"No domains match"}, []string{"alpha.example.com"}},
		{"sort asc", "?sort=hostname&order=asc", []string{"alpha.example.com"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := c.get("/domains" + tc.query)
			if code != http.StatusOK {
				t.Fatalf("got HTTP %d", code)
			}
			mustContain(t, tc.query, body, tc.want...)
			for _, n := range tc.not {
				if strings.Contains(body, n) {
					t.Errorf("%s: body has %q", tc.query, n)
				}
			}
		})
	}
	t.Run("sort order", func(t *testing.T) {
		_, asc := c.get("/domains?sort=hostname&order=asc")
		_, desc := c.get("/domains?sort=hostname&order=desc")
		if strings.Index(asc, "alpha.example") > strings.Index(asc, "beta.example") ||
			strings.Index(desc, "alpha.example") < strings.Index(desc, "beta.example") {
			t.Error("sort by name: alpha is not first ascending and last descending")
		}
	})
	t.Run("bad query", func(t *testing.T) {
		if code, body := c.get("/domains?sort=nope"); code != http.StatusBadRequest || !strings.Contains(body, "sort must be one of") {
			t.Errorf("got HTTP %d, want 400 saying why", code)
		}
	})

	var id string
	t.Run("add", func(t *testing.T) {
		c.get("/domains")
		code, loc := c.post("/domains/add", url.Values{"hostname": {"Gamma.Example.com"}, "port": {"443"}, "tags": {"prod, new"}, "notes": {"from the form"}})
		m := regexp.MustCompile(`^/domains/([0-9a-f-]{36})$`).FindStringSubmatch(loc)
		if code != http.StatusSeeOther || m == nil {
			t.Fatalf("add: got HTTP %d to %q, want 303 to the domain", code, loc)
		}
		id = m[1]
		code, body := c.get(loc)
		if code != http.StatusOK {
			t.Fatalf("GET %s: got HTTP %d", loc, code)
		}
		mustContain(t, "new domain", body, "gamma.example.com", "Added gamma.example.com", "data-refresh", "new", "from the form")
		// The flash shows once.
		if _, body := c.get(loc); strings.Contains(body, "Added gamma") {
			t.Error("the flash message shows twice")
		}
		// The same name again is refused, with v1's message.
		code, loc = c.post("/domains/add", url.Values{"hostname": {"gamma.example.com"}})
		if _, body := c.get(loc); code != http.StatusSeeOther || !strings.Contains(body, "This domain is already being monitored") {
			t.Errorf("add twice: got HTTP %d to %s without the message", code, loc)
		}
		code, loc = c.post("/domains/add", url.Values{"hostname": {"not a name"}})
		if _, body := c.get(loc); code != http.StatusSeeOther || !strings.Contains(body, "flash-error") {
			t.Errorf("add a bad name: got HTTP %d to %s without an error", code, loc)
		}
	})

	t.Run("edit", func(t *testing.T) {
		c.get("/domains/" + id)
		code, loc := c.post("/domains/"+id+"/edit", url.Values{"hostname": {"gamma.example.com"}, "port": {"8443"}, "tags": {"x"}, "notes": {"n2"}})
		if code != http.StatusSeeOther || loc != "/domains/"+id {
			t.Fatalf("edit: got HTTP %d to %q", code, loc)
		}
		_, body := c.get(loc)
		mustContain(t, "edited", body, "gamma.example.com:8443", "(paused)", "Saved")
		d, err := e.accounts.GetDomain(context.Background(), e.tenant, id)
		if err != nil || d.Port != 8443 || d.Active || d.Notes != "n2" || len(d.Tags) != 1 || d.Tags[0] != "x" {
			t.Errorf("stored: got %+v %v, want port 8443, paused, notes n2, tags [x]", d, err)
		}
		// A paused domain cannot be checked.
		code, loc = c.post("/domains/"+id+"/check", nil)
		if _, body := c.get(loc); code != http.StatusSeeOther || !strings.Contains(body, "The domain is paused") {
			t.Errorf("check a paused domain: got HTTP %d to %s without the message", code, loc)
		}
		c.post("/domains/"+id+"/edit", url.Values{"hostname": {"gamma.example.com"}, "port": {"8443"}, "active": {"on"}})
	})

	t.Run("check", func(t *testing.T) {
		stream := events.EventStream(e.tenant)
		before, err := e.rdb.XLen(context.Background(), stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		c.get("/domains/" + id)
		code, loc := c.post("/domains/"+id+"/check", nil)
		if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/domains/"+id+"?checking=") {
			t.Fatalf("check: got HTTP %d to %q", code, loc)
		}
		_, body := c.get(loc)
		mustContain(t, "checking", body, "Check requested", "data-refresh")
		// The check is a domain.check_requested event, as POST /api/v1/check sends.
		msgs, err := e.rdb.XRevRangeN(context.Background(), stream, "+", "-", 1).Result()
		if after := e.rdb.XLen(context.Background(), stream).Val(); err != nil || after != before+1 || len(msgs) != 1 ||
			!strings.Contains(fmt.Sprint(msgs[0].Values), events.DomainCheckRequested) {
			t.Errorf("events: got %d after %d, newest %v %v; want one domain.check_requested more", after, before, msgs, err)
		}
	})

	t.Run("read key", func(t *testing.T) {
		r := e.client(t, e.read)
		_, body := r.get("/domains")
		for _, s := range []string{`action="/domains/add"`, "Check now", "Delete"} {
			if strings.Contains(body, s) {
				t.Errorf("read key's list has %q", s)
			}
		}
		_, body = r.get("/domains/" + id)
		if strings.Contains(body, `/edit"`) || strings.Contains(body, "Check now") {
			t.Error("read key's domain page has the edit forms")
		}
		for _, path := range []string{"/domains/add", "/domains/" + id + "/delete", "/domains/" + id + "/check", "/domains/" + id + "/edit"} {
			if code, body := r.post(path, url.Values{"hostname": {"x.example.com"}}); code != http.StatusForbidden || !strings.Contains(body, "lacks the write permission") {
				t.Errorf("POST %s with a read key: got HTTP %d, want 403", path, code)
			}
		}
	})

	t.Run("other tenant", func(t *testing.T) {
		b := e.client(t, bobRead)
		if code, _ := b.get("/domains/" + id); code != http.StatusNotFound {
			t.Errorf("bob reads alice's domain: got HTTP %d, want 404", code)
		}
		if _, body := b.get("/domains"); strings.Contains(body, "example.com") {
			t.Error("bob's list shows alice's domains")
		}
	})

	t.Run("delete", func(t *testing.T) {
		c.get("/domains")
		code, loc := c.post("/domains/"+id+"/delete", nil)
		if code != http.StatusSeeOther || loc != "/domains" {
			t.Fatalf("delete: got HTTP %d to %q", code, loc)
		}
		_, body := c.get(loc)
		mustContain(t, "deleted", body, "Deleted gamma.example.com:8443")
		if code, _ := c.get("/domains/" + id); code != http.StatusNotFound {
			t.Errorf("deleted domain: got HTTP %d, want 404", code)
		}
	})
}

// TestOverviewPlanner checks the expiry planner and the history on the
// pages against scan rows in ClickHouse.
func TestOverviewPlanner(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	e := newEnv(t, envOptions{ClickHouse: true, Now: func() time.Time { return now }})
	id := e.addDomain(t, "www.example.com", 443)
	other := e.addDomain(t, "old.example.com", 443)
	var rows []schema.ScanRow
	for i, r := range []struct {
		domain, region, ip, leaf string
		expires                  time.Duration
		hs                       uint32
		outcome                  string
	}{
		{id, "eu", "192.0.2.1", "aaaa", 10 * 24 * time.Hour, 31, "ok"},
		{id, "us", "192.0.2.1", "aaaa", 10 * 24 * time.Hour, 47, "ok"},
		{other, "eu", "192.0.2.9", "eeee", -24 * time.Hour, 20, "ok"},
		{other, "us", "192.0.2.9", "", 0, 0, "timeout"},
	} {
		row := schema.ScanRow{EventID: uuid.New(), TenantID: e.tenant, DomainID: r.domain, JobID: uuid.New(), Host: "h.example.com", Port: 443, Region: r.region, IP: r.ip,
			ScheduledAt: now.Add(-time.Duration(i+1) * time.Minute), ScannedAt: now.Add(-time.Duration(i+1) * time.Minute),
			Outcome: r.outcome, HandshakeMS: r.hs, ConnectMS: 5}
		if r.leaf != "" {
			na := now.Add(r.expires)
			nb := now.Add(-30 * 24 * time.Hour)
			row.CertificateFound, row.LeafSHA256, row.NotAfter, row.NotBefore = true, r.leaf, &na, &nb
			row.Issuer, row.TLSVersion, row.KeyType, row.KeyBits, row.Serial = "Test CA", "TLS 1.3", "ECDSA", 256, "01"
			row.ChainValid, row.HostnameValid = true, true
		}
		rows = append(rows, row)
	}
	if err := schema.InsertScanRows(context.Background(), e.ch, rows); err != nil {
		t.Fatal(err)
	}
	c := e.client(t, e.read)
	code, body := c.get("/")
	if code != http.StatusOK {
		t.Fatalf("GET /: got HTTP %d", code)
	}
	mustContain(t, "overview", body, "No problems", "Expiry planner", "2 domains", `<svg class="chart"`,
		"<title>expired: 1</title>", "<td>expired</td><td></td><td>1</td>")
	code, body = c.get("/domains/" + id)
	if code != http.StatusOK {
		t.Fatalf("GET domain: got HTTP %d", code)
	}
	mustContain(t, "domain", body, "Handshake latency", "Scan outcomes", "Test CA", "<code>192.0.2.1</code>", "eu 192.0.2.1 ", ": 31 ms</title>", ": 47 ms</title>")
	_, body = c.get("/domains/" + other)
	mustContain(t, "other domain", body, "<title>timeout: 1</title>", "<title>ok: 1</title>")
}
