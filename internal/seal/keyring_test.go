package seal

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// Two replicas with one passphrase open each other's values: they share
// the salt the first one created; another passphrase does not.
func TestKeyringSharedAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	a, err := NewKeyring("correct horse battery staple", rdb, "test:salt", nil).Box(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeyring("correct horse battery staple", rdb, "test:salt", nil).Box(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := a.Seal([]byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Open(sealed, nil); err != nil || string(got) != "secret" {
		t.Errorf("other replica: got %q, %v, want the secret", got, err)
	}
	other, err := NewKeyring("another passphrase entirely", rdb, "test:salt", nil).Box(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(sealed, nil); err == nil {
		t.Error("another passphrase opened the value")
	}
	if _, err := NewKeyring("", rdb, "test:salt", nil).Box(ctx); err == nil {
		t.Error("an empty passphrase gave a box")
	}
}

// With a writer that waits for a replica, a salt no replica confirmed is
// not used: Box fails with replicated.ErrNotReplicated and keeps nothing,
// so nothing is sealed under a salt a failover could lose; once a replica
// is there, the next call derives the box from the salt the master kept.
func TestKeyringWaitsForTheSalt(t *testing.T) {
	ctx := context.Background()
	master := testenv.RedisPrimary(t)
	rdb := master.Client(t)
	w, err := replicated.New(replicated.Config{Replicas: 1, Timeout: 100 * time.Millisecond}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeyring("correct horse battery staple", rdb, "test:salt", w)
	if _, err := k.Box(ctx); !errors.Is(err, replicated.ErrNotReplicated) {
		t.Fatalf("box with no replica: got %v, want ErrNotReplicated", err)
	}
	salt := rdb.Get(ctx, "test:salt").Val()
	replica := master.Replica(t)
	box, err := k.Box(ctx)
	if err != nil {
		t.Fatalf("box with a replica: %v", err)
	}
	if got := replica.Client(t).Get(ctx, "test:salt").Val(); got != salt {
		t.Errorf("salt on the replica: got %q, want the master's %q", got, salt)
	}
	sealed, err := box.Seal([]byte("v"), nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := KeyFromPassphrase("correct horse battery staple", []byte(salt))
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(sealed, nil); err != nil {
		t.Errorf("the replica's salt does not open what the waited box sealed: %v", err)
	}
}
