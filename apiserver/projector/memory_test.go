package projector

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

// maxViewBytes is what MEMORY USAGE gave the view of the shape of
// internal/scalebench's TestRedisMemoryPerDomain (three regions, two IPs
// each, one certificate), when measured: a listpack of 448 B (some 421 B
// of content in jemalloc's class of 448; 512 B, 616 with the key, before
// layout 5 put each region's mark in its field; 640 B before the field
// per region) and the key.
const maxViewBytes = 552

// The view of a common domain stays a listpack, which Redis keeps only
// while every field and value is at most 64 bytes and there are at most
// 128 fields, and does not grow: a hashtable costs some 70 bytes more per
// field. It holds with the benchmark's timings (12 and 30 ms) and with
// slower ones (150 and 1,400 ms, two digits each), which still fit one
// field per region.
func TestViewStaysCompact(t *testing.T) {
	for _, timings := range [][2]int64{{12, 30}, {150, 1400}} {
		t.Run(fmt.Sprintf("%d-%dms", timings[0], timings[1]), func(t *testing.T) { viewStaysCompact(t, timings[0], timings[1]) })
	}
}

func viewStaysCompact(t *testing.T, connect, handshake int64) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	dom := uuid.NewString()
	tenantID := events.TenantID("owner7@example.com")
	host := "www17.shop7.example"
	added, err := events.New(events.DomainAdded, tenantID, dom, events.DomainAddedV1{DomainID: dom, Host: host, Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	evs := []events.Envelope{added}
	start := time.Now().UTC()
	notAfter := start.Add(60 * 24 * time.Hour).Truncate(time.Second)
	for _, region := range []string{"eu-west", "us-east", "ap-south"} {
		job := uuid.New()
		sc := events.ScanCompletedV1{JobID: job, DomainID: dom, Host: host, Port: 443, Region: region, Agent: region + "-1",
			StartedAt: start, FinishedAt: start.Add(300 * time.Millisecond)}
		for ip := range 2 {
			sc.Results = append(sc.Results, events.IPResult{
				IP: fmt.Sprintf("198.51.117.%d", ip+1), Outcome: events.OutcomeOK, CertificateFound: true,
				Subject: "CN=" + host, Issuer: "CN=Example Issuing CA 1,O=Example", SANs: []string{host},
				NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter,
				LeafSHA256: fmt.Sprintf("%064x", 1717), ChainLength: 2, ChainValid: true, HostnameValid: true,
				TLSVersion: "TLS 1.3", ConnectMS: connect, HandshakeMS: handshake,
			})
		}
		e, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, tenantID, dom, sc)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if err := p.ApplyBatch(ctx, evs); err != nil {
		t.Fatal(err)
	}
	all := rdb.HGetAll(ctx, ViewKey(dom)).Val()
	fields := make([]string, 0, len(all))
	for f := range all {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for _, f := range fields {
		t.Logf("%q = %q (%d B)", f, all[f], len(all[f]))
	}
	if enc := rdb.ObjectEncoding(ctx, ViewKey(dom)).Val(); enc != "listpack" {
		t.Errorf("view encoding: got %s, want listpack", enc)
	}
	size := rdb.MemoryUsage(ctx, ViewKey(dom), 0).Val() + rdb.MemoryUsage(ctx, VersionKey(dom), 0).Val()
	t.Logf("view and version: %d B", size)
	if size > maxViewBytes {
		t.Errorf("view and version: got %d B, want at most %d B", size, maxViewBytes)
	}
}
