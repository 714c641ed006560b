//! The Lua scripts a node runs in Redis. Each runs atomically, which is
//! what makes the cluster's rules hold between nodes: a nick has one
//! owner, a room's counter and stream move together, and a dead node is
//! reaped exactly once.
//!
//! Every script that writes on a node's behalf first checks that the node
//! is registered (in `rchat:nodes`), and fails with `NOTREG` if not: a
//! node that has been reaped, or whose Redis lost its data, can change
//! nothing until it has registered again. Keys a node owns are
//! `rchat:node:NODE:…` (see docs/cluster.md for all of them).

use redis::Script;

/// The error code of a write refused because the node is not registered.
pub const NOT_REGISTERED: &str = "NOTREG";

/// Appends one message to a room's stream and advances its counter; the
/// new seq is both the reply and the entry's id. `ARGV[1]`: the most
/// entries kept (0: all); `ARGV[7]`: the node.
const APPEND: &str = r#"
if redis.call('SISMEMBER', 'rchat:nodes', ARGV[7]) == 0 then
  return redis.error_reply('NOTREG this node is not registered in the cluster')
end
local seq = redis.call('INCR', KEYS[2])
local id = seq .. '-0'
local max = tonumber(ARGV[1])
if max > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', max, id,
    'r', ARGV[2], 'f', ARGV[3], 't', ARGV[4], 'a', ARGV[5], 'ts', ARGV[6], 'n', ARGV[7], 'm', ARGV[8])
else
  redis.call('XADD', KEYS[1], id,
    'r', ARGV[2], 'f', ARGV[3], 't', ARGV[4], 'a', ARGV[5], 'ts', ARGV[6], 'n', ARGV[7], 'm', ARGV[8])
end
return seq
"#;

/// Sends a private message to the node that holds the nick `KEYS[1]`
/// claims: appends it to that node's inbox stream. 0 if no one holds it.
const PRIVATE: &str = r#"
local owner = redis.call('GET', KEYS[1])
if not owner then return 0 end
local node = string.match(owner, '^([^/]+)/')
if not node then return 0 end
redis.call('XADD', 'rchat:node:' .. node .. ':inbox', 'MAXLEN', '~', ARGV[5], '*',
  'f', ARGV[1], 'to', ARGV[2], 't', ARGV[3], 'ts', ARGV[4])
return 1
"#;

/// Claims nick `KEYS[1]` for owner `ARGV[1]` ("NODE/TOKEN") of node
/// `ARGV[2]`, and records it among the node's nicks (`KEYS[2]`) so that a
/// reaper can free it. 1 if claimed (or already this owner's), 0 if
/// someone else holds it.
const CLAIM: &str = r#"
if redis.call('SISMEMBER', 'rchat:nodes', ARGV[2]) == 0 then
  return redis.error_reply('NOTREG this node is not registered in the cluster')
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"#;

/// Deletes nick `KEYS[1]`'s claim only if owner `ARGV[1]` still holds it,
/// and forgets it among its node's nicks.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
local node = string.match(ARGV[1], '^([^/]+)/')
if node then redis.call('SREM', 'rchat:node:' .. node .. ':nicks', ARGV[2]) end
return 1
"#;

/// One membership change of node `ARGV[1]`: `ARGV[2]` is `join`, `leave`
/// or `rename` in room key `ARGV[3]` (named `ARGV[4]`) of nick key
/// `ARGV[5]` (spelled `ARGV[6]`; a rename's old key is `ARGV[7]`). The
/// room's member hash, `rchat:rooms` and the node's own record of its
/// members move together, and the event (fields `ARGV[9..]`) goes to the
/// room's events stream, kept to about `ARGV[8]` entries. A leave or
/// rename of a member the node no longer has on record (a reaper took it)
/// changes nothing and tells no one.
const MEMBER: &str = r#"
local n = ARGV[1]
if redis.call('SISMEMBER', 'rchat:nodes', n) == 0 then return 0 end
local op, room = ARGV[2], ARGV[3]
local members = 'rchat:room:' .. room .. ':members'
local mine = 'rchat:node:' .. n .. ':members'
if op == 'leave' or op == 'rename' then
  local gone = ARGV[5]
  if op == 'rename' then gone = ARGV[7] end
  if redis.call('HDEL', mine, room .. '\t' .. gone) == 0 then return 0 end
  redis.call('HDEL', members, gone)
end
if op == 'join' or op == 'rename' then
  redis.call('HSET', members, ARGV[5], ARGV[6])
  redis.call('HSET', mine, room .. '\t' .. ARGV[5], ARGV[4] .. '\t' .. ARGV[6])
  redis.call('HSET', 'rchat:rooms', room, ARGV[4])
elseif redis.call('HLEN', members) == 0 then
  redis.call('HDEL', 'rchat:rooms', room)
end
redis.call('XADD', 'rchat:room:' .. room .. ':events', 'MAXLEN', '~', ARGV[8], '*',
  unpack(ARGV, 9))
return 1
"#;

/// Refreshes node `ARGV[1]`'s heartbeat for `ARGV[2]` ms. 1 if refreshed;
/// -1 if the node is no longer registered (it was reaped); -2 if the
/// cluster's epoch is not `ARGV[3]` (Redis lost its data).
const BEAT: &str = r#"
if redis.call('GET', 'rchat:epoch') ~= ARGV[3] then return -2 end
if redis.call('SISMEMBER', 'rchat:nodes', ARGV[1]) == 0 then return -1 end
redis.call('SET', 'rchat:node:' .. ARGV[1] .. ':alive', '1', 'PX', ARGV[2])
return 1
"#;

