-- Record that every change of an audience older than a version is stale (after a clear or delete
-- committed to Postgres). When the whole backlog is older, drop it at once.
-- KEYS[1] cleared hash, KEYS[2] the audience's backlog, KEYS[3] backlog total,
-- KEYS[4] active list, KEYS[5] active set, KEYS[6] the audience's stats hash.
-- ARGV[1] audience id, ARGV[2] version. Returns how many entries were dropped.
--#include entry
local v = tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if v > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local newest = redis.call('LINDEX', KEYS[2], -1)
if not newest then
  return 0
end
if entry_version(newest) >= v then
  -- Newer changes arrived after the clear: the dispatcher drops the older ones one by one.
  return 0
end
local n = redis.call('LLEN', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('DECRBY', KEYS[3], n)
redis.call('LREM', KEYS[4], 0, ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('HINCRBY', KEYS[6], 'dropped', n)
return n
