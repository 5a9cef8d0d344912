//! The Lua scripts. Each runs atomically on the Redis node that holds its
//! keys; every key a script touches is passed in `KEYS` (Redis Cluster
//! requires it, and then all of them must share a hash slot).
//!
//! Numbers cross as decimal text. Replies are status words (`ok`,
//! `signedout`, `conflict`, `retry`, `corrupt`, `none`), alone or first in an
//! array, so the Rust side never has to guess.

use std::sync::LazyLock;

use redis::{Cmd, Script, ToRedisArgs};

/// Index entries and meta entries of sessions that ended more than this many
/// seconds ago are pruned (a grace for clocks of instances that lag).
pub(crate) const PRUNE_GRACE_SECS: i64 = 300;

/// The hash field of a partition that holds its version: a byte that no
/// cache key (UTF-8) can be. Partitions written by earlier versions keep it
/// in a key of its own (`ver`), which the scripts still read and fold in
/// on the next write.
const PARTITION_HELPERS: &str = r"
local VF = '\255'
-- The entries of partition hash k (its version field left out).
local function entry_count(k)
  return redis.call('HLEN', k) - redis.call('HEXISTS', k, VF)
end
-- The version of partition hash k, or of the separate key v (earlier versions).
local function version_of(k, v)
  return redis.call('HGET', k, VF) or redis.call('GET', v) or '0'
end
";

/// Shared Lua helpers.
const HELPERS: &str = r"
-- Gives key k at least ttl seconds to live (keys holding several members
-- live as long as their longest-lived member).
local function extend(k, ttl)
  if redis.call('TTL', k) < ttl then redis.call('EXPIRE', k, ttl) end
end
-- A tombstone value's logged_out_at (Unix microseconds) and expiry (Unix
-- seconds), or nil when it does not decode. Values of earlier versions
-- (whole seconds, no `u`) read as the last microsecond of their second.
local function tomb(t)
  local u, lo, ex = string.match(t, '^(u?)(%-?%d+):(%-?%d+)$')
  if not lo then return nil end
  lo = tonumber(lo)
  if u == '' then lo = lo * 1000000 + 999999 end
  return lo, tonumber(ex)
end
-- Whether tombstone value t (or nil) refuses a session created at `created`
-- (Unix microseconds): 'signedout', 'corrupt' or nil.
local function refuses(t, kind, created, now)
  if not t then return nil end
  local lo, ex = tomb(t)
  if not lo then return 'corrupt' end
  if ex <= now then return nil end
  if kind == 'sid' or created <= lo then return 'signedout' end
  return nil
end
-- Adds session `id` (ending at exp) to the index in key k.
local function index_add(k, id, exp, ttl, now)
  redis.call('ZADD', k, exp, id)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now - GRACE)
  extend(k, ttl)
end
-- Records session `id` in the meta sets (count, listing) and prunes a few
-- sessions that ended long ago.
local function meta_add(kexp, kids, id, exp, ttl, now)
  redis.call('ZADD', kexp, exp, id)
  redis.call('ZADD', kids, 0, id)
  extend(kexp, ttl)
  extend(kids, ttl)
  local dead = redis.call('ZRANGEBYSCORE', kexp, '-inf', now - GRACE, 'LIMIT', 0, 32)
  for _, d in ipairs(dead) do
    redis.call('ZREM', kexp, d)
    redis.call('ZREM', kids, d)
  end
end
";

/// A call of one script, built as redis-rs's `ScriptInvocation` is
/// (`key`s and `arg`s in any order) but into two command buffers rather
/// than one allocation per key and argument: the sign-out and the session
/// reads are built on every request.
pub(crate) struct Call<'a> {
    script: &'a Script,
    keys: Cmd,
    args: Cmd,
}

impl<'a> Call<'a> {
    pub(crate) fn new(script: &'a Script) -> Self {
        Self {
            script,
            // Room for a sign-out (6 + 3 per session keys, 15 + 1 per
            // session arguments, an announcement) without growing.
            keys: Cmd::with_capacity(16, 1000),
            args: Cmd::with_capacity(24, 1000),
        }
    }

