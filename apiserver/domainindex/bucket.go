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
// An order is a plain zset while it holds at most bucketCap members (a
// listpack already, and no key more); the add past that rewrites it as
// two buckets (ob_convert), and it stays bucketed until emptied, plain
// again from its next add: every ob_* function reads either form (K
// without K + "\x01n" is plain). A bucket past bucketCap splits at its
// median in the same script; one emptied is deleted (the first's range
// passes to the next). Scores must
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
//	ob_del(K)                        DEL, with its buckets
//	ob_fill(K, scored)               K written plain in bulk (ZADD, ZINTERSTORE): bucketed when past the capacity
//	ob_card(K)                       ZCARD
//	ob_count(K, min, max)            ZCOUNT
//	ob_lexcount(K, min, max)         ZLEXCOUNT
//	ob_rank(K, s, m)                 ZRANK (nil when absent)
//	ob_range(K, a, b, withscores)    ZRANGE by rank, a and b as ZRANGE's (negative from the end)
//	ob_byscore(K, min, max, desc, withscores, offset, count)
//	                                 ZRANGEBYSCORE (desc: ZREVRANGEBYSCORE, from max down to min); count -1 for all
//	ob_bylex(K, min, max, desc, offset, count)
//	                                 ZRANGEBYLEX (desc: ZREVRANGEBYLEX)
//	ob_after(K, s, m, incl, desc, count)
//	                                 a scored order's members after the position (s, m) (desc: before it), with their scores
//
// A script keeps what it read of an order's form (ob_plain) and, for
// ranks, its directory and sizes (ob_dir) until it writes the order.
// Only ranks (ob_range, ob_rank) read the whole directory; the others
// find their buckets by position, a few directory entries a call, so
// that a walk goes by position (ob_bylex, ob_after from the last member
// read), not by rank.
func bucketLuaOf(capacity int) string {
	return `
local OB_CAP, OB_SEP, OB_MAXS = ` + strconv.Itoa(capacity) + `, '` + bucketSep + `', 999999999999999
local OB_N, OB_FIRST = OB_SEP .. 'n', '\0\0'
local OB_D = {}
local OB_INF = {['-inf'] = -math.huge, ['+inf'] = math.huge, ['inf'] = math.huge}
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
-- A directory entry ends with its bucket's id, 8 hex digits.
local function ob_id(e) return string.sub(e, -8) end
local function ob_bkey(K, e) return K .. OB_SEP .. string.sub(e, -8) end
-- ob_at: the last directory entry below max (ZREVRANGEBYLEX's bound);
-- nil when the order is empty (the first entry is below every bound).
local function ob_at(K, max) return redis.call('ZREVRANGEBYLEX', K, max, '-', 'LIMIT', 0, 1)[1] end
-- ob_of: the entry of the bucket holding position pos.
local function ob_of(K, pos) return ob_at(K, '[' .. pos .. '\255') end
local function ob_edge(K, last)
  if last then return redis.call('ZRANGE', K, -1, -1)[1] end
  return redis.call('ZRANGE', K, 0, 0)[1]
end
-- ob_iter: the directory's entries from entry e on (down: backwards),
-- read 2, then 4, 8... at a time (a page mostly ends in the next
-- bucket).
local function ob_iter(K, e, down)
  local buf, i, last, k = {e}, 0, e, 1
  return function()
    i = i + 1
    if i > #buf then
      k = math.min(2 * k, 64)
      if down then buf = redis.call('ZREVRANGEBYLEX', K, '(' .. last, '-', 'LIMIT', 0, k)
      else buf = redis.call('ZRANGEBYLEX', K, '(' .. last, '+', 'LIMIT', 0, k) end
      i = 1
      if #buf == 0 then return nil end
    end
    last = buf[i]
    return last
  end
end
-- ob_dir: K's buckets in order, for ranks: e (entries), n (sizes), cum
-- (members before each), total; nil when K holds none. Kept until the
-- script writes K.
local function ob_dir(K)
  local D = OB_D[K]
  if D then return D end
  local es = redis.call('ZRANGE', K, 0, -1)
  if #es == 0 then return nil end
  local kv, size = redis.call('HGETALL', K .. OB_N), {}
  for i = 1, #kv, 2 do size[kv[i]] = tonumber(kv[i + 1]) end
  D = {e = es, n = {}, cum = {}, total = 0}
  for i, e in ipairs(es) do
    D.n[i], D.cum[i] = size[ob_id(e)] or 0, D.total
    D.total = D.total + D.n[i]
  end
  OB_D[K] = D
  return D
end
-- ob_plain: is K a plain sorted set (or nothing)? An order is plain up
-- to OB_CAP members, as a listpack keeps them; past that ob_add makes it
-- bucketed (ob_convert), and it stays so until emptied. Kept until the
-- script writes K.
local OB_P = {}
-- ob_unbucket deletes K's sizes and buckets (not K).
local function ob_unbucket(K)
  local kv, keys = redis.call('HGETALL', K .. OB_N), {K .. OB_N}
  for i = 1, #kv, 2 do
    if #kv[i] == 8 then keys[#keys + 1] = K .. OB_SEP .. kv[i] end
  end
  for i = 1, #keys, 500 do redis.call('DEL', unpack(keys, i, math.min(#keys, i + 499))) end
end
local function ob_plain(K)
  local p = OB_P[K]
  if p == nil then
    p = redis.call('EXISTS', K .. OB_N) == 0
    if not p and redis.call('EXISTS', K) == 0 then
      -- Sizes without a directory: the order was deleted by its key
      -- alone (a DEL from outside); its buckets and sizes go too, and it
      -- starts again plain.
      ob_unbucket(K)
      p = true
    end
    OB_P[K] = p
  end
  return p
end
-- ob_zargs: ZADD's arguments (score, member, ...) for the pairs a to b
-- (1-based, inclusive) of a WITHSCORES reply (member, score, ...).
local function ob_zargs(got, a, b)
  local args = {}
  for i = 2 * a - 1, 2 * b - 1, 2 do
    args[#args + 1] = got[i + 1]
    args[#args + 1] = got[i]
  end
  return args
end
-- ob_start makes the plain sorted set K a bucketed order of one bucket,
-- itself (a RENAME, whatever its size), marked as the bucket being split
-- ('~' in the sizes), which ob_peel splits; every ob_* function reads
-- and writes the order meanwhile, as any bucketed order (ob_add leaves
-- the marked bucket's size to ob_peel).
local function ob_start(K)
  local n, id = redis.call('ZCARD', K), string.format('%08x', 1)
  redis.call('RENAME', K, K .. OB_SEP .. id)
  redis.call('ZADD', K, 0, OB_FIRST .. id)
  redis.call('HSET', K .. OB_N, id, n, '#', n, '+', 1, '~', id)
  OB_P[K], OB_D[K] = false, nil
end
-- ob_peel moves up to S buckets of F members each off the top of K's
-- bucket being split ('~') into buckets of their own; once it holds at
-- most F, it is written afresh (a zset once past the listpack's limit
-- stays a skiplist however small it gets) and the split is over.
-- Returns how many members past F it still holds (0: over).
local function ob_peel(K, scored, F, S)
  local id = redis.call('HGET', K .. OB_N, '~')
  if not id then return 0 end
  local B = K .. OB_SEP .. id
  OB_D[K] = nil
  if not redis.call('HGET', K .. OB_N, id) then
    -- Emptied by removals meanwhile (ob_rem deleted it).
    redis.call('HDEL', K .. OB_N, '~')
    return 0
  end
  local n = redis.call('ZCARD', B)
  for _ = 1, S do
    if n <= F then break end
    local got = redis.call('ZRANGE', B, -F, -1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', B, -F, -1)
    local nid = string.format('%08x', redis.call('HINCRBY', K .. OB_N, '+', 1))
    redis.call('ZADD', K .. OB_SEP .. nid, unpack(ob_zargs(got, 1, #got / 2)))
    local lo
    if scored then lo = ob_pos(tonumber(got[2]), got[1]) else lo = ob_pos(nil, got[1]) end
    redis.call('ZADD', K, 0, lo .. nid)
    n = n - #got / 2
    redis.call('HSET', K .. OB_N, nid, #got / 2, id, n)
  end
  if n > F then return n - F end
  local got = redis.call('ZRANGE', B, 0, -1, 'WITHSCORES')
  redis.call('DEL', B)
  redis.call('ZADD', B, unpack(ob_zargs(got, 1, #got / 2)))
  redis.call('HDEL', K .. OB_N, '~')
  return 0
end
-- ob_convert rewrites the plain sorted set K as a bucketed order of F
-- members a bucket (scored: by score and member; else by member), in
-- one step: ob_start and every ob_peel.
local function ob_convert(K, scored, F)
  ob_start(K)
  ob_peel(K, scored, F, math.huge)
end
-- ob_fill makes the plain sorted set K, written in bulk (ZADD), an order
-- again: bucketed when past OB_CAP, three quarters full.
local function ob_fill(K, scored)
  OB_P[K], OB_D[K] = nil, nil
  if ob_plain(K) and redis.call('ZCARD', K) > OB_CAP then ob_convert(K, scored, math.max(1, math.floor(OB_CAP * 3 / 4))) end
end
-- ob_split splits bucket B (id), of n members, at its median: both
-- halves written afresh, as a zset once past the listpack's limit stays
-- a skiplist however small it gets. Returns the new bucket's id and its
-- first member and score.
local function ob_split(K, B, id, n)
  local h = math.floor(n / 2)
  local got = redis.call('ZRANGE', B, 0, -1, 'WITHSCORES')
  local nid = string.format('%08x', redis.call('HINCRBY', K .. OB_N, '+', 1))
  redis.call('DEL', B)
  redis.call('ZADD', B, unpack(ob_zargs(got, 1, h)))
  redis.call('ZADD', K .. OB_SEP .. nid, unpack(ob_zargs(got, h + 1, #got / 2)))
  redis.call('HSET', K .. OB_N, id, h, nid, n - h)
  return nid, got[2 * h + 1], got[2 * h + 2]
end
local function ob_add(K, s, m)
  if ob_plain(K) then
    if redis.call('ZADD', K, s or 0, m) == 0 then return 0 end
    local n = redis.call('ZCARD', K)
    if n > OB_CAP then ob_convert(K, s ~= nil, math.ceil(n / 2)) end
    return 1
  end
  local e = ob_of(K, ob_pos(s, m))
  local id
  if e then id = ob_id(e)
  else
    id = string.format('%08x', redis.call('HINCRBY', K .. OB_N, '+', 1))
    redis.call('ZADD', K, 0, OB_FIRST .. id)
  end
  local B = K .. OB_SEP .. id
  if redis.call('ZADD', B, s or 0, m) == 0 then return 0 end
  OB_D[K] = nil
  redis.call('HINCRBY', K .. OB_N, '#', 1)
  local n = redis.call('HINCRBY', K .. OB_N, id, 1)
  if n > OB_CAP and redis.call('HGET', K .. OB_N, '~') ~= id then
    local nid, lm, ls = ob_split(K, B, id, n)
    local lo
    if s then lo = ob_pos(tonumber(ls), lm) else lo = ob_pos(nil, lm) end
    redis.call('ZADD', K, 0, lo .. nid)
  end
  return 1
end
local function ob_rem(K, s, m)
  if ob_plain(K) then return redis.call('ZREM', K, m) end
  local e = ob_of(K, ob_pos(s, m))
  if not e then return 0 end
  local id = ob_id(e)
  if redis.call('ZREM', K .. OB_SEP .. id, m) == 0 then return 0 end
  OB_D[K] = nil
  local total = redis.call('HINCRBY', K .. OB_N, '#', -1)
  if redis.call('HINCRBY', K .. OB_N, id, -1) > 0 then return 1 end
  if total == 0 then
    redis.call('DEL', K, K .. OB_N)
    OB_P[K] = true
    return 1
  end
  redis.call('ZREM', K, e)
  redis.call('HDEL', K .. OB_N, id)
  if string.sub(e, 1, 2) == OB_FIRST and #e == 10 then
    -- The next bucket is the first now: its range starts below every
    -- position.
    local nx = redis.call('ZRANGE', K, 0, 0)[1]
    redis.call('ZREM', K, nx)
    redis.call('ZADD', K, 0, OB_FIRST .. ob_id(nx))
  end
  return 1
end
-- ob_del deletes the order K, its buckets with it (K unlinked: a big
-- plain order is freed off the script's time).
local function ob_del(K)
  if not ob_plain(K) then ob_unbucket(K) end
  redis.call('UNLINK', K)
  OB_P[K], OB_D[K] = true, nil
end
local function ob_has(K, s, m)
  if ob_plain(K) then return redis.call('ZSCORE', K, m) ~= false end
  local e = ob_of(K, ob_pos(s, m))
  return e ~= nil and redis.call('ZSCORE', ob_bkey(K, e), m) ~= false
end
local function ob_card(K)
  if ob_plain(K) then return redis.call('ZCARD', K) end
  return tonumber(redis.call('HGET', K .. OB_N, '#') or '0')
end
-- ob_sizes: how many members the buckets of entries es hold.
local function ob_sizes(K, es)
  local n = 0
  for i = 1, #es, 500 do
    local ids = {}
    for j = i, math.min(#es, i + 499) do ids[#ids + 1] = ob_id(es[j]) end
    for _, v in ipairs(redis.call('HMGET', K .. OB_N, unpack(ids))) do n = n + (tonumber(v) or 0) end
  end
  return n
end
local function ob_rank(K, s, m)
  if ob_plain(K) then return redis.call('ZRANK', K, m) or nil end
  local e = ob_of(K, ob_pos(s, m))
  if not e then return nil end
  local r = redis.call('ZRANK', ob_bkey(K, e), m)
  if not r then return nil end
  return r + ob_sizes(K, redis.call('ZRANGEBYLEX', K, '-', '(' .. e))
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
local function ob_bound(b)
  local ex = string.sub(b, 1, 1) == '('
  if ex then b = string.sub(b, 2) end
  return OB_INF[b] or tonumber(b), ex
end
-- ob_span: the entries of the first and the last bucket that may hold
-- members in the score range [min, max], each bucket between them
-- holding only members within it (scores are whole); nil when empty.
local function ob_span(K, min, max)
  local lv, lx = ob_bound(min)
  local hv, hx = ob_bound(max)
  if not (lv <= hv) then return nil end
  local first, last
  if lv == -math.huge then first = ob_edge(K, false)
  else
    local lo = math.floor(lv)
    if lx or lo ~= lv then lo = lo + 1 end
    first = ob_at(K, '(' .. ob_enc(lo))
  end
  if hv == math.huge then last = ob_edge(K, true)
  else
    local up = math.floor(hv)
    if not (hx and up == hv) then up = up + 1 end
    last = ob_at(K, '(' .. ob_enc(up))
  end
  if not first or not last then return nil end
  return first, last
end
-- ob_lexspan: the same for the lex range [min, max].
local function ob_lexspan(K, min, max)
  if min == '+' or max == '-' then return nil end
  local first, last
  if min == '-' then first = ob_edge(K, false) else first = ob_of(K, ob_pos(nil, string.sub(min, 2))) end
  if max == '+' then last = ob_edge(K, true) else last = ob_of(K, ob_pos(nil, string.sub(max, 2))) end
  if not first or not last then return nil end
  return first, last
end
-- ob_spancount: the members of a span: the two end buckets counted by
-- cnt, those between by their sizes (none when last comes before
-- first: an empty range).
local function ob_spancount(K, first, last, cnt)
  if first == last then return cnt(ob_bkey(K, first)) end
  return cnt(ob_bkey(K, first)) + cnt(ob_bkey(K, last)) +
    ob_sizes(K, redis.call('ZRANGEBYLEX', K, '(' .. first, '(' .. last))
end
-- ob_later: are there more directory entries after entry e than
-- before it? Then a count from the first bucket to e's (a rank) is the
-- order's size less a count from e's bucket to the last, which reads
-- fewer sizes.
local function ob_later(K, e)
  return redis.call('ZLEXCOUNT', K, '-', '(' .. e) > redis.call('ZLEXCOUNT', K, '(' .. e, '+') + 1
end
local function ob_count(K, min, max)
  min, max = ob_str(min), ob_str(max)
  if ob_plain(K) then return redis.call('ZCOUNT', K, min, max) end
  local first, last = ob_span(K, min, max)
  if not first then return 0 end
  if min == '-inf' and max ~= '+inf' and first ~= last and ob_later(K, last) then
    local v, ex = ob_bound(max)
    local c = '(' .. max
    if ex then c = string.sub(max, 2) end
    return ob_card(K) - ob_count(K, c, '+inf')
  end
  return ob_spancount(K, first, last, function(key) return redis.call('ZCOUNT', key, min, max) end)
end
local function ob_lexcount(K, min, max)
  if ob_plain(K) then return redis.call('ZLEXCOUNT', K, min, max) end
  local first, last = ob_lexspan(K, min, max)
  if not first then return 0 end
  if min == '-' and max ~= '+' and first ~= last and ob_later(K, last) then
    local c = '(' .. string.sub(max, 2)
    if string.sub(max, 1, 1) == '(' then c = '[' .. string.sub(max, 2) end
    return ob_card(K) - ob_lexcount(K, c, '+')
  end
  return ob_spancount(K, first, last, function(key) return redis.call('ZLEXCOUNT', key, min, max) end)
end
-- ob_range: ZRANGE by rank. A range within some 16 buckets of either
-- end walks the directory from that end, a few entries at a time,
-- reading their sizes (a first or a last page reads a few buckets,
-- whatever the order's size); else, or when the script read it before,
-- it finds the buckets by the directory and all sizes (ob_dir).
local function ob_range(K, a, b, withscores)
  if ob_plain(K) then
    if withscores then return redis.call('ZRANGE', K, a, b, 'WITHSCORES') end
    return redis.call('ZRANGE', K, a, b)
  end
  local out = {}
  local N = ob_card(K)
  if a < 0 then a = N + a end
  if b < 0 then b = N + b end
  a, b = math.max(a, 0), math.min(b, N - 1)
  if a > b then return out end
  local function read(e, x, y)
    if x > y then return end
    local got
    if withscores then got = redis.call('ZRANGE', ob_bkey(K, e), x, y, 'WITHSCORES')
    else got = redis.call('ZRANGE', ob_bkey(K, e), x, y) end
    for _, v in ipairs(got) do out[#out + 1] = v end
  end
  local near = 16 * math.ceil(OB_CAP / 2)
  if not OB_D[K] and a < near then
    local cum = 0
    for e in ob_iter(K, ob_edge(K, false), false) do
      local n = tonumber(redis.call('HGET', K .. OB_N, ob_id(e))) or 0
      if cum + n > a then read(e, math.max(0, a - cum), math.min(n - 1, b - cum)) end
      cum = cum + n
      if cum > b then break end
    end
    return out
  end
  if not OB_D[K] and N - 1 - b < near then
    -- From the last bucket down (start: the rank of a bucket's first
    -- member), read upwards.
    local parts, after = {}, 0
    for e in ob_iter(K, ob_edge(K, true), true) do
      local n = tonumber(redis.call('HGET', K .. OB_N, ob_id(e))) or 0
      local start = N - after - n
      if start <= b then parts[#parts + 1] = {e, math.max(0, a - start), math.min(n - 1, b - start)} end
      after = after + n
      if start <= a then break end
    end
    for i = #parts, 1, -1 do read(parts[i][1], parts[i][2], parts[i][3]) end
    return out
  end
  local D = ob_dir(K)
  if not D then return out end
  -- The bucket holding rank a, by halving over cum.
  local lo, hi = 1, #D.e
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if D.cum[mid] <= a then lo = mid else hi = mid - 1 end
  end
  for i = lo, #D.e do
    if D.cum[i] > b then break end
    read(D.e[i], math.max(0, a - D.cum[i]), math.min(D.n[i] - 1, b - D.cum[i]))
  end
  return out
end
-- ob_walk reads the buckets from entry first to entry last (down:
-- backwards) with read(key, offset, count) (a bucket's range, from
-- offset, count -1 for all) and cnt(key) (how many of the bucket's lie
-- in the range), step reply values a member (2 with scores), until
-- count members past offset are read.
local function ob_walk(K, first, last, down, step, offset, count, read, cnt)
  local out = {}
  for e in ob_iter(K, first, down) do
    if count ~= -1 and #out >= count * step then break end
    local key = ob_bkey(K, e)
    local c = nil
    if offset > 0 then c = cnt(key) end
    if c and c <= offset then offset = offset - c
    else
      local want = -1
      if count ~= -1 then want = count - #out / step end
      for _, v in ipairs(read(key, offset, want)) do out[#out + 1] = v end
      offset = 0
    end
    if e == last then break end
  end
  return out
end
local function ob_byscore(K, min, max, desc, withscores, offset, count)
  min, max = ob_str(min), ob_str(max)
  if ob_plain(K) then
    local cmd, a, b = 'ZRANGEBYSCORE', min, max
    if desc then cmd, a, b = 'ZREVRANGEBYSCORE', max, min end
    if withscores then return redis.call(cmd, K, a, b, 'WITHSCORES', 'LIMIT', offset or 0, count or -1) end
    return redis.call(cmd, K, a, b, 'LIMIT', offset or 0, count or -1)
  end
  local first, last = ob_span(K, min, max)
  if not first then return {} end
  -- Bounds that meet (an empty range) may find the last bucket before
  -- the first; an infinite bound cannot.
  if first ~= last and ob_bound(min) ~= -math.huge and ob_bound(max) ~= math.huge and
      redis.call('ZLEXCOUNT', K, '[' .. first, '[' .. last) == 0 then return {} end
  local step, ws = 1, nil
  if withscores then step, ws = 2, 'WITHSCORES' end
  local cmd, a, b = 'ZRANGEBYSCORE', min, max
  if desc then first, last, cmd, a, b = last, first, 'ZREVRANGEBYSCORE', max, min end
  local function read(key, o, c)
    if ws then return redis.call(cmd, key, a, b, ws, 'LIMIT', o, c) end
    return redis.call(cmd, key, a, b, 'LIMIT', o, c)
  end
  local function cnt(key) return redis.call('ZCOUNT', key, min, max) end
  return ob_walk(K, first, last, desc, step, offset or 0, count or -1, read, cnt)
end
-- ob_lb: in the plain sorted set Z, the rank of the first member at or
-- after the position (s, m) in ascending order, and whether m is there
-- at score s; m nil: the first member of score s or above. Ties at s
-- are read a chunk at a time (members of one score sort by member).
local function ob_lb(Z, s, m)
  if m then
    local r = redis.call('ZRANK', Z, m)
    if r and tonumber(redis.call('ZSCORE', Z, m)) == s then return r, true end
  end
  local n = redis.call('ZCOUNT', Z, '-inf', '(' .. ob_str(s))
  if not m then return n, false end
  while true do
    local got = redis.call('ZRANGE', Z, n, n + 255, 'WITHSCORES')
    if #got == 0 then return n, false end
    for i = 1, #got, 2 do
      if tonumber(got[i + 1]) ~= s or got[i] > m then return n, false end
      n = n + 1
    end
  end
end
-- ob_after: up to count members of the scored order K, with their scores
-- ({member, score, ...}), in ascending order after the position (s, m),
-- or (desc) in descending order before it; incl: the position's member
-- itself too, when there. m nil: from the score s on (desc: from s
-- down), every member of score s included. A walk reads its next chunk
-- after the last member read: the buckets it crosses and a few
-- directory entries, not the sizes a rank needs.
local function ob_after(K, s, m, incl, desc, count)
  local out = {}
  -- from: Z's members from its member of rank r on (desc: from rank r
  -- down), while the chunk has room.
  local function from(Z, r)
    local want = count - #out / 2
    if want <= 0 then return end
    local got
    if desc then
      if r < 0 then return end
      got = redis.call('ZRANGE', Z, math.max(0, r - want + 1), r, 'WITHSCORES')
      for i = #got - 1, 1, -2 do out[#out + 1] = got[i]; out[#out + 1] = got[i + 1] end
    else
      got = redis.call('ZRANGE', Z, r, r + want - 1, 'WITHSCORES')
      if #out == 0 then out = got
      else for _, v in ipairs(got) do out[#out + 1] = v end end
    end
  end
  -- start: the rank in Z to read from (desc: down from).
  local function start(Z)
    if desc and not m then return redis.call('ZCOUNT', Z, '-inf', ob_str(s)) - 1 end
    local r, found = ob_lb(Z, s, m)
    if desc then
      if found and incl then return r end
      return r - 1
    end
    if found and not incl then return r + 1 end
    return r
  end
  if ob_plain(K) then
    from(K, start(K))
    return out
  end
  local e
  if desc and not m then e = ob_at(K, '(' .. ob_enc(s + 1)) else e = ob_of(K, ob_pos(s, m or '')) end
  if not e then return out end
  local first = true
  for x in ob_iter(K, e, desc) do
    if #out / 2 >= count then break end
    local Z = ob_bkey(K, x)
    if first then from(Z, start(Z)); first = false
    elseif desc then from(Z, -1 + redis.call('ZCARD', Z))
    else from(Z, 0) end
  end
  return out
end
local function ob_bylex(K, min, max, desc, offset, count)
  if ob_plain(K) then
    if desc then return redis.call('ZREVRANGEBYLEX', K, max, min, 'LIMIT', offset or 0, count or -1) end
    return redis.call('ZRANGEBYLEX', K, min, max, 'LIMIT', offset or 0, count or -1)
  end
  local first, last = ob_lexspan(K, min, max)
  if not first then return {} end
  if first ~= last and min ~= '-' and max ~= '+' and redis.call('ZLEXCOUNT', K, '[' .. first, '[' .. last) == 0 then return {} end
  local cmd, a, b = 'ZRANGEBYLEX', min, max
  if desc then first, last, cmd, a, b = last, first, 'ZREVRANGEBYLEX', max, min end
  local function read(key, o, c) return redis.call(cmd, key, a, b, 'LIMIT', o, c) end
  local function cnt(key) return redis.call('ZLEXCOUNT', key, min, max) end
  return ob_walk(K, first, last, desc, 1, offset or 0, count or -1, read, cnt)
end
`
}

