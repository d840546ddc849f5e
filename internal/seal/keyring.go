package seal

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/replicated"
)

// Keyring gives every replica of a role the same Box: the key is derived
// on first use from the operator's passphrase and a salt kept in Redis
// (created by whichever replica comes first, SETNX, then read by all), and
// kept, since scrypt costs about 100 ms. It is safe for concurrent use.
//
// The salt is written through a replicated.Writer: a salt lost in a
// failover would be replaced by a new one, and everything sealed under
// the old salt could never be opened again. A Box whose salt the replicas
// did not confirm is not handed out (the error wraps
// replicated.ErrNotReplicated), so nothing is sealed under it; the next
// call tries again.
type Keyring struct {
	passphrase string
	rdb        redis.UniversalClient
	saltKey    string
	w          *replicated.Writer

	mu  sync.Mutex
	box *Box
}

// NewKeyring returns a keyring for passphrase with its salt at saltKey,
// written through w (the store's writer, which waits for replicas as the
// store's commands do); nil writes through rdb without waiting.
func NewKeyring(passphrase string, rdb redis.UniversalClient, saltKey string, w *replicated.Writer) *Keyring {
	return &Keyring{passphrase: passphrase, rdb: rdb, saltKey: saltKey, w: w}
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
	var get *redis.StringCmd
	store := func(p redis.Pipeliner) error {
		p.SetNX(ctx, k.saltKey, salt, 0)
		get = p.Get(ctx, k.saltKey)
		return nil
	}
	if k.w != nil {
		_, err = k.w.Pipelined(ctx, k.saltKey, store)
	} else {
		_, err = k.rdb.Pipelined(ctx, store)
	}
	if err != nil {
		return nil, fmt.Errorf("store salt %s: %w", k.saltKey, err)
	}
	stored, err := get.Bytes()
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
