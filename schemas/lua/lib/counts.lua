-- Per-audience counters (Keys.stats) and the aggregates kept in the same step (schemas/keys.py):
-- the totals hash, the audiences ranked by pending, the idle audiences. Every script that
-- changes a stats hash or a backlog goes through these, so the aggregates stay exactly the sum
-- of the per-audience values and reading them costs O(1) whatever the audiences.
-- agg = {totals = <Keys.totals>, pending = <Keys.audiences_pending>, idle = <Keys.audiences_idle>},
-- all three declared by the script's caller.
local COUNTERS = {'accepted', 'dispatched', 'applied', 'dropped', 'dead'}

-- A stats hash written before the aggregates existed adds its counters into the totals once,
-- and is marked so it never does again.
local function in_totals(agg, stats)
  if redis.call('HSETNX', stats, 'in_totals', 1) == 1 then
    local values = redis.call('HMGET', stats, unpack(COUNTERS))
    for i = 1, #COUNTERS do
      local v = tonumber(values[i] or '0')
      if v ~= 0 then
        redis.call('HINCRBY', agg.totals, COUNTERS[i], v)
      end
    end
  end
end

-- Add n to an audience's counter and to the totals.
local function add_count(agg, stats, field, n)
  in_totals(agg, stats)
  redis.call('HINCRBY', stats, field, n)
  redis.call('HINCRBY', agg.totals, field, n)
end

-- Set an audience's counter to v, the totals following.
local function set_count(agg, stats, field, v)
  in_totals(agg, stats)
  local old = tonumber(redis.call('HGET', stats, field) or '0')
  redis.call('HSET', stats, field, v)
  redis.call('HINCRBY', agg.totals, field, v - old)
end

-- Rank an audience again after its counters or backlog changed: its pending (as
-- schemas/status.py AudienceCounts.pending: accepted and not yet applied, dropped or dead, at
-- least its backlog) in the pending set and the totals; idle (with the time) when 0.
local function rank_audience(agg, audience, stats, backlog, now_ms)
  in_totals(agg, stats)
  local c = redis.call('HMGET', stats, 'accepted', 'applied', 'dropped', 'dead')
  local p = tonumber(c[1] or '0') - tonumber(c[2] or '0') - tonumber(c[3] or '0')
    - tonumber(c[4] or '0')
  p = math.max(p, redis.call('LLEN', backlog))
  local old = tonumber(redis.call('ZSCORE', agg.pending, audience) or '0')
  if p > 0 then
    if p ~= old then
      redis.call('ZADD', agg.pending, p, audience)
    end
    redis.call('ZREM', agg.idle, audience)
  else
    p = 0
    if old ~= 0 then
      redis.call('ZREM', agg.pending, audience)
    end
    redis.call('ZADD', agg.idle, 'NX', now_ms, audience)
  end
  if p ~= old then
    redis.call('HINCRBY', agg.totals, 'pending', p - old)
  end
end

local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Forget an audience with nothing pending (idle long enough, or deleted): its counters, its
-- version and clear. The totals keep what it counted, and say how much of it was forgotten
-- (fields 'reclaimed_<counter>'), so totals = per-audience sums + reclaimed stays checkable.
local function forget_audience(agg, audience, stats, versions, cleared)
  in_totals(agg, stats)
  local values = redis.call('HMGET', stats, unpack(COUNTERS))
  for i = 1, #COUNTERS do
    local v = tonumber(values[i] or '0')
    if v ~= 0 then
      redis.call('HINCRBY', agg.totals, 'reclaimed_' .. COUNTERS[i], v)
    end
  end
  redis.call('DEL', stats)
  redis.call('HDEL', versions, audience)
  redis.call('HDEL', cleared, audience)
  redis.call('ZREM', agg.idle, audience)
end
