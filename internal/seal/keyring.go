package seal

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Keyring gives every replica of a role the same Box: the key is derived
// on first use from the operator's passphrase and a salt kept in Redis
// (created by whichever replica comes first, SETNX, then read by all), and
// kept, since scrypt costs about 100 ms. It is safe for concurrent use.
type Keyring struct {
	passphrase string
	rdb        redis.UniversalClient
	saltKey    string

	mu  sync.Mutex
	box *Box
}

// NewKeyring returns a keyring for passphrase with its salt at saltKey.
func NewKeyring(passphrase string, rdb redis.UniversalClient, saltKey string) *Keyring {
	return &Keyring{passphrase: passphrase, rdb: rdb, saltKey: saltKey}
}

// Box returns the keyring's Box, deriving it on the first call.
func (k *Keyring) Box(ctx context.Context) (*Box, error) {
	if k.passphrase == "" {
		return nil, errors.New("no passphrase configured")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.box != nil {
		return k.box, nil
	}
	salt, err := NewSalt()
	if err != nil {
		return nil, err
	}
	if err := k.rdb.SetNX(ctx, k.saltKey, salt, 0).Err(); err != nil {
		return nil, fmt.Errorf("store salt %s: %w", k.saltKey, err)
	}
	stored, err := k.rdb.Get(ctx, k.saltKey).Bytes()
	if err != nil {
		return nil, fmt.Errorf("read salt %s: %w", k.saltKey, err)
	}
	key, err := KeyFromPassphrase(k.passphrase, stored)
	if err != nil {
		return nil, err
	}
	box, err := New(key)
	if err != nil {
		return nil, err
	}
	k.box = box
	return box, nil
}
