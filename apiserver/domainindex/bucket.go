package domainindex

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// A bucketed order is a sorted set kept as buckets of at most bucketCap
// members, so that under Redis's defaults (zset-max-listpack-entries
// 128) each stays a listpack, about 1 B of overhead per member against
// the 110-140 B of a skiplist zset's entry past 128 (docs/scaling.md,
// "Tenants of 1,000 and more"). Its keys, for an order named K (all in
// K's hash tag, so one slot):
//
//   - K: the directory, a zset, every member at score 0, one per bucket:
//     the bucket's lower end as a position (bucketLua's ob_pos: the
//     score in 16 sortable characters, then the member escaped so that
//     no position is a prefix of another), then the bucket's id in
//     digits; the first bucket's lower end is empty (below every
//     position). A bucket holds the members from its lower end up to
//     the next bucket's, so a member's bucket follows from its score and
//     itself (a score-ordered order) or itself (a lex-ordered one, every
//     score 0): the last directory entry at or below its position, one
//     ZREVRANGEBYLEX. No map from member to bucket.
//   - K + "\x01n": hash, per bucket id its size, "#" the order's size and
//     "+" the last id given: the ranks (a page by offset, the counts).
//   - K + "\x01" + id: a bucket, a plain zset of the members with their
//     scores, as the unbucketed order held them.
//
// A bucket past bucketCap splits at its median in the same script; one
// emptied is deleted (the first's range passes to the next). Scores must
// be whole numbers within ±10^15 (ms: every score of the index is), as
// the directory orders them by their 16 characters.
//
// bucketSep joins K and a bucket's id: a byte no tag holds
// (accounts.CheckTags refuses control characters), so no order's keys
// meet another's.
const bucketSep = "\x01"

// bucketCap is the most members a bucket holds: 128, Redis's default
// zset-max-listpack-entries. CERTFLEET_INDEX_BUCKET_CAP sets another
// (at least 2), for the tests that run the index's scripts with many
// splits (a test process only: the layout holds no capacity, an index
// written with one is read and kept with any other).
var bucketCap = bucketCapFromEnv()

func bucketCapFromEnv() int {
	if n, err := strconv.Atoi(os.Getenv("CERTFLEET_INDEX_BUCKET_CAP")); err == nil && n >= 2 {
		return n
	}
	return 128
}

// bucketLua is bucketLuaOf(bucketCap).
var bucketLua = bucketLuaOf(bucketCap)

