package domainindex

import (
	"context"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/internal/testenv"
)

// TestCheckCollation: the test Redis (C locale), alone and as a cluster,
// compares by bytes, and an
// answer that a locale would give (punctuation ignored, so "a-b" after
// "ab") is refused.
func TestCheckCollation(t *testing.T) {
	if err := CheckCollation(context.Background(), testenv.Redis(t).Client(t)); err != nil {
		t.Fatalf("C-locale redis: %v", err)
	}
	if err := CheckCollation(context.Background(), testenv.RedisCluster(t).Client(t)); err != nil {
		t.Fatalf("C-locale redis cluster: %v", err)
	}
	bytes := make([]int64, len(collationPairs))
	for i, p := range collationPairs {
		if p[0] < p[1] {
			bytes[i] = 1
		}
	}
	if err := collationMismatch(bytes); err != nil {
		t.Fatalf("the bytes' own order: %v", err)
	}
	locale := append([]int64(nil), bytes...)
	locale[0] = 1 - locale[0] // "a-b" ordered as "ab" would be
	if err := collationMismatch(locale); err == nil || !strings.Contains(err.Error(), "LC_ALL=C") {
		t.Errorf("a locale's order: got %v, want the LC_ALL=C error", err)
	}
	if err := collationMismatch(bytes[:2]); err == nil {
		t.Error("too few answers: no error")
	}
}
