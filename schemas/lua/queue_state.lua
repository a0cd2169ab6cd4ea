-- A snapshot of the queue for /metrics and /v1/status, read in one step so its numbers agree.
-- It changes nothing but the worker registry, from which it drops replicas whose entry expired.
-- Every call is O(1) or O(log n) per audience reported and per worker replica: nothing here
-- grows with the backlog.
-- KEYS[1] backlog total, KEYS[2] arq queue (sorted set), KEYS[3] config hash, KEYS[4] active
-- list, KEYS[5] worker registry (sorted set), KEYS[6] leases (sorted set), KEYS[7] dead letters.
-- ARGV[1] now in ms on the caller's clock (arq scores jobs with its own), ARGV[2] backlog key
-- prefix, ARGV[3] stats key prefix, ARGV[4] applied-per-second key prefix, ARGV[5] now in whole
-- seconds, ARGV[6] measuring window in seconds, then audience ids to report besides the active
-- ones.
-- Health and backlog keys are derived here, so this script assumes a single Redis node.
-- Returns {backlog total, ready jobs, deferred jobs, rate in force or '', live replicas, jobs
-- running, applied in the window, dead letters, {{audience, backlog, accepted, applied, dropped,
-- dead}, ...}}.
local now_ms = ARGV[1]
local backlog = tonumber(redis.call('GET', KEYS[1]) or '0')
-- arq's queue holds only jobs no replica runs (claim.lua moves a running job to the leases);
-- a lapsed lease is ready too: its replica died and the next claim puts it back.
local t = redis.call('TIME')
local redis_now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZCOUNT', KEYS[6], '-inf', redis_now_ms)
local due = redis.call('ZCOUNT', KEYS[2], '-inf', now_ms) + lapsed
local deferred = redis.call('ZCOUNT', KEYS[2], '(' .. now_ms, '+inf')
-- Running: jobs under a lease that has not lapsed, so a dead replica's jobs stay in flight
-- until their lease lapses and another replica takes them.
local running = redis.call('ZCOUNT', KEYS[6], '(' .. redis_now_ms, '+inf')
-- The override of cohortsync-admin set-rate, else the rate the workers were started with.
local cfg = redis.call('HMGET', KEYS[3], 'rate_per_minute', 'workers_rate_per_minute')
local rate = cfg[1] or cfg[2] or ''

redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. now_ms)
local live = 0
for _, health_key in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  if redis.call('EXISTS', health_key) == 1 then
    live = live + 1
  end
end
local dead = redis.call('LLEN', KEYS[7])

local applied = 0
local now_s = tonumber(ARGV[5])
-- Whole seconds only: the current one is still being counted.
for s = now_s - tonumber(ARGV[6]), now_s - 1 do
  applied = applied + tonumber(redis.call('GET', ARGV[4] .. s) or '0')
end

local audiences, seen = {}, {}
local function report(audience)
  if seen[audience] then
    return
  end
  seen[audience] = true
  local counts = redis.call('HMGET', ARGV[3] .. audience, 'accepted', 'applied', 'dropped', 'dead')
  audiences[#audiences + 1] = {
    audience,
    redis.call('LLEN', ARGV[2] .. audience),
    counts[1] or '0',
    counts[2] or '0',
    counts[3] or '0',
    counts[4] or '0',
  }
end
for _, audience in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  report(audience)
end
for i = 7, #ARGV do
  report(ARGV[i])
end
return {backlog, due, deferred, rate, live, running, applied, dead, audiences}
