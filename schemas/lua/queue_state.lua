-- A snapshot of the queue for /metrics and /v1/status, read in one step so its numbers agree.
-- It changes nothing but the worker registry, from which it drops replicas whose entry expired.
-- Its cost does not grow with the audiences: the totals and the count of audiences with work
-- are aggregates the scripts that change them keep (lib/counts.lua); per-audience detail is
-- read only for the page of audiences asked for (pending_page.lua chose it). The caller
-- (core/scripts/queue_state.py) read the registry just before and declares every key: the
-- replicas' health keys, the page's backlogs and stats hashes, and the per-second counters of
-- the measuring window.
-- One tenant's view (its totals, audiences, rate, dead letters and applied counters) or the
-- fleet's (every tenant's summed). Queue depth and replicas are the shared workers' either way.
-- KEYS[1] backlog total, KEYS[2] arq queue (sorted set), KEYS[3] config hash, KEYS[4] worker
-- registry (sorted set), KEYS[5] leases (sorted set), KEYS[6] dead letters, KEYS[7] totals (the
-- tenant's or the fleet's), KEYS[8] tenants' own rates, then ARGV[5] sets of audiences by
-- pending (the tenant's, or every known tenant's), then ARGV[2] applied-per-second counters
-- (the window's whole seconds), then ARGV[3] health keys, then per audience: its backlog, its
-- stats hash.
-- ARGV[1] now in ms on the caller's clock (arq scores jobs with its own), ARGV[2] number of
-- counters, ARGV[3] number of health keys, ARGV[4] the tenant ('' for the fleet), ARGV[5] number
-- of pending sets, then the audience ids, in the order of their keys.
-- Returns {backlog total, ready jobs, deferred jobs, rate in force or '', live replicas, jobs
-- running, applied in the window, dead letters, {{audience, backlog, accepted, applied, dropped,
-- dead}, ...}, {accepted, applied, dropped, dead, pending} over all audiences, audiences with
-- pending changes}.
local now_ms = ARGV[1]
local counters, health = tonumber(ARGV[2]), tonumber(ARGV[3])
local tenant, sets = ARGV[4], tonumber(ARGV[5])
local c0 = 8 + sets
local backlog = tonumber(redis.call('GET', KEYS[1]) or '0')
-- arq's queue holds only jobs no replica runs (claim.lua moves a running job to the leases);
-- a lapsed lease is ready too: its replica died and the next claim puts it back.
local t = redis.call('TIME')
local redis_now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZCOUNT', KEYS[5], '-inf', redis_now_ms)
local due = redis.call('ZCOUNT', KEYS[2], '-inf', now_ms) + lapsed
local deferred = redis.call('ZCOUNT', KEYS[2], '(' .. now_ms, '+inf')
-- Running: jobs under a lease that has not lapsed, so a dead replica's jobs stay in flight
-- until their lease lapses and another replica takes them.
local running = redis.call('ZCOUNT', KEYS[5], '(' .. redis_now_ms, '+inf')
-- The override of cohortsync-admin set-rate, else the rate the workers were started with.
local cfg = redis.call('HMGET', KEYS[3], 'rate_per_minute', 'workers_rate_per_minute')
local rate = cfg[1] or cfg[2] or ''
-- A tenant's own rate, as the workers enforce it.
if tenant ~= '' then
  local own = redis.call('HGET', KEYS[8], tenant)
  if own then
    rate = string.sub(own, 1, string.find(own, ':', 1, true) - 1)
  end
end

redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. now_ms)
local live = 0
for k = c0 + 1 + counters, c0 + counters + health do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    live = live + 1
  end
end
local dead = 0
if tenant == '' then
  dead = redis.call('LLEN', KEYS[6])
else
  -- The tenant's letters: counted when kept, uncounted when replayed.
  dead = tonumber(redis.call('HGET', KEYS[7], 'dead') or '0')
end

local applied = 0
for k = c0 + 1, c0 + counters do
  applied = applied + tonumber(redis.call('GET', KEYS[k]) or '0')
end

local audiences = {}
local k = c0 + 1 + counters + health
for i = 6, #ARGV do
  local counts = redis.call('HMGET', KEYS[k + 1], 'accepted', 'applied', 'dropped', 'dead')
  audiences[#audiences + 1] = {
    ARGV[i],
    redis.call('LLEN', KEYS[k]),
    counts[1] or '0',
    counts[2] or '0',
    counts[3] or '0',
    counts[4] or '0',
  }
  k = k + 2
end
local totals = redis.call('HMGET', KEYS[7], 'accepted', 'applied', 'dropped', 'dead', 'pending')
for i = 1, #totals do
  totals[i] = totals[i] or '0'
end
local with_work = 0
for s = 9, c0 do
  with_work = with_work + redis.call('ZCARD', KEYS[s])
end
return {backlog, due, deferred, rate, live, running, applied, dead, audiences, totals, with_work}
