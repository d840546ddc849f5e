package domainindex

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/testenv"
)

// bucketOpLua runs one operation on a bucketed order (KEYS[1]) and the
// same on a plain zset (KEYS[2]), the answer it must give, and returns
// both as JSON. ARGV: op, "1" for a score-ordered order, then the op's.
// A member added at another score is taken out of its old one first, as
// the writers do.
const bucketOpLua = `
local K, Z, op, scored = KEYS[1], KEYS[2], ARGV[1], ARGV[2] == '1'
local function sc(v) if scored then return tonumber(v) end return nil end
local function both(a, b) return {cjson.encode(a), cjson.encode(b)} end
local function lim(o, c) return tonumber(o), tonumber(c) end
if op == 'add' then
  local s, m = tonumber(ARGV[3]), ARGV[4]
  if not scored then s = 0 end
  local old = redis.call('ZSCORE', Z, m)
  -- A move answers 0, as ZADD does for a member it had.
  local moved = old and tonumber(old) ~= s
  if moved then ob_rem(K, sc(old), m) end
  local a = ob_add(K, sc(s), m)
  if moved then a = a - 1 end
  return both(a, redis.call('ZADD', Z, s, m))
elseif op == 'rem' then
  local m = ARGV[3]
  local s = redis.call('ZSCORE', Z, m) or ARGV[4]
  return both(ob_rem(K, sc(s), m), redis.call('ZREM', Z, m))
elseif op == 'has' then
  local m = ARGV[3]
  local s = redis.call('ZSCORE', Z, m) or ARGV[4]
  return both(ob_has(K, sc(s), m), redis.call('ZSCORE', Z, m) ~= false)
elseif op == 'rank' then
  local m = ARGV[3]
  local s = redis.call('ZSCORE', Z, m) or ARGV[4]
  return both(ob_rank(K, sc(s), m) or -1, redis.call('ZRANK', Z, m) or -1)
elseif op == 'card' then
  return both(ob_card(K), redis.call('ZCARD', Z))
elseif op == 'count' then
  return both(ob_count(K, ARGV[3], ARGV[4]), redis.call('ZCOUNT', Z, ARGV[3], ARGV[4]))
elseif op == 'lexcount' then
  return both(ob_lexcount(K, ARGV[3], ARGV[4]), redis.call('ZLEXCOUNT', Z, ARGV[3], ARGV[4]))
elseif op == 'range' then
  local a, b, ws = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
  local want
  if ws then want = redis.call('ZRANGE', Z, a, b, 'WITHSCORES') else want = redis.call('ZRANGE', Z, a, b) end
  return both(ob_range(K, a, b, ws), want)
elseif op == 'byscore' then
  local min, max, desc, ws = ARGV[3], ARGV[4], ARGV[5] == '1', ARGV[6] == '1'
  local o, c = lim(ARGV[7], ARGV[8])
  local cmd, a, b = 'ZRANGEBYSCORE', min, max
  if desc then cmd, a, b = 'ZREVRANGEBYSCORE', max, min end
  local want
  if ws then want = redis.call(cmd, Z, a, b, 'WITHSCORES', 'LIMIT', o, c) else want = redis.call(cmd, Z, a, b, 'LIMIT', o, c) end
  return both(ob_byscore(K, min, max, desc, ws, o, c), want)
elseif op == 'bylex' then
  local min, max, desc = ARGV[3], ARGV[4], ARGV[5] == '1'
  local o, c = lim(ARGV[6], ARGV[7])
  local want
  if desc then want = redis.call('ZREVRANGEBYLEX', Z, max, min, 'LIMIT', o, c)
  else want = redis.call('ZRANGEBYLEX', Z, min, max, 'LIMIT', o, c) end
  return both(ob_bylex(K, min, max, desc, o, c), want)
elseif op == 'after' then
  -- The plain set read whole, each member's position against (s, m).
  local s, m, incl, desc, c = tonumber(ARGV[3]), ARGV[4], ARGV[5] == '1', ARGV[6] == '1', tonumber(ARGV[7])
  if m == '' then m = nil end
  local all, want = redis.call('ZRANGE', Z, 0, -1, 'WITHSCORES'), {}
  -- side: -1 before the position, 1 after it, 0 at it; without m every
  -- member of score s is on the side the walk reads.
  local function side(x, xs)
    if xs ~= s then if xs < s then return -1 end return 1 end
    if not m then if desc then return -1 end return 1 end
    if x == m then return 0 elseif x < m then return -1 end
    return 1
  end
  local from, to, step = 1, #all - 1, 2
  if desc then from, to, step = #all - 1, 1, -2 end
  for i = from, to, step do
    local r = side(all[i], tonumber(all[i + 1]))
    if desc then r = -r end
    if (r > 0 or (r == 0 and incl)) and #want < 2 * c then want[#want + 1] = all[i]; want[#want + 1] = all[i + 1] end
  end
  return both(ob_after(K, s, m, incl, desc, c), want)
end
return redis.error_reply('unknown op ' .. op)
`

