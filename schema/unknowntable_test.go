package schema

import (
	"context"
	"fmt"
	"testing"

	"github.com/certfleet/certfleet/internal/testenv"
)

// unknownTable must recognise ClickHouse's answer for a missing table as
// the driver returns it, wrapped: reshape.run retries on it.
func TestUnknownTable(t *testing.T) {
	conn := testenv.ClickHouse(t).Conn(t)
	err := conn.Exec(context.Background(), "INSERT INTO no_such_table (x) SELECT 1")
	if err == nil || !unknownTable(fmt.Errorf("copy: %w", err)) {
		t.Fatalf("got %v, want UNKNOWN_TABLE recognised", err)
	}
	if unknownTable(conn.Exec(context.Background(), "SELEC 1")) {
		t.Error("a syntax error read as UNKNOWN_TABLE")
	}
}
