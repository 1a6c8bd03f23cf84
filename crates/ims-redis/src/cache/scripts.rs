//! The cache's Lua scripts: each check-and-write that must not interleave with another
//! client's (a store against a concurrent invalidation, an epoch made where it went
//! missing, an invalidation's deletes and bumps) runs as one script, atomic in Redis. Every
//! key a script touches is in one slot (the scope's hash tag), so they run on a cluster too.

use std::sync::LazyLock;

use redis::Script;

// Writes the entry only if neither its memberships' epochs nor the generation moved since
// the miss read them, stamped with those epochs (the `@` line: a hit serves it only while
// they are unchanged); records it in each membership's index and trims expired members.
// An epoch missing now refuses the store: it was evicted or expired, and the miss made it
// (`ENSURE_SCRIPT`), so whatever it held cannot be compared. Each epoch and index is kept at
// least as long as the entry.
const STORE_SCRIPT: &str = r"
-- KEYS: entry, generation, then (epoch, index) per membership. ARGV: generation, value,
-- ttl (ms), mode ('exact': no membership's epoch moved; 'after-one': exactly one bump in
-- all, the write's own), then the epochs seen, one per membership.
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
local stamps = {}
local drift = 0
for i = 3, #KEYS, 2 do
  local now = redis.call('GET', KEYS[i])
  if not now then return 0 end
  local seen = ARGV[5 + (i - 3) / 2]
  if ARGV[4] == 'exact' then
    if now ~= seen then return 0 end
  else
    drift = drift + (tonumber(now) or 0) - (tonumber(seen) or 0)
  end
  stamps[#stamps + 1] = now
end
if ARGV[4] == 'after-one' and drift ~= 1 then return 0 end
local ttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], '@' .. table.concat(stamps, ',') .. '\n' .. ARGV[2], 'PX', ttl)
for i = 3, #KEYS do
  if i % 2 == 0 then
    redis.call('ZADD', KEYS[i], now + ttl, KEYS[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  end
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
";

// The generation and the epochs a store will be checked against, making each missing epoch
// (never bumped, expired or evicted) from Redis' clock in microseconds: a value no earlier
// counter of that key reached (it started from an earlier clock reading and counts one per
// invalidation), so an entry stamped before an eviction never matches again. Run by a miss
// only when its `MGET` found an epoch missing. KEYS: generation, then the epochs; ARGV[1]:
// the epochs' TTL (ms).
const ENSURE_SCRIPT: &str = r"
local out = { redis.call('GET', KEYS[1]) or '' }
local made = nil
for i = 2, #KEYS do
  local epoch = redis.call('GET', KEYS[i])
  if not epoch then
    local t = redis.call('TIME')
    made = made or (t[1] .. string.format('%06d', tonumber(t[2])))
    epoch = made
    redis.call('SET', KEYS[i], epoch, 'PX', ARGV[1])
  end
  out[#out + 1] = epoch
end
return out
";

// For each (epoch, index) pair: delete the indexed entries, drop the index, bump the epoch
// (a missing one is made from Redis' clock, as in `ENSURE_SCRIPT`: `INCR` would start it
// again at 1, a value an entry stored before its eviction may carry). ARGV[1]: the epoch's
// TTL (ms). Deleting comes first: a Redis
// full under `noeviction` refuses the epoch's INCR, which ends the script there, but always
// allows deleting. With the epochs bumped first, a full Redis kept every entry of a written
// group and served it stale for its whole TTL (found by a probe); now the entries are gone
// (and no new one can be stored while Redis is full), and the outbox retries until the
// bump goes through.
//
// A group's invalidation also drops the indexes of the key prefixes its entries name
// (`items:list` of `…cache:<org>:items:list:GET:…`): every entry of them is in the group
// and gone, and left behind those indexes kept a member per deleted entry until its expiry
// plus grace, an hour; in a cache Redis, where they have no TTL to evict them by, a flood
// of distinct misses grew them past `maxmemory` and every later store was refused (a
// probe). Their epochs stay: the group's bump already refuses a store begun before.
// ARGV[2], ARGV[3]: the scope's entry and index key bases; ARGV[3 + pair]: '1' when that
// pair is a group's. (Only a group's: an entity tag's or a key prefix's entries are not
// all of their prefix's, whose index must keep the others.)
const INVALIDATE_SCRIPT: &str = r"
local removed = 0
local entries, indexes = ARGV[2], ARGV[3]
for i = 1, #KEYS, 2 do
  local members = redis.call('ZRANGE', KEYS[i + 1], 0, -1)
  for j = 1, #members, 1000 do
    removed = removed + redis.call('UNLINK', unpack(members, j, math.min(j + 999, #members)))
  end
  redis.call('DEL', KEYS[i + 1])
  if ARGV[3 + (i + 1) / 2] == '1' then
    local prefixes = {}
    for _, member in ipairs(members) do
      if string.sub(member, 1, #entries) == entries then
        local rest = string.sub(member, #entries + 1)
        local at = string.find(rest, ':GET:', 1, true)
        if at then prefixes[string.sub(rest, 1, at - 1)] = true end
      end
    end
    for prefix in pairs(prefixes) do
      redis.call('DEL', indexes .. prefix)
    end
  end
end
local made = nil
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCR', KEYS[i])
  else
    local t = redis.call('TIME')
    made = made or (t[1] .. string.format('%06d', tonumber(t[2])))
    redis.call('SET', KEYS[i], made)
  end
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return removed
";

// Hashed once per process (for EVALSHA), not once per request.
pub(super) static STORE: LazyLock<Script> = LazyLock::new(|| Script::new(STORE_SCRIPT));
pub(super) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| Script::new(INVALIDATE_SCRIPT));
pub(super) static ENSURE: LazyLock<Script> = LazyLock::new(|| Script::new(ENSURE_SCRIPT));