// bucketModel drives one order, bucketed and plain, through random
// operations and checks each answer and the buckets' shape.
type bucketModel struct {
	t        *testing.T
	ctx      context.Context
	rdb      redis.UniversalClient
	script   *redis.Script
	capacity int
	scored   bool
	key, ref string
	rng      *rand.Rand
	members  []string
	ops      map[string]int
	// splitting: a step-wise conversion (bucketOrderLua) is under way,
	// its bucket being split may be past the capacity.
	splitting bool
}

func (b *bucketModel) run(args ...any) {
	b.t.Helper()
	b.ops[args[0].(string)]++
	res, err := b.script.Run(b.ctx, b.rdb, []string{b.key, b.ref}, append([]any{args[0], flag(b.scored)}, args[1:]...)...).StringSlice()
	if err != nil {
		b.t.Fatalf("%q: %v", args, err)
	}
	if res[0] != res[1] {
		b.t.Fatalf("%q (capacity %d, scored %t): bucketed %s, plain %s", args, b.capacity, b.scored, res[0], res[1])
	}
}

// member: a few bytes of a small alphabet, NUL and 0xff among them, so
// that prefixes, escapes and ties all occur.
func (b *bucketModel) member() string {
	if len(b.members) > 0 && b.rng.IntN(3) == 0 {
		return b.members[b.rng.IntN(len(b.members))]
	}
	const alpha = "\x00ab.z\xff"
	n := 1 + b.rng.IntN(5)
	var s strings.Builder
	for range n {
		s.WriteByte(alpha[b.rng.IntN(len(alpha))])
	}
	return s.String()
}

// score: mostly a few values, so runs of equal scores outgrow a bucket;
// now and then far ones, negative ones and the no-expiry score.
func (b *bucketModel) score() int64 {
	switch b.rng.IntN(10) {
	case 0:
		return -1 - b.rng.Int64N(1e12)
	case 1:
		return NoExpiryMS
	case 2:
		return 1_700_000_000_000 + b.rng.Int64N(1e6)
	}
	return b.rng.Int64N(6)
}

func (b *bucketModel) bound() string {
	switch b.rng.IntN(8) {
	case 0:
		return "-inf"
	case 1:
		return "+inf"
	}
	s := strconv.FormatInt(b.score(), 10)
	if b.rng.IntN(2) == 0 {
		return "(" + s
	}
	return s
}

func (b *bucketModel) lexBound() string {
	switch b.rng.IntN(8) {
	case 0:
		return "-"
	case 1:
		return "+"
	}
	if b.rng.IntN(2) == 0 {
		return "(" + b.member()
	}
	return "[" + b.member()
}