    pub(crate) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.arg(key);
        self
    }

    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.arg(arg);
        self
    }

    /// `EVALSHA SHA1 NUMKEYS KEY... ARG...`
    pub(crate) fn evalsha(&self) -> Cmd {
        let parts = self.keys.args_iter().chain(self.args.args_iter());
        let size = parts
            .clone()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.len(),
                _ => 0,
            })
            .sum::<usize>();
        let count = self.keys.args_iter().len() + self.args.args_iter().len();
        let mut c = Cmd::with_capacity(3 + count, size + 64);
        c.arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(self.keys.args_iter().len());
        for a in parts {
            if let redis::Arg::Simple(b) = a {
                c.arg(b);
            }
        }
        c
    }

    /// The script, for `SCRIPT LOAD` when the server does not know it.
    pub(crate) fn script(&self) -> &Script {
        self.script
    }
}

fn with_partition_helpers(body: &str) -> Script {
    Script::new(&format!("{PARTITION_HELPERS}\n{body}"))
}

fn with_helpers(body: &str) -> Script {
    Script::new(&format!(
        "local GRACE = {PRUNE_GRACE_SECS}\n{HELPERS}\n{body}"
    ))
}

/// Standalone `put_session`, everything in one step.
///
/// KEYS: session, part, ver, meta expiry, meta ids, then (index, tombstone)
/// per selector, then the session's current index keys.
/// ARGV: now, id, data, exp, ttl, expected idx, new idx, created_at,
/// selector count, current index count, then each selector's kind.
pub(crate) static PUT_SESSION: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r"
local now = tonumber(ARGV[1])
local nsel = tonumber(ARGV[9])
local nold = tonumber(ARGV[10])
if (redis.call('HGET', KEYS[1], 'idx') or '') ~= ARGV[6] then return 'retry' end
local created = tonumber(ARGV[8])
for i = 1, nsel do
  local r = refuses(redis.call('GET', KEYS[5 + 2 * i]), ARGV[10 + i], created, now)
  if r then return r end
end
local id, exp, ttl = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
for j = 1, nold do redis.call('ZREM', KEYS[5 + 2 * nsel + j], id) end
for i = 1, nsel do index_add(KEYS[4 + 2 * i], id, exp, ttl, now) end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'exp', ARGV[4], 'idx', ARGV[7])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
meta_add(KEYS[4], KEYS[5], id, exp, ttl, now)
return 'ok'
",
    )
});

/// Standalone `remove_session`, everything in one step.
///
/// KEYS: session, part, ver, meta expiry, meta ids, then the session's index keys.
/// ARGV: expected idx, id.
pub(crate) static REMOVE_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if (redis.call('HGET', KEYS[1], 'idx') or '') ~= ARGV[1] then return {'retry'} end
local data = redis.call('HGET', KEYS[1], 'data')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for i = 4, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
if data then return {'ok', data} end
return {'none'}
",
    )
});

/// Standalone `get_session`: the session and, in the same step, the
/// tombstone of each selector it is indexed under (the tombstone key is its
/// index key with `:tombstone` for `:index`; see `Keys`). The index keys are
/// those the session's own `idx` field names, written by this store: a
/// standalone server does not require a script's keys to be declared, and a
/// Redis Cluster never runs this script.
///
/// KEYS: session. Reply: empty when absent, else data, exp, idx, then
/// (index key, tombstone value or '') per index key.
pub(crate) static GET_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HMGET', KEYS[1], 'data', 'exp', 'idx')
if not v[1] then return {} end
local r = {v[1], v[2] or '', v[3] or ''}
for k in string.gmatch(v[3] or '', '[^\n]+') do
  local t = string.gsub(k, ':index$', ':tombstone')
  r[#r + 1] = k
  r[#r + 1] = redis.call('GET', t) or ''
end
return r
",
    )
});