/// Registers node `ARGV[1]` with a heartbeat of `ARGV[2]` ms, creating the
/// cluster's epoch (`ARGV[3]`) if there is none. What the node already
/// holds comes after, for a re-registration once Redis has lost its data:
/// `ARGV[4]` rooms as (room key, last seq) pairs, each room's counter
/// raised to at least that seq; then a count and that many (nick key,
/// owner) claims; then (room key, room name, nick key, nick) memberships
/// to the end. Returns the epoch and the nick keys someone else took
/// meanwhile (their memberships are not recorded).
const REGISTER: &str = r#"
local n = ARGV[1]
redis.call('SET', 'rchat:epoch', ARGV[3], 'NX')
local epoch = redis.call('GET', 'rchat:epoch')
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local counter = 'rchat:room:' .. ARGV[i] .. ':seq'
  if tonumber(redis.call('GET', counter) or '0') < tonumber(ARGV[i + 1]) then
    redis.call('SET', counter, ARGV[i + 1])
  end
  i = i + 2
end
local lost, taken = {}, {}
local claims = tonumber(ARGV[i])
i = i + 1
for _ = 1, claims do
  local key = 'rchat:nick:' .. ARGV[i]
  if redis.call('SET', key, ARGV[i + 1], 'NX') or redis.call('GET', key) == ARGV[i + 1] then
    redis.call('SADD', 'rchat:node:' .. n .. ':nicks', ARGV[i])
  else
    table.insert(lost, ARGV[i])
    taken[ARGV[i]] = true
  end
  i = i + 2
end
while i + 3 <= #ARGV do
  local room, name, key, nick = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if not taken[key] then
    redis.call('HSET', 'rchat:room:' .. room .. ':members', key, nick)
    redis.call('HSET', 'rchat:node:' .. n .. ':members', room .. '\t' .. key, name .. '\t' .. nick)
    redis.call('HSET', 'rchat:rooms', room, name)
  end
  i = i + 4
end
redis.call('SADD', 'rchat:nodes', n)
redis.call('SET', 'rchat:node:' .. n .. ':alive', '1', 'PX', ARGV[2])
return {epoch, lost}
"#;

/// Reaps node `ARGV[1]` if its heartbeat has expired: unregisters it,
/// frees the nicks it held, takes its members out of their rooms, telling
/// each room they were dropped (reason `ARGV[2]`, events kept to about
/// `ARGV[3]`), and deletes its inbox. 1 if this call reaped it; 0 if it is
/// alive or someone reaped it first, so each dead node is reaped once.
const REAP: &str = r#"
local n = ARGV[1]
local prefix = 'rchat:node:' .. n
if redis.call('EXISTS', prefix .. ':alive') == 1 then return 0 end
if redis.call('SREM', 'rchat:nodes', n) == 0 then return 0 end
for _, key in ipairs(redis.call('SMEMBERS', prefix .. ':nicks')) do
  local owner = redis.call('GET', 'rchat:nick:' .. key)
  if owner and string.sub(owner, 1, #n + 1) == n .. '/' then
    redis.call('DEL', 'rchat:nick:' .. key)
  end
end
local held = redis.call('HGETALL', prefix .. ':members')
for i = 1, #held, 2 do
  local room, key = string.match(held[i], '^(.-)\t(.*)$')
  local name, nick = string.match(held[i + 1], '^(.-)\t(.*)$')
  if room and name then
    local members = 'rchat:room:' .. room .. ':members'
    if redis.call('HGET', members, key) == nick then
      redis.call('HDEL', members, key)
    end
    if redis.call('HLEN', members) == 0 then
      redis.call('HDEL', 'rchat:rooms', room)
    end
    redis.call('XADD', 'rchat:room:' .. room .. ':events', 'MAXLEN', '~', ARGV[3], '*',
      'o', n, 'r', name, 'k', 'leave', 'n', nick, 'why', 'dropped', 't', ARGV[2])
  end
end
redis.call('DEL', prefix .. ':nicks', prefix .. ':members', prefix .. ':inbox', prefix .. ':alive')
return 1
"#;

/// A room's members on nodes other than `KEYS[2]`'s owner (its record of
/// its own members), with the room's events position at that moment:
/// `{position, {nick, ...}}`. `KEYS[1]` is the room's member hash,
/// `KEYS[3]` its events stream, `ARGV[1]` the room key.
const ELSEWHERE: &str = r#"
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[1] .. '\t' .. all[i]) == 0 then
    table.insert(out, all[i + 1])
  end
end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local position = '0-0'
if #last > 0 then position = last[1][1] end
return {position, out}
"#;

/// The scripts, loaded once per node (each is sent by its hash, and in
/// full only when Redis does not know it yet).
pub struct Scripts {
    pub append: Script,
    pub private: Script,
    pub claim: Script,
    pub release: Script,
    pub member: Script,
    pub beat: Script,
    pub register: Script,
    pub reap: Script,
    pub elsewhere: Script,
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            append: Script::new(APPEND),
            private: Script::new(PRIVATE),
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            member: Script::new(MEMBER),
            beat: Script::new(BEAT),
            register: Script::new(REGISTER),
            reap: Script::new(REAP),
            elsewhere: Script::new(ELSEWHERE),
        }
    }
}

/// Whether `error` is a script's refusal because the node is not
/// registered.
pub fn is_not_registered(error: &redis::RedisError) -> bool {
    error.code() == Some(NOT_REGISTERED)
}