// query asks one random read of both.
func (b *bucketModel) query() {
	n := len(b.members) + 2
	ws := flag(b.rng.IntN(2) == 0)
	desc := flag(b.rng.IntN(2) == 0)
	off, cnt := strconv.Itoa(b.rng.IntN(n)), strconv.Itoa(b.rng.IntN(3*b.capacity)-1)
	if b.rng.IntN(4) == 0 {
		off = "0"
	}
	switch b.rng.IntN(7) {
	case 0:
		b.run("card")
	case 1:
		b.run("has", b.member(), b.score())
	case 2:
		b.run("rank", b.member(), b.score())
	case 3:
		b.run("range", b.rng.IntN(2*n)-n, b.rng.IntN(2*n)-n, ws)
	default:
		if b.scored {
			switch b.rng.IntN(3) {
			case 0:
				b.run("count", b.bound(), b.bound())
			case 1:
				// From a member's position (one there, at its score or
				// not, or none), or from a score alone.
				m, sc := "", b.score()
				if b.rng.IntN(4) > 0 {
					m = b.member()
					if at, err := b.rdb.ZScore(b.ctx, b.ref, m).Result(); err == nil && b.rng.IntN(2) == 0 {
						sc = int64(at)
					}
				}
				b.run("after", sc, m, flag(b.rng.IntN(2) == 0), desc, 1+b.rng.IntN(3*b.capacity))
			default:
				b.run("byscore", b.bound(), b.bound(), desc, ws, off, cnt)
			}
		} else if b.rng.IntN(2) == 0 {
			b.run("lexcount", b.lexBound(), b.lexBound())
		} else {
			b.run("bylex", b.lexBound(), b.lexBound(), desc, off, cnt)
		}
	}
}

func (b *bucketModel) add() {
	m := b.member()
	b.run("add", b.score(), m)
	for _, x := range b.members {
		if x == m {
			return
		}
	}
	b.members = append(b.members, m)
}

func (b *bucketModel) remove() {
	if len(b.members) == 0 {
		return
	}
	i := b.rng.IntN(len(b.members))
	b.run("rem", b.members[i], "0")
	b.members = append(b.members[:i], b.members[i+1:]...)
}

// check reads the buckets as they are: every bucket within the
// capacity and not empty (but the one a step-wise conversion is
// splitting, sizes' "~", while splitting is true), its size as the
// sizes hash says, its members from its lower end up to the next
// bucket's, the total the sum. It returns how many buckets there are.
func (b *bucketModel) check() int {
	b.t.Helper()
	entries, err := b.rdb.ZRange(b.ctx, b.key, 0, -1).Result()
	if err != nil {
		b.t.Fatal(err)
	}
	sizes, err := b.rdb.HGetAll(b.ctx, b.key+bucketSep+"n").Result()
	if err != nil {
		b.t.Fatal(err)
	}
	total := 0
	if len(sizes) == 0 {
		// Plain: within the capacity, as ob_add keeps it.
		if len(entries) > b.capacity {
			b.t.Fatalf("a plain order of %d members, past the capacity %d", len(entries), b.capacity)
		}
		return 0
	}
	if _, ok := sizes["~"]; ok && !b.splitting {
		b.t.Fatalf("bucket %s still marked as being split", sizes["~"])
	}
	var los [][]byte
	for i, e := range entries {
		if len(e) < 10 {
			b.t.Fatalf("entry %q has no id", e)
		}
		lo, id := e[:len(e)-8], e[len(e)-8:]
		if (i == 0) != (lo == "\x00\x00") {
			b.t.Fatalf("entry %d %q: only the first starts below every position", i, e)
		}
		if i == 0 {
			lo = ""
		}
		los = append(los, []byte(lo))
		zs, err := b.rdb.ZRangeWithScores(b.ctx, b.key+bucketSep+id, 0, -1).Result()
		if err != nil {
			b.t.Fatal(err)
		}
		big := b.splitting && sizes["~"] == id
		if len(zs) == 0 || (len(zs) > b.capacity && !big) || sizes[id] != strconv.Itoa(len(zs)) {
			b.t.Fatalf("bucket %s holds %d, sizes say %q (capacity %d)", id, len(zs), sizes[id], b.capacity)
		}
		// Within Redis's default zset-max-listpack-entries (the members
		// are short): a listpack, also after splits.
		if enc := b.rdb.ObjectEncoding(b.ctx, b.key+bucketSep+id).Val(); enc != "listpack" && !big {
			b.t.Fatalf("bucket %s of %d members is a %s", id, len(zs), enc)
		}
		total += len(zs)
		for _, z := range zs {
			p := bucketPos(b.scored, z.Score, z.Member.(string))
			if bytes.Compare(p, los[i]) < 0 {
				b.t.Fatalf("bucket %d holds %q below its lower end", i, z.Member)
			}
			if i+1 < len(entries) {
				nx := entries[i+1]
				if bytes.Compare(p, []byte(nx[:len(nx)-8])) >= 0 {
					b.t.Fatalf("bucket %d holds %q past the next one's lower end", i, z.Member)
				}
			}
		}
	}
	if !sort.SliceIsSorted(los, func(i, j int) bool { return bytes.Compare(los[i], los[j]) < 0 }) {
		b.t.Fatal("directory out of order")
	}
	if sizes["#"] != strconv.Itoa(total) {
		b.t.Fatalf("sizes say %q in all, buckets hold %d", sizes["#"], total)
	}
	return len(entries)
}

