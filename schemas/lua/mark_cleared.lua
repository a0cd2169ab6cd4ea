-- Record that every change of an audience older than a version is stale (after a clear or delete
-- committed to Postgres). When the whole backlog is older, drop it at once. The audience's id
-- stays in the active list: the dispatcher drops it at its turn, when it finds the backlog
-- empty (O(1)), rather than this script searching the whole list.
-- A deleted audience with nothing left pending loses its keys here; one with jobs still running
-- loses them once idle (reclaim.lua).
-- KEYS[1] cleared hash, KEYS[2] the audience's backlog, KEYS[3] backlog total, KEYS[4] versions
-- hash, KEYS[5] the audience's stats hash, KEYS[6..12] the aggregates of its tenant
-- (lib/counts.lua).
-- ARGV[1] audience id, ARGV[2] version, ARGV[3] 1 when the audience was deleted, ARGV[4] its
-- tenant.
-- Returns how many entries were dropped.
--#include entry
--#include counts
local agg = aggregates(6, ARGV[4])
local audience = ARGV[1]
local v = tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], audience) or '0')
if v > current then
  redis.call('HSET', KEYS[1], audience, ARGV[2])
end
local n = 0
local newest = redis.call('LINDEX', KEYS[2], -1)
-- When newer changes arrived after the clear, the dispatcher drops the older ones one by one.
if newest and entry_version(newest) < v then
  n = redis.call('LLEN', KEYS[2])
  redis.call('DEL', KEYS[2])
  redis.call('DECRBY', KEYS[3], n)
  add_count(agg, KEYS[5], 'dropped', n)
end
rank_audience(agg, audience, KEYS[5], KEYS[2], redis_now_ms())
if ARGV[3] == '1' and not redis.call('ZSCORE', agg.pending, audience) then
  forget_audience(agg, audience, KEYS[5], KEYS[4], KEYS[1])
end
return n
