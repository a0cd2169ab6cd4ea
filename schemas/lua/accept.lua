-- Accept one request's membership changes, atomically: all or nothing.
-- KEYS[1] versions hash, KEYS[2] the tenant's active list, KEYS[3] its active set, KEYS[4]
-- backlog total, KEYS[5] tenants with work, KEYS[6..12] the aggregates (lib/counts.lua), then
-- for each audience group g: KEYS[12 + 2g - 1] its backlog list, KEYS[12 + 2g] its stats hash.
-- ARGV[1] max backlog, ARGV[2] the tenant, ARGV[3] number of groups, then per group: audience
-- id, count, and count entries of the form <a|d><profileIntegrationId>. The version goes
-- between action and id.
-- After the groups' keys: KEYS[13 + 2 * groups] the tenants' own rates, KEYS[14 + 2 * groups] the
-- config hash (the rate the tenant's changes are dispatched at, for the caller's estimate).
-- Optionally a de-duplication key after those, KEYS[15 + 2 * groups], with its TTL in
-- seconds after the groups' arguments: the changes are accepted only when that key is absent,
-- and it is set in the same step, so "seen" and "enqueued" are never apart.
-- Returns {1, accepted, the tenant's pending after, its rate in force ('' when no worker
-- published one)}, {0, backlog total} when the backlog bound would be exceeded, or {2, 0} when
-- the de-duplication key was already set.
--#include entry
--#include counts
local max_backlog = tonumber(ARGV[1])
local tenant = ARGV[2]
local groups = tonumber(ARGV[3])
local rates, config = KEYS[13 + 2 * groups], KEYS[14 + 2 * groups]
local seen = KEYS[15 + 2 * groups]
local agg = aggregates(6, tenant)
if seen and redis.call('EXISTS', seen) == 1 then
  return {2, 0}
end
local total = tonumber(redis.call('GET', KEYS[4]) or '0')

local incoming = 0
local a = 4
for g = 1, groups do
  local count = tonumber(ARGV[a + 1])
  incoming = incoming + count
  a = a + 2 + count
end
if total + incoming > max_backlog then
  return {0, total}
end

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])

a = 4
for g = 1, groups do
  local audience = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  local backlog = KEYS[12 + 2 * g - 1]
  local stats = KEYS[12 + 2 * g]
  local last = tonumber(redis.call('HGET', KEYS[1], audience) or '0')
  local base = math.max(last + 1, now_us)
  local chunk = {}
  for i = 1, count do
    chunk[#chunk + 1] = versioned_entry(ARGV[a + 1 + i], base + i - 1)
    -- unpack() is bounded by Lua's C stack; push in slices.
    if #chunk == 1000 then
      redis.call('RPUSH', backlog, unpack(chunk))
      chunk = {}
    end
  end
  if #chunk > 0 then
    redis.call('RPUSH', backlog, unpack(chunk))
  end
  redis.call('HSET', KEYS[1], audience, string.format('%.0f', base + count - 1))
  add_count(agg, stats, 'accepted', count)
  -- Whose audience it is, for a job whose payload cannot be read (worker/app.py).
  redis.call('HSETNX', stats, 'tenant', tenant)
  local now_ms = math.floor(now_us / 1000)
  rank_audience(agg, audience, stats, backlog, now_ms)
  schedule(KEYS[2], KEYS[3], KEYS[5], tenant, audience, now_ms)
  a = a + 2 + count
end
redis.call('INCRBY', KEYS[4], incoming)
if seen then
  redis.call('SET', seen, '1', 'EX', ARGV[a])
end
local rate = redis.call('HGET', rates, tenant)
if rate then
  rate = string.sub(rate, 1, string.find(rate, ':', 1, true) - 1)
else
  local cfg = redis.call('HMGET', config, 'rate_per_minute', 'workers_rate_per_minute')
  rate = cfg[1] or cfg[2] or ''
end
return {1, incoming, tonumber(redis.call('HGET', agg.totals, 'pending') or '0'), rate}