// bucketPos is ob_pos in Go.
func bucketPos(scored bool, s float64, m string) []byte {
	var out []byte
	if scored {
		v := int64(s)
		if v >= 0 {
			out = fmt.Appendf(out, "1%015d", min(v, 999999999999999))
		} else {
			out = fmt.Appendf(out, "0%015d", max(v, -999999999999999)+999999999999999+1)
		}
	}
	out = append(out, strings.ReplaceAll(m, "\x00", "\x00\x01")...)
	return append(out, 0, 0)
}

// TestBucketedOrder runs a score-ordered and a lex-ordered order
// through random adds, moves, removals down to nothing and reads (ranks
// across buckets, ranges by score and by member with offsets and limits
// in both directions), each answered as a plain zset answers, with
// buckets of 2, 4 and Redis's 128: plain while small, bucketed from
// past the capacity, plain again once emptied.
func TestBucketedOrder(t *testing.T) {
	rdb := testenv.RedisCluster(t).Client(t)
	ctx := context.Background()
	for _, capacity := range []int{2, 4, 128} {
		for _, scored := range []bool{true, false} {
			t.Run(fmt.Sprintf("cap%d/scored=%t", capacity, scored), func(t *testing.T) {
				tag := fmt.Sprintf("{b%d%t}", capacity, scored)
				b := &bucketModel{t: t, ctx: ctx, rdb: rdb, capacity: capacity, scored: scored,
					script: redis.NewScript(bucketLuaOf(capacity) + bucketOpLua),
					key:    tag + "ix:o", ref: tag + "z:o", rng: rand.New(rand.NewPCG(uint64(capacity), 7)), ops: map[string]int{}}
				grow := 60 * capacity
				if capacity == 128 {
					grow = 1500
				}
				most := 0
				for round := 0; round < 2; round++ {
					for len(b.members) < grow {
						b.add()
						if b.rng.IntN(5) == 0 {
							b.remove()
						}
						if b.rng.IntN(3) == 0 {
							b.query()
						}
						if b.rng.IntN(50) == 0 {
							most = max(most, b.check())
						}
					}
					most = max(most, b.check())
					for range 400 {
						b.query()
					}
					for len(b.members) > 0 {
						b.remove()
						if b.rng.IntN(2) == 0 {
							b.query()
						}
						if b.rng.IntN(40) == 0 {
							b.check()
						}
					}
					if n := b.check(); n != 0 {
						t.Fatalf("%d buckets left with no member", n)
					}
					if n, _ := rdb.Exists(ctx, b.key, b.key+bucketSep+"n").Result(); n != 0 {
						t.Fatalf("an empty order left %d keys", n)
					}
				}
				if most < 4 {
					t.Fatalf("at most %d buckets: the test split too little", most)
				}
				t.Logf("at most %d buckets; ops %v", most, b.ops)
			})
		}
	}
}

