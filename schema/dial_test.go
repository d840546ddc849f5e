package schema

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

// TestDialTimeout: a server that accepts connections and answers nothing
// (a hung ClickHouse) fails Open after DialTimeout, not the driver's
// 30 s, whatever the caller's context allows.
func TestDialTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	start := time.Now()
	_, err = Open(context.Background(), "clickhouse://"+ln.Addr().String()+"/default", testenv.Logger(t))
	took := time.Since(start)
	if err == nil || took > DialTimeout+2*time.Second {
		t.Fatalf("open of a silent server: %v after %s, want an error within %s", err, took.Round(time.Millisecond), DialTimeout)
	}
}