// bucketLuaOf defines, for the scripts that read or write a bucketed
// order (K its directory's key; s a score, nil in a lex order; bounds
// as ZCOUNT's and ZRANGEBYLEX's), with buckets of at most capacity
// members:
//
//	ob_add(K, s, m)                  ZADD: 1 when added (a member moving to another score: ob_rem at its old score first)
//	ob_rem(K, s, m)                  ZREM of m at score s: 1 when removed
//	ob_has(K, s, m)                  is m there (at score s)?
//	ob_card(K)                       ZCARD
//	ob_count(K, min, max)            ZCOUNT
//	ob_lexcount(K, min, max)         ZLEXCOUNT
//	ob_rank(K, s, m)                 ZRANK (nil when absent)
//	ob_range(K, a, b, withscores)    ZRANGE by rank, a and b as ZRANGE's (negative from the end)
//	ob_byscore(K, min, max, desc, withscores, offset, count)
//	                                 ZRANGEBYSCORE (desc: ZREVRANGEBYSCORE, from max down to min); count -1 for all
//	ob_bylex(K, min, max, desc, offset, count)
//	                                 ZRANGEBYLEX (desc: ZREVRANGEBYLEX)
//
// A script keeps each order's directory and sizes it read (ob_dir) until
// it writes the order.
func bucketLuaOf(capacity int) string {
	return `
local OB_CAP, OB_SEP, OB_MAXS = ` + strconv.Itoa(capacity) + `, '` + bucketSep + `', 999999999999999
local OB_N, OB_FIRST = OB_SEP .. 'n', '\0\0'
local OB_D = {}
-- ob_enc: 16 characters that sort as the whole score s does.
local function ob_enc(s)
  s = math.floor(s)
  if s >= 0 then return '1' .. string.format('%015d', math.min(s, OB_MAXS)) end
  return '0' .. string.format('%015d', math.max(s, -OB_MAXS) + OB_MAXS + 1)
end
-- ob_pos: the position of (s, m): the score's characters, then m with
-- each NUL as NUL 1 and NUL NUL after it, so that positions sort as
-- (s, m) do and none is a prefix of another.
local function ob_pos(s, m)
  local e = (string.gsub(m, '%z', '\0\1')) .. '\0\0'
  if s then return ob_enc(s) .. e end
  return e
end
local function ob_id(e) return string.match(e, '%z%z(%d+)$') end
-- ob_dir: K's buckets in order: e (directory entries), id, n (sizes),
-- cum (members before each), at (index by entry), total; nil when K
-- holds none.
local function ob_dir(K)
  local D = OB_D[K]
  if D then return D end
  local es = redis.call('ZRANGE', K, 0, -1)
  if #es == 0 then return nil end
  D = {e = es, id = {}, n = {}, cum = {}, at = {}, total = 0}
  for i, e in ipairs(es) do
    D.id[i] = ob_id(e)
    D.at[e] = i
  end
  local sz = {}
  for i = 1, #es, 500 do
    local r = redis.call('HMGET', K .. OB_N, unpack(D.id, i, math.min(#es, i + 499)))
    for _, v in ipairs(r) do sz[#sz + 1] = tonumber(v) or 0 end
  end
  for i = 1, #es do
    D.n[i], D.cum[i] = sz[i], D.total
    D.total = D.total + sz[i]
  end
  OB_D[K] = D
  return D
end
local function ob_key(K, D, i) return K .. OB_SEP .. D.id[i] end
-- ob_last: the index in D of the last bucket whose entry is below max
-- (ZREVRANGEBYLEX's bound), 1 when none is.
local function ob_last(K, D, max)
  local e = redis.call('ZREVRANGEBYLEX', K, max, '-', 'LIMIT', 0, 1)[1]
  return (e and D.at[e]) or 1
end
-- ob_of: the bucket of position pos.
local function ob_of(K, D, pos) return ob_last(K, D, '[' .. pos .. '\255') end
local function ob_split(K, B, id, n)
  local h = math.floor(n / 2)
  local got = redis.call('ZRANGE', B, h, -1, 'WITHSCORES')
  local nid = redis.call('HINCRBY', K .. OB_N, '+', 1)
  local args = {}
  for i = 1, #got, 2 do
    args[#args + 1] = got[i + 1]
    args[#args + 1] = got[i]
  end
  redis.call('ZADD', K .. OB_SEP .. nid, unpack(args))
  redis.call('ZREMRANGEBYRANK', B, h, -1)
  redis.call('HSET', K .. OB_N, id, h, nid, n - h)
  return nid, got[1], got[2]
end
local function ob_add(K, s, m)
  local D = ob_dir(K)
  local id
  if not D then
    id = redis.call('HINCRBY', K .. OB_N, '+', 1)
    redis.call('ZADD', K, 0, OB_FIRST .. id)
  else
    id = D.id[ob_of(K, D, ob_pos(s, m))]
  end
  local B = K .. OB_SEP .. id
  if redis.call('ZADD', B, s or 0, m) == 0 then return 0 end
  OB_D[K] = nil
  redis.call('HINCRBY', K .. OB_N, '#', 1)
  local n = redis.call('HINCRBY', K .. OB_N, id, 1)
  if n > OB_CAP then
    local nid, lm, ls = ob_split(K, B, id, n)
    local lo
    if s then lo = ob_pos(tonumber(ls), lm) else lo = ob_pos(nil, lm) end
    redis.call('ZADD', K, 0, lo .. nid)
  end
  return 1
end
local function ob_rem(K, s, m)
  local D = ob_dir(K)
  if not D then return 0 end
  local i = ob_of(K, D, ob_pos(s, m))
  local id, e = D.id[i], D.e[i]
  if redis.call('ZREM', K .. OB_SEP .. id, m) == 0 then return 0 end
  OB_D[K] = nil
  local total = redis.call('HINCRBY', K .. OB_N, '#', -1)
  if redis.call('HINCRBY', K .. OB_N, id, -1) > 0 then return 1 end
  if total == 0 then
    redis.call('DEL', K, K .. OB_N)
    return 1
  end
  redis.call('ZREM', K, e)
  redis.call('HDEL', K .. OB_N, id)
  if i == 1 then
    -- The next bucket is the first now: its range starts below every
    -- position.
    local nx = D.e[2]
    redis.call('ZREM', K, nx)
    redis.call('ZADD', K, 0, OB_FIRST .. D.id[2])
  end
  return 1
end
local function ob_has(K, s, m)
  local D = ob_dir(K)
  if not D then return false end
  return redis.call('ZSCORE', ob_key(K, D, ob_of(K, D, ob_pos(s, m))), m) ~= false
end
local function ob_card(K)
  local D = ob_dir(K)
  if not D then return 0 end
  return D.total
end
local function ob_rank(K, s, m)
  local D = ob_dir(K)
  if not D then return nil end
  local i = ob_of(K, D, ob_pos(s, m))
  local r = redis.call('ZRANK', ob_key(K, D, i), m)
  if r then return D.cum[i] + r end
  return nil
end
-- ob_str: a score bound as Redis reads it (a number's digits in
-- full: Lua's tostring keeps 14).
local function ob_str(b)
  if type(b) ~= 'number' then return b end
  if b == math.huge then return '+inf' elseif b == -math.huge then return '-inf' end
  if b == math.floor(b) and math.abs(b) < 1e17 then return string.format('%d', b) end
  return string.format('%.17g', b)
end
-- ob_bound: a score bound's number and whether it excludes it.
local OB_INF = {['-inf'] = -math.huge, ['+inf'] = math.huge, ['inf'] = math.huge}
local function ob_bound(b)
  local ex = string.sub(b, 1, 1) == '('
  if ex then b = string.sub(b, 2) end
  return OB_INF[b] or tonumber(b), ex
end
-- ob_below: how many members lie in [-inf, max] (max as ZCOUNT's): the
-- bucket holding the first score past max's, and those before it.
local function ob_below(K, D, max)
  local v, ex = ob_bound(max)
  if v == -math.huge then return 0 end
  if v == math.huge then return D.total end
  local up = math.floor(v)
  if not (ex and up == v) then up = up + 1 end
  local i = ob_last(K, D, '(' .. ob_enc(up))
  return D.cum[i] + redis.call('ZCOUNT', ob_key(K, D, i), '-inf', max)
end
local function ob_count(K, min, max)
  local D = ob_dir(K)
  if not D then return 0 end
  min, max = ob_str(min), ob_str(max)
  local v, ex = ob_bound(min)
  local lo = 0
  if v ~= -math.huge then
    local c = '(' .. min
    if ex then c = string.sub(min, 2) end
    lo = ob_below(K, D, c)
  end
  return math.max(0, ob_below(K, D, max) - lo)
end
-- ob_lexbucket: the bucket holding lex bound b's member ('-': the
-- first, '+': the last).
local function ob_lexbucket(K, D, b)
  if b == '-' then return 1 end
  if b == '+' then return #D.e end
  return ob_of(K, D, ob_pos(nil, string.sub(b, 2)))
end
local function ob_lexbelow(K, D, max)
  if max == '+' then return D.total end
  if max == '-' then return 0 end
  local i = ob_lexbucket(K, D, max)
  return D.cum[i] + redis.call('ZLEXCOUNT', ob_key(K, D, i), '-', max)
end
local function ob_lexcount(K, min, max)
  local D = ob_dir(K)
  if not D or min == '+' or max == '-' then return 0 end
  local lo = 0
  if min ~= '-' then
    local c = '(' .. string.sub(min, 2)
    if string.sub(min, 1, 1) == '(' then c = '[' .. string.sub(min, 2) end
    lo = ob_lexbelow(K, D, c)
  end
  return math.max(0, ob_lexbelow(K, D, max) - lo)
end
local function ob_range(K, a, b, withscores)
  local out = {}
  local D = ob_dir(K)
  if not D then return out end
  local N = D.total
  if a < 0 then a = N + a end
  if b < 0 then b = N + b end
  a, b = math.max(a, 0), math.min(b, N - 1)
  if a > b then return out end
  -- The bucket holding rank a, by halving over cum.
  local lo, hi = 1, #D.e
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if D.cum[mid] <= a then lo = mid else hi = mid - 1 end
  end
  for i = lo, #D.e do
    if D.cum[i] > b then break end
    local x, y = math.max(0, a - D.cum[i]), math.min(D.n[i] - 1, b - D.cum[i])
    if x <= y then
      local got
      if withscores then got = redis.call('ZRANGE', ob_key(K, D, i), x, y, 'WITHSCORES')
      else got = redis.call('ZRANGE', ob_key(K, D, i), x, y) end
      for _, v in ipairs(got) do out[#out + 1] = v end
    end
  end
  return out
end
-- ob_walk reads the buckets from i to j (j below i: downward) with
-- read(key, offset, count) (a bucket's range, from offset, count -1 for
-- all) and cnt(key) (how many of the bucket's lie in the range), each
-- reply's length per member step (2 with scores), until count members
-- are read past offset.
local function ob_walk(K, D, i, j, step, offset, count, read, cnt)
  local out, d = {}, 1
  if j < i then d = -1 end
  for k = i, j, d do
    if count ~= -1 and #out >= count * step then break end
    local key = ob_key(K, D, k)
    local skip = true
    if offset > 0 then
      local c = cnt(key)
      if c <= offset then offset = offset - c else skip = false end
    else skip = false end
    if not skip then
      local want = -1
      if count ~= -1 then want = count - #out / step end
      local got = read(key, offset, want)
      offset = 0
      for _, v in ipairs(got) do out[#out + 1] = v end
    end
  end
  return out
end
local function ob_byscore(K, min, max, desc, withscores, offset, count)
  local D = ob_dir(K)
  if not D then return {} end
  min, max = ob_str(min), ob_str(max)
  local lv, hv = ob_bound(min), ob_bound(max)
  if lv > hv then return {} end
  local i, j = 1, #D.e
  if lv ~= -math.huge then i = ob_last(K, D, '(' .. ob_enc(lv)) end
  if hv ~= math.huge then j = ob_last(K, D, '(' .. ob_enc(math.floor(hv) + 1)) end
  local step, ws = 1, nil
  if withscores then step, ws = 2, 'WITHSCORES' end
  local cmd, a, b = 'ZRANGEBYSCORE', min, max
  if desc then i, j, cmd, a, b = j, i, 'ZREVRANGEBYSCORE', max, min end
  local function read(key, o, c)
    if ws then return redis.call(cmd, key, a, b, ws, 'LIMIT', o, c) end
    return redis.call(cmd, key, a, b, 'LIMIT', o, c)
  end
  local function cnt(key) return redis.call('ZCOUNT', key, min, max) end
  return ob_walk(K, D, i, j, step, offset or 0, count or -1, read, cnt)
end
local function ob_bylex(K, min, max, desc, offset, count)
  local D = ob_dir(K)
  if not D or min == '+' or max == '-' then return {} end
  local i, j = ob_lexbucket(K, D, min), ob_lexbucket(K, D, max)
  local cmd, a, b = 'ZRANGEBYLEX', min, max
  if desc then i, j, cmd, a, b = j, i, 'ZREVRANGEBYLEX', max, min end
  if (not desc and j < i) or (desc and i < j) then return {} end
  local function read(key, o, c) return redis.call(cmd, key, a, b, 'LIMIT', o, c) end
  local function cnt(key) return redis.call('ZLEXCOUNT', key, min, max) end
  return ob_walk(K, D, i, j, 1, offset or 0, count or -1, read, cnt)
end
`
}