// TestBucketOrder rewrites plain sorted sets as bucketed orders
// (bucketOrderLua) and runs the same reads and removals down to
// nothing on them, each answered as the plain set answers.
func TestBucketOrder(t *testing.T) {
	rdb := testenv.RedisCluster(t).Client(t)
	ctx := context.Background()
	for _, capacity := range []int{2, 4, 128} {
		for _, scored := range []bool{true, false} {
			t.Run(fmt.Sprintf("cap%d/scored=%t", capacity, scored), func(t *testing.T) {
				tag := fmt.Sprintf("{c%d%t}", capacity, scored)
				b := &bucketModel{t: t, ctx: ctx, rdb: rdb, capacity: capacity, scored: scored,
					script: redis.NewScript(bucketLuaOf(capacity) + bucketOpLua),
					key:    tag + "ix:o", ref: tag + "z:o", rng: rand.New(rand.NewPCG(uint64(capacity), 9)), ops: map[string]int{}}
				seen := map[string]bool{}
				for len(b.members) < 20*capacity {
					m := b.member()
					var s float64
					if scored {
						s = float64(b.score())
					}
					if !seen[m] {
						seen[m] = true
						b.members = append(b.members, m)
					}
					if err := rdb.ZAdd(ctx, b.ref, redis.Z{Score: s, Member: m}).Err(); err != nil {
						t.Fatal(err)
					}
				}
				if err := rdb.Copy(ctx, b.ref, b.key, 0, false).Err(); err != nil {
					t.Fatal(err)
				}
				// Step by step, a bucket a step, as BucketOrder goes: first
				// alone (the buckets it writes), then on a copy with adds,
				// removals and reads between the steps, answered as the
				// plain set answers.
				fill := max(1, capacity*3/4)
				step := redis.NewScript(bucketLuaOf(capacity) + bucketOrderLua)
				convert := func(key string, between func()) (steps, buckets int) {
					for {
						r, err := step.Run(ctx, rdb, []string{key}, flag(scored), fill, 1).Int64Slice()
						if err != nil {
							t.Fatal(err)
						}
						steps++
						if r[0] == 0 {
							return steps, int(r[1])
						}
						between()
					}
				}
				alone := tag + "ix:a"
				if err := rdb.Copy(ctx, b.ref, alone, 0, false).Err(); err != nil {
					t.Fatal(err)
				}
				want := (len(b.members) + fill - 1) / fill
				if steps, n := convert(alone, func() {}); n != want || steps != want-1 {
					t.Fatalf("rewrote %d members in %d buckets of %d in %d steps, want %d buckets", len(b.members), n, fill, steps, want)
				}
				b.splitting = true
				steps, n := convert(b.key, func() {
					for range 3 {
						switch b.rng.IntN(4) {
						case 0:
							b.add()
						case 1:
							b.remove()
						default:
							b.query()
						}
					}
					b.check()
				})
				b.splitting = false
				if got := b.check(); got != n || steps < 2 {
					t.Fatalf("%d buckets, rewrote %d in %d steps", got, n, steps)
				}
				for range 300 {
					b.query()
				}
				for range 5 * capacity {
					b.add()
				}
				b.check()
				for len(b.members) > 0 {
					b.remove()
					if b.rng.IntN(2) == 0 {
						b.query()
					}
				}
				if got := b.check(); got != 0 {
					t.Fatalf("%d buckets left with no member", got)
				}
			})
		}
	}
}

