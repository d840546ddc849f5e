// Package lru keeps values by key and version, dropping the least
// recently used past a size: an API server's caches of what it decoded
// from Redis (expiration views, domain records). A caller asks with the
// version Redis holds now, so a value is used only while it has not
// changed, and keeps a value with the version it was read at.
package lru

import (
	"container/list"
	"sync"
)

// Versioned keeps at most max values, each under a key and the version it
// was read at. Safe for concurrent use; values are shared: read only.
type Versioned[V any] struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *entry[V], the most recently used first
	m   map[string]*list.Element
}

type entry[V any] struct {
	key, version string
	val          V
}

// New returns a cache of at most size values (at least one).
func New[V any](size int) *Versioned[V] {
	return &Versioned[V]{max: max(size, 1), ll: list.New(), m: map[string]*list.Element{}}
}

// Get returns key's value when it is kept at version; an empty version
// (nothing to compare) never matches.
func (c *Versioned[V]) Get(key, version string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok && version != "" && el.Value.(*entry[V]).version == version {
		c.ll.MoveToFront(el)
		return el.Value.(*entry[V]).val, true
	}
	var zero V
	return zero, false
}

// Peek returns key's value and the version it is kept at, whatever that
// is, for a caller that checks the version itself; it does not count as
// a use.
func (c *Versioned[V]) Peek(key string) (val V, version string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, found := c.m[key]; found {
		e := el.Value.(*entry[V])
		return e.val, e.version, true
	}
	return val, "", false
}

// Put keeps val as key's value at version (an empty version keeps
// nothing), dropping the least recently used value past the size.
func (c *Versioned[V]) Put(key, version string, val V) {
	if version == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		el.Value = &entry[V]{key: key, version: version, val: val}
		c.ll.MoveToFront(el)
		return
	}
	c.m[key] = c.ll.PushFront(&entry[V]{key: key, version: version, val: val})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		delete(c.m, last.Value.(*entry[V]).key)
		c.ll.Remove(last)
	}
}