/// Standalone sign-out, everything in one step: the replay check, the
/// tombstone, the removal of each selected session (session, partition,
/// version, its entries in every index its `idx` names and in the count
/// sets), the replay record and the invalidation message. Nothing is
/// written unless all of it is.
///
/// The candidates are read before the script (the index's live ids, or for
/// one session its `idx`) and checked again inside: a lookup's index may
/// hold no live id that is not a candidate, a session's `idx` must be
/// unchanged; otherwise the reply is 'retry' and nothing was written. Index
/// keys other than the lookup's are read from each session's `idx` (see
/// [`GET_SESSION`] on undeclared keys).
///
/// KEYS: meta expiry, meta ids, meta tombstones, jti, tombstone, lookup
/// index (the last three repeat KEYS[1] when unused), then (session, part,
/// ver) per candidate.
/// ARGV: now, 'lookup' or 'session', jti flag, jti expiry, jti ttl,
/// tombstone flag, logged_out_at, tombstone expiry, tombstone ttl, tombstone
/// tag, only-if-found flag, expected idx (session mode), channel, payload
/// ('' for none), candidate count, then the candidate ids.
/// Reply: 'replayed' | 'retry' | 'ok' followed by the number of cache
/// entries removed with the live sessions, then those sessions' ids.
pub(crate) static SIGN_OUT: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r"
local now = tonumber(ARGV[1])
local lookup = ARGV[2] == 'lookup'
if ARGV[3] == '1' then
  local seen = tonumber(redis.call('GET', KEYS[4]) or '')
  if seen and seen > now then return {'replayed'} end
end
local n = tonumber(ARGV[15])
if lookup then
  -- Sessions indexed there that the caller did not name: nothing is
  -- written, and the caller tries again with the ids returned.
  local known = {}
  for i = 1, n do known[ARGV[15 + i]] = true end
  local indexed = redis.call('ZRANGEBYSCORE', KEYS[6], '(' .. ARGV[1], '+inf')
  for _, id in ipairs(indexed) do
    if not known[id] then
      local retry = {'retry'}
      for _, x in ipairs(indexed) do retry[#retry + 1] = x end
      return retry
    end
  end
elseif (redis.call('HGET', KEYS[7], 'idx') or '') ~= ARGV[12] then
  return {'retry'}
end
-- The candidates still selected: stored, and (lookup) still indexed there.
local chosen, any_live = {}, false
for i = 1, n do
  local v = redis.call('HMGET', KEYS[4 + 3 * i], 'exp', 'idx')
  local selected = v[2] ~= false and v[2] ~= nil
  if selected and lookup then
    selected = false
    for k in string.gmatch(v[2], '[^\n]+') do
      if k == KEYS[6] then selected = true end
    end
  end
  if selected then
    local live = (tonumber(v[1] or '') or 0) > now
    chosen[#chosen + 1] = {i, v[2], live}
    if live then any_live = true end
  end
end
if ARGV[11] == '1' and not any_live then return {'ok', '0'} end
if ARGV[6] == '1' then
  local old = redis.call('GET', KEYS[5])
  local lo, ex = nil, nil
  if old then lo, ex = tomb(old) end
  if not (lo and ex > now and lo > tonumber(ARGV[7])) then
    redis.call('SET', KEYS[5], 'u' .. ARGV[7] .. ':' .. ARGV[8], 'EX', ARGV[9])
    redis.call('ZADD', KEYS[3], ARGV[8], ARGV[10])
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - GRACE)
    extend(KEYS[3], tonumber(ARGV[9]))
  end
end
local removed, entries = {'ok', 0}, 0
for _, c in ipairs(chosen) do
  local i, idx, live = c[1], c[2], c[3]
  local id = ARGV[15 + i]
  if live then
    -- Its entries: the partition's fields but the version ('\255').
    entries = entries + redis.call('HLEN', KEYS[5 + 3 * i]) - redis.call('HEXISTS', KEYS[5 + 3 * i], '\255')
  end
  redis.call('DEL', KEYS[4 + 3 * i], KEYS[5 + 3 * i], KEYS[6 + 3 * i])
  for k in string.gmatch(idx, '[^\n]+') do redis.call('ZREM', k, id) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if live then removed[#removed + 1] = id end
end
if lookup then
  -- Entries of candidates no longer selected are stale: tidied here.
  for i = 1, n do redis.call('ZREM', KEYS[6], ARGV[15 + i]) end
end
if ARGV[3] == '1' then redis.call('SET', KEYS[4], ARGV[4], 'EX', ARGV[5]) end
if ARGV[14] ~= '' then redis.call('PUBLISH', ARGV[13], ARGV[14]) end
removed[2] = tostring(entries)
return removed
",
    )
});

