-- Per-audience counters (Keys.stats) and the aggregates kept in the same step (schemas/keys.py):
-- the tenant's totals hash, its audiences ranked by pending, its idle audiences; the fleet's
-- totals, the tenants ranked by pending, the tenants known. Every script that changes a stats
-- hash or a backlog goes through these, so the aggregates stay exactly the sum of the
-- per-audience values and reading them costs O(1) whatever the audiences or tenants.
-- The seven keys come in this order from core/scripts/backlogs.py aggregate_keys:
-- tenant totals, tenant audiences by pending, tenant idle audiences, fleet totals, tenants by
-- pending, tenants known, fleet audiences by pending; ``aggregates(i, tenant)`` reads them from
-- KEYS[i].
local COUNTERS = {'accepted', 'dispatched', 'applied', 'dropped', 'dead'}

local function aggregates(first, tenant)
  return {
    totals = KEYS[first], pending = KEYS[first + 1], idle = KEYS[first + 2],
    fleet = KEYS[first + 3], tenants = KEYS[first + 4], known = KEYS[first + 5],
    fleet_pending = KEYS[first + 6], tenant = tostring(tenant),
  }
end

-- Add n to a field of the tenant's totals and the fleet's.
local function add_total(agg, field, n)
  redis.call('HINCRBY', agg.totals, field, n)
  redis.call('HINCRBY', agg.fleet, field, n)
end

-- A stats hash written before the aggregates existed adds its counters into the totals once,
-- and is marked so it never does again.
local function in_totals(agg, stats)
  if redis.call('HSETNX', stats, 'in_totals', 1) == 1 then
    local values = redis.call('HMGET', stats, unpack(COUNTERS))
    for i = 1, #COUNTERS do
      local v = tonumber(values[i] or '0')
      if v ~= 0 then
        add_total(agg, COUNTERS[i], v)
      end
    end
  end
end

-- Add n to an audience's counter and to the totals.
local function add_count(agg, stats, field, n)
  in_totals(agg, stats)
  redis.call('HINCRBY', stats, field, n)
  add_total(agg, field, n)
end

-- Set an audience's counter to v, the totals following.
local function set_count(agg, stats, field, v)
  in_totals(agg, stats)
  local old = tonumber(redis.call('HGET', stats, field) or '0')
  redis.call('HSET', stats, field, v)
  add_total(agg, field, v - old)
end

-- Rank an audience again after its counters or backlog changed: its pending (as
-- schemas/status.py AudienceCounts.pending: accepted and not yet applied, dropped or dead, at
-- least its backlog) in the pending set and the totals; idle (with the time) when 0. The
-- tenant's rank among tenants follows.
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
      redis.call('ZADD', agg.fleet_pending, p, audience)
    end
    redis.call('ZREM', agg.idle, audience)
  else
    p = 0
    if old ~= 0 then
      redis.call('ZREM', agg.pending, audience)
      redis.call('ZREM', agg.fleet_pending, audience)
    end
    redis.call('ZADD', agg.idle, 'NX', now_ms, audience)
  end
  if p ~= old then
    add_total(agg, 'pending', p - old)
    local tp = tonumber(redis.call('ZINCRBY', agg.tenants, p - old, agg.tenant))
    if tp <= 0 then
      redis.call('ZREM', agg.tenants, agg.tenant)
    end
  end
  redis.call('SADD', agg.known, agg.tenant)
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
      add_total(agg, 'reclaimed_' .. COUNTERS[i], v)
    end
  end
  redis.call('DEL', stats)
  redis.call('HDEL', versions, audience)
  redis.call('HDEL', cleared, audience)
  redis.call('ZREM', agg.idle, audience)
end

-- Put an audience with work into its tenant's round-robin (at the back) if it is not there, and
-- its tenant among the tenants with work (due now unless its rate already set a later time).
local function schedule(active_list, active_set, tenants_due, tenant, audience, now_ms)
  if redis.call('SADD', active_set, audience) == 1 then
    redis.call('RPUSH', active_list, audience)
  end
  redis.call('ZADD', tenants_due, 'NX', now_ms, tostring(tenant))
end
