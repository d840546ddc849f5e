package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/accounts/accountstest"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestAlertEngineToWebhook runs the real chain: scan events through two
// projector replicas with the alert engine, two notifiers, one webhook.
// Each scan is applied by both replicas (a redelivery); an expiring
// certificate raises ssl_expiry, its renewal resolves it (and raises the
// one-shot cert_changed), and the receiver gets exactly one message for
// each alert event in the stream.
func TestAlertEngineToWebhook(t *testing.T) {
	e := newTestEnv(t)
	const tenant, domainID, host = "tenant-e2e", "6a0c2f1e-0000-4c55-9a4e-1d7f3c2b8e90", "shop.example.com"
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	day := 24 * time.Hour
	now := t0.Add(10 * day)
	var projs []*projector.Projector
	for i := range 2 {
		eng, err := alerts.New(alerts.Config{Now: func() time.Time { return now }}, e.rdb, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		p, err := projector.New(projector.Config{Consumer: fmt.Sprintf("proj-%d", i), Evaluator: eng}, e.rdb, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		projs = append(projs, p)
	}
	rcv := newReceiver(t)
	ch := e.channel(tenant, channels.ChannelInput{Type: TypeWebhook, URL: rcv.srv.URL, Secret: ptr("engine-test-secret-123")})
	e.start(fastConfig("n1"))
	e.start(fastConfig("n2"))

	apply := func(ev events.Envelope) {
		t.Helper()
		for _, p := range projs {
			if err := p.Apply(context.Background(), ev); err != nil {
				t.Fatalf("apply %s: %v", ev.Name, err)
			}
		}
	}
	accountstest.PutDomain(t, e.rdb, tenant, domainID, host, 443) // the engine alerts on recorded domains only
	added, err := events.New(events.DomainAdded, tenant, domainID, events.DomainAddedV1{DomainID: domainID, Host: host, Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	added.OccurredAt = t0
	apply(added)
	scan := func(at time.Time, sha string, notAfter time.Time) events.Envelope {
		job := uuid.New()
		ev, err := events.NewWithID(events.ScanEventID(job, "eu"), events.ScanCompleted, tenant, domainID, events.ScanCompletedV1{
			JobID: job, DomainID: domainID, Host: host, Port: 443, Region: "eu", Agent: "eu-1",
			StartedAt: at.Add(-time.Second), FinishedAt: at,
			Results: []events.IPResult{{IP: "192.0.2.7", Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: sha,
				NotBefore: notAfter.Add(-90 * day), NotAfter: notAfter, Issuer: "CN=Lab CA", KeyType: "ECDSA", KeyBits: 256,
				SignatureAlgorithm: "ECDSA-SHA256", ChainValid: true, HostnameValid: true, TLSVersion: "TLS 1.3"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	apply(scan(now.Add(-time.Hour), "aa11", now.Add(10*day)))   // expires in 10 days: under 14
	apply(scan(now.Add(-time.Minute), "bb22", now.Add(90*day))) // renewed

	raised := streamEvents[events.AlertRaisedV1](t, e.rdb, events.AlertRaised)
	resolved := streamEvents[events.AlertResolvedV1](t, e.rdb, events.AlertResolved)
	lasting := 0
	for _, a := range raised {
		if !a.OneShot {
			lasting++
		}
	}
	if lasting == 0 || len(resolved) != lasting {
		t.Fatalf("alert events: got %d raised (%d lasting), %d resolved, want the lasting ones resolved", len(raised), lasting, len(resolved))
	}
	e.waitAttempts(tenant, ch.ID, len(raised)+len(resolved))
	time.Sleep(200 * time.Millisecond)
	reqs := rcv.got()
	if len(reqs) != len(raised)+len(resolved) {
		t.Fatalf("webhook requests: got %d, want %d (one per alert event)", len(reqs), len(raised)+len(resolved))
	}
	seen := map[string]int{}
	for _, r := range reqs {
		var b WebhookBody
		if err := json.Unmarshal(r.body, &b); err != nil {
			t.Fatal(err)
		}
		m := b.Messages[0]
		seen[m.AlertID+" "+m.Status]++
		if m.Hostname != host || m.DomainID != domainID {
			t.Errorf("message: got %+v, want %s", m, host)
		}
	}
	for _, a := range raised {
		wantResolved := 1
		if a.OneShot {
			wantResolved = 0
		}
		if seen[a.AlertID+" "+StatusTriggered] != 1 || seen[a.AlertID+" "+StatusResolved] != wantResolved {
			t.Errorf("alert %s (%s): got %d triggered, %d resolved messages, want 1 and %d", a.AlertID, a.AlertType,
				seen[a.AlertID+" "+StatusTriggered], seen[a.AlertID+" "+StatusResolved], wantResolved)
		}
	}
}
