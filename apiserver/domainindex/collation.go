package domainindex

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// The list script orders strings in Lua (hostnames it reads, sort keys it
// sorts with table.sort), and Lua compares strings with strcoll: Redis
// sets LC_COLLATE from its environment at start. Under a locale other
// than C (en_US.UTF-8 ignores punctuation and case at first), a page read
// that way would order hostnames otherwise than the hostname index
// (ZRANGEBYLEX, bytes), and pages of one list could repeat or miss
// domains. CheckCollation refuses such a Redis at start.

// collationScript answers, for each pair of its arguments, whether Lua
// orders the first before the second.
var collationScript = redis.NewScript(`
local out = {}
for i = 1, #ARGV, 2 do out[#out + 1] = (ARGV[i] < ARGV[i + 1]) and 1 or 0 end
return out
`)

// collationPairs are names whose byte order a locale's collation changes:
// punctuation, case, digits against letters.
var collationPairs = [][2]string{
	{"a-b.example 00443", "ab.example 00443"},
	{"ab.example 00443", "a-b.example 00443"},
	{"a.example", "a-example"},
	{"B.example", "a.example"},
	{"a.example", "B.example"},
	{"www1.example", "www-1.example"},
	{"xn--a.example", "x.example"},
}

// CheckCollation fails when Redis (every master of a cluster) compares
// strings in Lua otherwise than by their bytes: start redis-server with
// LC_ALL=C (or C.UTF-8), docs/operations.md.
func CheckCollation(ctx context.Context, rdb redis.UniversalClient) error {
	args := make([]any, 0, 2*len(collationPairs))
	for _, p := range collationPairs {
		args = append(args, p[0], p[1])
	}
	check := func(c redis.Scripter) error {
		got, err := collationScript.Run(ctx, c, nil, args...).Int64Slice()
		if err != nil {
			return fmt.Errorf("check redis string collation: %w", err)
		}
		return collationMismatch(got)
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return check(c) })
	}
	return check(rdb)
}

// collationMismatch is the error for Lua's answers to collationPairs
// (1: the first is less) when one is not the bytes' order.
func collationMismatch(less []int64) error {
	if len(less) != len(collationPairs) {
		return fmt.Errorf("check redis string collation: %d answers for %d pairs", len(less), len(collationPairs))
	}
	for i, p := range collationPairs {
		if (less[i] == 1) != (p[0] < p[1]) {
			return fmt.Errorf("redis orders %q and %q otherwise than their bytes (a locale other than C): the domain list would order hostnames inconsistently; start redis-server with LC_ALL=C or C.UTF-8", p[0], p[1])
		}
	}
	return nil
}