/// Cluster `put_session`, step 1 (the session's slot): writes the session.
///
/// KEYS: session, part, ver. ARGV: expected idx, data, exp, ttl, new idx.
pub(crate) static SESSION_WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if (redis.call('HGET', KEYS[1], 'idx') or '') ~= ARGV[1] then return 'retry' end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'exp', ARGV[3], 'idx', ARGV[5])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 'ok'
",
    )
});

/// Cluster `put_session`, step 2 (each selector's slot): adds the session to
/// the index, then reads the tombstone.
///
/// KEYS: index, tombstone. ARGV: now, id, exp, ttl, kind, created_at.
pub(crate) static SELECTOR_ADD: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r"
local now = tonumber(ARGV[1])
index_add(KEYS[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now)
return refuses(redis.call('GET', KEYS[2]), ARGV[5], tonumber(ARGV[6]), now) or 'ok'
",
    )
});

/// Cluster `put_session`, step 3 (the meta slot).
///
/// KEYS: meta expiry, meta ids. ARGV: now, id, exp, ttl.
pub(crate) static META_ADD: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r"
meta_add(KEYS[1], KEYS[2], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[1]))
return 'ok'
",
    )
});

/// Cluster `remove_session`, step 1 (the session's slot): the session, its
/// partition and its version go together.
///
/// KEYS: session, part, ver. Reply: data and idx ('' when absent).
pub(crate) static SESSION_REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('HMGET', KEYS[1], 'data', 'idx')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {v[1] or '', v[2] or ''}
",
    )
});

/// `write_partition`: the session check (for session partitions), the
/// version compare-and-set and the write, in one step.
///
/// KEYS: part, ver (earlier versions), and the session for a session partition.
/// ARGV: now, 's' or 'a', expected version or '', removal count, removed
/// cache keys, upsert count, then (cache key, encoded entry) pairs.
pub(crate) static WRITE_PARTITION: LazyLock<Script> = LazyLock::new(|| {
    with_partition_helpers(
        r"
local now = tonumber(ARGV[1])
local session = ARGV[2] == 's'
local ttl = nil
if session then
  local exp = tonumber(redis.call('HGET', KEYS[3], 'exp') or '')
  if not exp or exp <= now then return {'signedout'} end
  ttl = exp - now
end
local ver = tonumber(version_of(KEYS[1], KEYS[2]))
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= ver then
  return {'conflict', string.format('%d', ver)}
end
local i = 4
local nrem = tonumber(ARGV[i])
for j = 1, nrem do redis.call('HDEL', KEYS[1], ARGV[i + j]) end
i = i + nrem + 1
local nup = tonumber(ARGV[i])
for j = 1, nup do redis.call('HSET', KEYS[1], ARGV[i + 2 * j - 1], ARGV[i + 2 * j]) end
local newver = string.format('%d', ver + 1)
redis.call('HSET', KEYS[1], VF, newver)
redis.call('DEL', KEYS[2])
if session then
  redis.call('EXPIRE', KEYS[1], ttl)
else
  -- An app partition lives as long as its latest entry; without a TTL when
  -- an entry never expires (or cannot be read).
  local latest, forever = nil, false
  local all = redis.call('HGETALL', KEYS[1])
  for j = 1, #all, 2 do
    if all[j] ~= VF then
      local e = tonumber(string.match(all[j + 1], '^(%-?%d*):') or '')
      if not e then forever = true elseif not latest or e > latest then latest = e end
    end
  end
  if forever then
    redis.call('PERSIST', KEYS[1])
  elseif latest then
    redis.call('EXPIRE', KEYS[1], string.format('%d', math.max(latest - now, 1)))
  end
end
return {'ok', newver}
",
    )
});

