package lru

import "testing"

// A value is found only at the version it was kept at, the newest Put
// wins, and past the size the least recently used one goes.
func TestVersioned(t *testing.T) {
	c := New[int](2)
	if _, ok := c.Get("a", "1"); ok {
		t.Fatal("found a value never put")
	}
	c.Put("a", "1", 10)
	c.Put("b", "1", 20)
	if v, ok := c.Get("a", "1"); !ok || v != 10 {
		t.Fatalf("a at 1: %d, %v", v, ok)
	}
	if _, ok := c.Get("a", "2"); ok {
		t.Fatal("a found at a version it was not kept at")
	}
	c.Put("a", "2", 11)
	if _, ok := c.Get("a", "1"); ok {
		t.Fatal("a found at its old version")
	}
	// b is now the least recently used: c pushes it out.
	c.Put("c", "1", 30)
	if _, ok := c.Get("b", "1"); ok {
		t.Fatal("b kept past the size")
	}
	for k, want := range map[string]int{"a": 11, "c": 30} {
		v := map[string]string{"a": "2", "c": "1"}[k]
		if got, ok := c.Get(k, v); !ok || got != want {
			t.Fatalf("%s: %d, %v; want %d", k, got, ok, want)
		}
	}
	// No version: nothing kept, nothing found.
	c.Put("d", "", 40)
	if _, ok := c.Get("d", ""); ok {
		t.Fatal("found a value without a version")
	}
	if New[int](0).max != 1 {
		t.Fatal("New(0) must keep one value")
	}
}