// bucketOrderLua takes a step of rewriting the plain sorted set KEYS[1]
// as a bucketed order of the same members (ARGV[1] "1": score-ordered,
// else lex-ordered, every score 0), ARGV[2] members a bucket: the first
// step makes the set the order's one bucket (ob_start, O(1)), and each
// step, the first too, moves ARGV[3] buckets off it (ob_peel). Returns
// {members left to move (0: done), the order's buckets}; {0, 0} when the
// key is no plain sorted set past the capacity and no order being
// split (missing, bucketed already, or small: an order of at most
// bucketCap members is plain).
const bucketOrderLua = `
local K, scored, F, S = KEYS[1], ARGV[1] == '1', tonumber(ARGV[2]), tonumber(ARGV[3])
if ob_plain(K) then
  if redis.call('TYPE', K).ok ~= 'zset' or redis.call('ZCARD', K) <= OB_CAP then return {0, 0} end
  ob_start(K)
elseif not redis.call('HGET', K .. OB_N, '~') then return {0, 0} end
return {ob_peel(K, scored, F, S), redis.call('ZCARD', K)}
`

var bucketOrderScript = redis.NewScript(bucketLua + bucketOrderLua)

// bucketFill is how many members BucketOrder puts in a bucket: three
// quarters of bucketCap, so that the next adds split none at once.
func bucketFill() int { return max(1, bucketCap*3/4) }