// bucketOrderLua rewrites the plain sorted set KEYS[1] as a bucketed
// order of the same members (ARGV[1] "1": score-ordered, else
// lex-ordered, every score 0), ARGV[2] members a bucket, in one step.
// Returns the buckets written; 0 when the key is no plain sorted set
// (missing, or bucketed already).
const bucketOrderLua = `
local K, scored, F = KEYS[1], ARGV[1] == '1', tonumber(ARGV[2])
if redis.call('EXISTS', K .. OB_N) == 1 or redis.call('TYPE', K).ok ~= 'zset' then return 0 end
local tmp = K .. OB_SEP .. 'p'
redis.call('RENAME', K, tmp)
local n, id = redis.call('ZCARD', tmp), 0
for a = 0, n - 1, F do
  local got = redis.call('ZRANGE', tmp, a, a + F - 1, 'WITHSCORES')
  local args = {}
  for i = 1, #got, 2 do
    args[#args + 1] = got[i + 1]
    args[#args + 1] = got[i]
  end
  id = id + 1
  redis.call('ZADD', K .. OB_SEP .. id, unpack(args))
  local lo = OB_FIRST
  if a > 0 then
    if scored then lo = ob_pos(tonumber(got[2]), got[1]) else lo = ob_pos(nil, got[1]) end
  end
  redis.call('ZADD', K, 0, lo .. id)
  redis.call('HSET', K .. OB_N, id, #got / 2)
end
redis.call('HSET', K .. OB_N, '#', n, '+', id)
redis.call('DEL', tmp)
return id
`

var bucketOrderScript = redis.NewScript(bucketLua + bucketOrderLua)

// bucketFill is how many members BucketOrder puts in a bucket: three
// quarters of bucketCap, so that the next adds split none at once.
func bucketFill() int { return max(1, bucketCap*3/4) }

// BucketOrder rewrites the plain sorted set key (in a tenant's index:
// its slot's) as a bucketed order of the same members, bucketFill to a
// bucket; scored tells a score-ordered order from a lex-ordered one
// (every score 0, ordered by member). It returns the buckets written, 0
// when key is missing or bucketed already. One step, which reads the
// whole set: for an index's rebuild and the memory benchmark.
func BucketOrder(ctx context.Context, rdb redis.UniversalClient, key string, scored bool) (int, error) {
	n, err := bucketOrderScript.Run(ctx, rdb, []string{key}, flag(scored), bucketFill()).Int()
	if err != nil {
		return 0, fmt.Errorf("bucket order %s: %w", key, err)
	}
	return n, nil
}