// bucketBenchLua runs ARGV[3] times the read or write ARGV[1] on the
// order KEYS[1], bucketed (ARGV[2] "1") or plain, each time as a script
// meets it first (no directory kept from the time before). ARGV[4..]:
// the op's.
const bucketBenchLua = `
local K, B, R, op = KEYS[1], ARGV[2] == '1', tonumber(ARGV[3]), ARGV[1]
local a1, a2 = ARGV[4], ARGV[5]
for _ = 1, R do
  for k in pairs(OB_D) do OB_D[k] = nil end
  for k in pairs(OB_P) do OB_P[k] = nil end
  if op == 'rank' then
    local a = tonumber(a1)
    if B then ob_range(K, a, a + 99) else redis.call('ZRANGE', K, a, a + 99) end
  elseif op == 'score' then
    if B then ob_byscore(K, '(' .. a1, '+inf', false, false, 0, 100)
    else redis.call('ZRANGEBYSCORE', K, '(' .. a1, '+inf', 'LIMIT', 0, 100) end
  elseif op == 'revscore' then
    if B then ob_byscore(K, '-inf', '(' .. a1, true, false, 0, 100)
    else redis.call('ZREVRANGEBYSCORE', K, '(' .. a1, '-inf', 'LIMIT', 0, 100) end
  elseif op == 'lex' then
    if B then ob_bylex(K, '(' .. a1, '+', false, 0, 100)
    else redis.call('ZRANGEBYLEX', K, '(' .. a1, '+', 'LIMIT', 0, 100) end
  elseif op == 'count' then
    if B then ob_count(K, '-inf', '(' .. a1) else redis.call('ZCOUNT', K, '-inf', '(' .. a1) end
  elseif op == 'write' then
    local s = tonumber(a1)
    if B then ob_add(K, s, a2); ob_rem(K, s, a2) else redis.call('ZADD', K, s, a2); redis.call('ZREM', K, a2) end
  elseif op == 'lexwrite' then
    if B then ob_add(K, nil, a2); ob_rem(K, nil, a2) else redis.call('ZADD', K, 0, a2); redis.call('ZREM', K, a2) end
  end
end
return 1
`

// BenchmarkBucketedOrder compares a bucketed order (buckets of 128,
// three quarters full) with the plain sorted set, a skiplist past 128
// members under Redis's defaults, in orders of 1,000 and 20,000: a page
// of 100 by rank (first and deep), after a cursor by score (both ways)
// and by member, a count, a member added and removed. ns/op is one
// operation's time inside the script.
func BenchmarkBucketedOrder(b *testing.B) {
	rdb := testenv.Redis(b).Client(b)
	ctx := context.Background()
	const reps = 200
	script := redis.NewScript(bucketLua + bucketBenchLua)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1000, 20000} {
		scored, lex := fmt.Sprintf("{bb}s%d", n), fmt.Sprintf("{bb}l%d", n)
		var mid float64
		var midLex string
		for i := 0; i < n; i += 1000 {
			var zs, zl []redis.Z
			for j := i; j < min(n, i+1000); j++ {
				id := make([]byte, 16)
				for k := range id {
					id[k] = byte(rng.IntN(256))
				}
				s := float64(1_700_000_000_000 + rng.Int64N(1e10))
				host := fmt.Sprintf("www%d.shop%d.example 00443 %s", rng.IntN(1e6), j%37, id)
				zs = append(zs, redis.Z{Score: s, Member: string(id)})
				zl = append(zl, redis.Z{Member: host})
				if j == n/2 {
					mid, midLex = s, host
				}
			}
			if err := rdb.ZAdd(ctx, scored, zs...).Err(); err != nil {
				b.Fatal(err)
			}
			if err := rdb.ZAdd(ctx, lex, zl...).Err(); err != nil {
				b.Fatal(err)
			}
		}
		for _, k := range []string{scored, lex} {
			if err := rdb.Copy(ctx, k, k+"b", 0, true).Err(); err != nil {
				b.Fatal(err)
			}
			if _, err := BucketOrder(ctx, rdb, k+"b", k == scored); err != nil {
				b.Fatal(err)
			}
		}
		ms := strconv.FormatInt(int64(mid), 10)
		cases := []struct {
			name, key string
			args      []any
		}{
			{"rank_first", scored, []any{"rank", 0}},
			{"rank_deep", scored, []any{"rank", n - 200}},
			{"score_after_cursor", scored, []any{"score", ms}},
			{"revscore_after_cursor", scored, []any{"revscore", ms}},
			{"lex_after_cursor", lex, []any{"lex", midLex}},
			{"count", scored, []any{"count", ms}},
			{"add_remove", scored, []any{"write", ms, "0123456789abcdef"}},
			{"add_remove_lex", lex, []any{"lexwrite", 0, "www.example 00443 0123456789abcdef"}},
		}
		for _, c := range cases {
			for _, bucketed := range []bool{false, true} {
				key, kind := c.key, "plain"
				if bucketed {
					key, kind = c.key+"b", "bucketed"
				}
				b.Run(fmt.Sprintf("n=%d/%s/%s", n, c.name, kind), func(b *testing.B) {
					args := append([]any{c.args[0], flag(bucketed), reps}, c.args[1:]...)
					for range b.N {
						if err := script.Run(ctx, rdb, []string{key}, args...).Err(); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*reps), "ns/op-in-script")
				})
			}
		}
	}
}

