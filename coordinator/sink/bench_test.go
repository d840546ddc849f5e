package sink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// BenchmarkSink measures scan result rows per second from the results
// stream into ClickHouse: "sink" is the Sink (which also writes every event
// into the event store), "baseline" a bare XREADGROUP + decode +
// PrepareBatch loop over the same data, in the same run.
func BenchmarkSink(b *testing.B) {
	b.Run("sink", func(b *testing.B) {
		rdb, conn := benchEnv(b)
		b.ResetTimer()
		ctx, cancel := context.WithCancel(context.Background())
		s, err := sink.New(sink.Config{Consumer: "bench", FlushInterval: 10 * time.Millisecond}, rdb, conn, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		for !drained(b, rdb, b.N) {
			time.Sleep(2 * time.Millisecond)
		}
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("baseline", func(b *testing.B) {
		rdb, conn := benchEnv(b)
		b.ResetTimer()
		if err := baseline(context.Background(), rdb, conn, b.N); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

// benchEnv returns a Redis whose results stream holds n scan.completed
// events of two IPs each, and a migrated ClickHouse database.
func benchEnv(b *testing.B) (*redis.Client, driver.Conn) {
	b.Helper()
	ctx := context.Background()
	db := testenv.ClickHouse(b)
	conn, err := schema.Open(ctx, db.DSN, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	if err := schema.Migrate(ctx, conn, zap.NewNop()); err != nil {
		b.Fatal(err)
	}
	rdb := testenv.Redis(b).Client(b)
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	pipe := rdb.Pipeline()
	for i := range b.N {
		tenant := events.TenantID(fmt.Sprintf("user%d@example.com", i%100))
		domain := events.DomainID(tenant, fmt.Sprintf("host%d.example", i), 443)
		at := start.Add(time.Duration(i) * time.Second)
		job := events.JobID(domain, at.UnixMilli())
		result := func(ip string) events.IPResult {
			return events.IPResult{
				IP: ip, Outcome: events.OutcomeOK, CertificateFound: true, Subject: "CN=host.example",
				Issuer: "CN=Bench CA", SANs: []string{"host.example", "www.host.example"}, Serial: "0123456789abcdef",
				NotBefore: at.Add(-30 * 24 * time.Hour), NotAfter: at.Add(60 * 24 * time.Hour),
				LeafSHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", KeyType: "ECDSA",
				KeyBits: 256, SignatureAlgorithm: "ECDSA-SHA256", ChainLength: 2, TLSVersion: "TLS 1.3",
				CipherSuite: "TLS_AES_128_GCM_SHA256", ChainValid: true, HostnameValid: true, ConnectMS: 2, HandshakeMS: 5,
				HTTPStatus: 200, HSTSMaxAge: 31536000, HSTSIncludeSubdomains: true, LegacyTLSChecked: true,
			}
		}
		e, err := events.NewWithID(events.ScanEventID(job, "eu"), events.ScanCompleted, tenant, domain, events.ScanCompletedV1{
			JobID: job, DomainID: domain, Host: fmt.Sprintf("host%d.example", i), Port: 443, Region: "eu",
			Agent: "agent-eu-1", StartedAt: at, FinishedAt: at.Add(40 * time.Millisecond),
			Results: []events.IPResult{result("192.0.2.1"), result("2001:db8::1")},
		})
		if err != nil {
			b.Fatal(err)
		}
		v, err := e.StreamValues()
		if err != nil {
			b.Fatal(err)
		}
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: events.StreamResults, Values: v})
		if pipe.Len() == 1000 || i == b.N-1 {
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	return rdb, conn
}

// drained tells whether the sink group has read and acknowledged all n
// entries of the results stream.
func drained(b *testing.B, rdb *redis.Client, n int) bool {
	groups, err := rdb.XInfoGroups(context.Background(), events.StreamResults).Result()
	if err != nil {
		return false
	}
	for _, g := range groups {
		if g.Name == sink.Group {
			return g.EntriesRead == int64(n) && g.Pending == 0
		}
	}
	return false
}

// baseline is the least code that moves the results stream into
// scan_results: read 5000, decode, one batch insert, acknowledge.
func baseline(ctx context.Context, rdb *redis.Client, conn driver.Conn, n int) error {
	if err := rdb.XGroupCreateMkStream(ctx, events.StreamResults, "baseline", "0").Err(); err != nil {
		return err
	}
	for read := 0; read < n; {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: "baseline", Consumer: "c", Streams: []string{events.StreamResults, ">"}, Count: 5000, Block: time.Second,
		}).Result()
		if err != nil {
			return err
		}
		msgs := res[0].Messages
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO scan_results ("+schema.ScanColumns+")")
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(msgs))
		for _, m := range msgs {
			var e struct {
				EventID  uuid.UUID              `json:"event_id"`
				TenantID string                 `json:"tenant_id"`
				Payload  events.ScanCompletedV1 `json:"payload"`
			}
			raw, _ := m.Values["payload"].(string)
			if err := json.Unmarshal([]byte(raw), &e); err != nil {
				return err
			}
			p := e.Payload
			for _, r := range p.Results {
				nb, na := r.NotBefore.Unix(), r.NotAfter.Unix()
				if err := batch.Append(e.EventID, p.JobID, p.ScheduledAt, e.TenantID, p.DomainID, p.Host, uint16(p.Port), p.Region,
					p.Agent, r.IP, string(r.Outcome), r.Detail, u8(r.CertificateFound), r.Subject, r.Issuer, r.SANs,
					r.Serial, &nb, &na, r.LeafSHA256, r.KeyType, uint16(r.KeyBits), r.SignatureAlgorithm,
					uint8(r.ChainLength), r.TLSVersion, r.CipherSuite, u8(r.ChainValid), u8(r.HostnameValid),
					uint32(r.ConnectMS), uint32(r.HandshakeMS), p.StartedAt, p.FinishedAt, uint16(r.HTTPStatus),
					r.HSTSMaxAge, u8(r.HSTSIncludeSubdomains), u8(r.LegacyTLSChecked), nonNil(r.LegacyTLS)); err != nil {
					return err
				}
			}
			ids = append(ids, m.ID)
		}
		if err := batch.Send(); err != nil {
			return err
		}
		if err := rdb.XAck(ctx, events.StreamResults, "baseline", ids...).Err(); err != nil {
			return err
		}
		read += len(msgs)
	}
	if got, err := rdb.XPending(ctx, events.StreamResults, "baseline").Result(); err != nil || got.Count != 0 {
		return errors.Join(err, fmt.Errorf("baseline left %d entries pending", got.Count))
	}
	return nil
}

// nonNil is an empty array column value for a nil slice.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func u8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