/// `get_partition`: a consistent snapshot of the session's expiry, the
/// version and the entries.
///
/// KEYS: part, ver (earlier versions), and the session for a session partition.
/// ARGV: now, 's' or 'a'. Reply: 'none', or 'ok', version, session expiry
/// ('' for app partitions), then field/value pairs.
pub(crate) static GET_PARTITION: LazyLock<Script> = LazyLock::new(|| {
    with_partition_helpers(
        r"
local sexp = ''
if ARGV[2] == 's' then
  sexp = redis.call('HGET', KEYS[3], 'exp')
  if not sexp or (tonumber(sexp) or 0) <= tonumber(ARGV[1]) then return {'none'} end
end
local all = redis.call('HGETALL', KEYS[1])
local r = {'ok', version_of(KEYS[1], KEYS[2]), sexp}
for i = 1, #all, 2 do
  if all[i] ~= VF then
    r[#r + 1] = all[i]
    r[#r + 1] = all[i + 1]
  end
end
if #r == 3 then return {'none'} end
return r
",
    )
});

/// `partition_version`: the version `get_partition` would report, without
/// reading the entries.
///
/// KEYS: part, ver (earlier versions), and the session for a session partition.
/// ARGV: now, 's' or 'a'. Reply: the version, or nil when `get_partition`
/// would answer none.
pub(crate) static PARTITION_VERSION: LazyLock<Script> = LazyLock::new(|| {
    with_partition_helpers(
        r"
if ARGV[2] == 's' then
  local sexp = redis.call('HGET', KEYS[3], 'exp')
  if not sexp or (tonumber(sexp) or 0) <= tonumber(ARGV[1]) then return false end
end
if entry_count(KEYS[1]) == 0 then return false end
return version_of(KEYS[1], KEYS[2])
",
    )
});

/// `remove_partition`. KEYS: part, ver (earlier versions). Reply: the entry
/// count it had.
pub(crate) static REMOVE_PARTITION: LazyLock<Script> = LazyLock::new(|| {
    with_partition_helpers(
        r"
local n = entry_count(KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return n
",
    )
});

/// `put_tombstone`: keeps a live tombstone with a later sign-out.
///
/// KEYS: tombstone, and (standalone) meta tombstones.
/// ARGV: now, logged_out_at, expires_at, ttl, selector tag.
pub(crate) static PUT_TOMBSTONE: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r"
local now = tonumber(ARGV[1])
local old = redis.call('GET', KEYS[1])
if old then
  local lo, ex = tomb(old)
  if lo and ex > now and lo > tonumber(ARGV[2]) then return 'kept' end
end
redis.call('SET', KEYS[1], 'u' .. ARGV[2] .. ':' .. ARGV[3], 'EX', ARGV[4])
if #KEYS > 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - GRACE)
  extend(KEYS[2], tonumber(ARGV[4]))
end
return 'ok'
",
    )
});

/// Cluster `put_tombstone`, the meta step. KEYS: meta tombstones.
/// ARGV: now, expires_at, ttl, selector tag.
pub(crate) static META_TOMBSTONE: LazyLock<Script> = LazyLock::new(|| {
    with_helpers(
        r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - GRACE)
extend(KEYS[1], tonumber(ARGV[3]))
return 'ok'
",
    )
});

/// `record_jti`: test-and-set, expiry by the store's clock.
/// KEYS: jti. ARGV: now, expires_at, ttl. Reply: 1 the first time, else 0.
pub(crate) static RECORD_JTI: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = tonumber(redis.call('GET', KEYS[1]) or '')
if v and v > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
",
    )
});

/// `try_lock`: free when absent or past its time by the store's clock.
/// KEYS: lock. ARGV: now ms, value (`until_ms:token`), ttl ms. Reply: 1 when taken.
pub(crate) static TRY_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v then
  local held = tonumber(string.match(v, '^(%d+):') or '')
  if held and held > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
",
    )
});

/// `unlock`: compare-and-delete. KEYS: lock. ARGV: token.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^%d+:(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
",
    )
});
