package testenv_test

import (
	"context"
	"github.com/certfleet/certfleet/internal/testenv"
	"os"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func TestServices(t *testing.T) {
	r := testenv.Redis(t).Client(t)
	if err := r.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	db := testenv.ClickHouse(t)
	c := db.Conn(t)
	var n uint64
	if err := c.QueryRow(context.Background(), "SELECT count() FROM system.tables WHERE database = currentDatabase()").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("got %d tables in a new database, want 0", n)
	}
}