// TestBucketedOrderDeletedOutside: an order whose directory alone was
// deleted (a DEL from outside, as an operator's of the key) starts again
// plain at its next write, its old buckets and sizes gone.
func TestBucketedOrderDeletedOutside(t *testing.T) {
	rdb := testenv.RedisCluster(t).Client(t)
	ctx := context.Background()
	b := &bucketModel{t: t, ctx: ctx, rdb: rdb, capacity: 4, scored: false,
		script: redis.NewScript(bucketLuaOf(4) + bucketOpLua),
		key:    "{d}ix:o", ref: "{d}z:o", rng: rand.New(rand.NewPCG(3, 4)), ops: map[string]int{}}
	for len(b.members) < 40 {
		b.add()
	}
	if n := b.check(); n < 4 {
		t.Fatalf("%d buckets", n)
	}
	rdb.Del(ctx, b.key, b.ref)
	b.members = nil
	for len(b.members) < 30 {
		b.add()
		b.query()
	}
	b.check()
	keys, err := rdb.Keys(ctx, "{d}ix:o*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sizes, _ := rdb.HLen(ctx, b.key+bucketSep+"n").Result()
	if int64(len(keys)) != sizes { // the directory and sizes, a bucket per size but "#" and "+"
		t.Fatalf("%d keys for %d buckets: old ones left", len(keys), sizes-2)
	}
}

// BenchmarkBucketOrderSteps converts an order of 100,000 members
// (hostname members, as the registry's keyHost) in one step, the
// baseline, and in BucketOrder's steps of bucketOrderStep buckets: the
// longest a script held Redis (the slow log's time of its longest
// call) and the whole conversion's time.
func BenchmarkBucketOrderSteps(b *testing.B) {
	rdb := testenv.Redis(b).Client(b)
	ctx := context.Background()
	const n = 100000
	rng := rand.New(rand.NewPCG(5, 6))
	src := "{bo}src"
	for i := 0; i < n; i += 1000 {
		var zs []redis.Z
		for j := i; j < min(n, i+1000); j++ {
			zs = append(zs, redis.Z{Member: fmt.Sprintf("www%d.shop%d.example 00443 %016x", rng.IntN(1e6), j%37, rng.Uint64())})
		}
		if err := rdb.ZAdd(ctx, src, zs...).Err(); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		step int
	}{{"one_step", 1 << 30}, {"steps", bucketOrderStep}} {
		b.Run(c.name, func(b *testing.B) {
			var longest time.Duration
			for range b.N {
				b.StopTimer()
				key := "{bo}" + c.name
				if err := rdb.Copy(ctx, src, key, 0, true).Err(); err != nil {
					b.Fatal(err)
				}
				rdb.ConfigSet(ctx, "slowlog-log-slower-than", "0")
				rdb.SlowLogReset(ctx)
				b.StartTimer()
				for {
					r, err := bucketOrderScript.Run(ctx, rdb, []string{key}, "0", bucketFill(), c.step).Int64Slice()
					if err != nil {
						b.Fatal(err)
					}
					if r[0] == 0 {
						break
					}
				}
				b.StopTimer()
				logs, err := rdb.SlowLogGet(ctx, -1).Result()
				if err != nil {
					b.Fatal(err)
				}
				for _, l := range logs {
					if len(l.Args) > 0 && strings.EqualFold(l.Args[0], "evalsha") && l.Duration > longest {
						longest = l.Duration
					}
				}
				rdb.ConfigSet(ctx, "slowlog-log-slower-than", "10000")
				if err := dropOrder(ctx, rdb, key); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(longest.Microseconds())/1000, "ms-longest-step")
		})
	}
}
