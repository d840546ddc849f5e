package seal

import (
	"context"
	"os"
	"testing"

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