// bucketOrderStep is how many buckets a step of BucketOrder writes:
// some 1,500 members, about a millisecond inside Redis.
const bucketOrderStep = 16

// BucketOrder rewrites the plain sorted set key (in a tenant's index:
// its slot's) as a bucketed order of the same members, bucketFill to a
// bucket; scored tells a score-ordered order from a lex-ordered one
// (every score 0, ordered by member). It returns the order's buckets, 0
// when key is missing, bucketed already or of at most bucketCap members
// (which an order keeps plain). It goes in steps of bucketOrderStep
// buckets, so that no step holds Redis for long (one step took 300 ms
// at 100,000 members); between steps the order is a bucketed one whose
// first bucket is still big, which the scripts read and write as any
// (bucketLua's ob_start). A conversion cut short (the process stopped)
// is taken on by the next call for the key, as the next rebuild's.
func BucketOrder(ctx context.Context, rdb redis.UniversalClient, key string, scored bool) (int, error) {
	for {
		r, err := bucketOrderScript.Run(ctx, rdb, []string{key}, flag(scored), bucketFill(), bucketOrderStep).Int64Slice()
		if err != nil {
			return 0, fmt.Errorf("bucket order %s: %w", key, err)
		}
		if len(r) != 2 {
			return 0, fmt.Errorf("bucket order %s: got %d values, want 2", key, len(r))
		}
		if r[0] == 0 {
			return int(r[1]), nil
		}
	}
}
