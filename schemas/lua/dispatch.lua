-- Move changes from the per-audience backlogs into arq's queue, each due at its slot of its
-- tenant's rate: round-robin across tenants, deficit round-robin across each tenant's audiences,
-- only while arq's ready queue plus the running jobs (leases) stay below the watermark. Atomic: an
-- entry leaves its backlog in the same step that creates its arq job, so a crash in between
-- cannot lose it.
-- Rate-gated: a job's arq due time is the next free slot of its tenant's GCRA (and of the
-- fleet's, when a fleet-wide cap is set), and a tenant takes only the slots falling within the
-- horizon. So a tenant at its limit holds no worker: its jobs wait on arq's queue, not in a
-- worker, and a worker takes whatever other tenant's change is due. A tenant done for now is
-- scored in the tenants-with-work set with the time of its next slot (now when it has slots
-- left, which puts it behind the tenants served before it: round-robin), or leaves it when its
-- backlogs are empty.
-- Within a tenant, each audience's turn is a quantum of entries. A turn cut short (the room or
-- the slots ran out, or the entries read were used up) is not lost: the audience stays at the
-- head of its tenant's round-robin with what is left of its turn (the credit key), and the next
-- dispatch, any replica's, goes on from there. So over k rounds every audience of a tenant with
-- work gets k quanta, give or take one.
-- The caller (core/scripts/dispatch.py) declares every key: it read the tenants due, the head
-- of their active lists and the head of those audiences' backlogs just before, and named each
-- entry's job key. Those reads are checked here, optimistically: a tenant's turns stop at the
-- first audience that is no longer next in its round-robin, or whose backlog no longer starts
-- with the entry read (another replica dispatched meanwhile: a backlog only loses entries from
-- its head, so an unchanged first entry means the n entries read are all still there, in
-- order), and at one whose entries read are used up.
-- KEYS[1] arq queue (sorted set), KEYS[2] cleared hash, KEYS[3] backlog total, KEYS[4] leases,
-- KEYS[5] tenants with work, KEYS[6] the fleet's limiter, KEYS[7] the dispatch turn (which this
-- call ends); then per tenant, 11 keys: its active list, active set, credit (<audience>:<entries
-- left of its turn>), limiter, and its seven aggregates (lib/counts.lua); then per audience (the
-- tenants' in order) its backlog and its stats hash; then one arq job key per entry read, in
-- the order of the entries.
-- ARGV[1] watermark, ARGV[2] most jobs to create, ARGV[3] quantum (entries per audience turn),
-- ARGV[4] horizon (ms), ARGV[5] the fleet's slot interval (µs, 0: no fleet cap), ARGV[6] its
-- tolerance (µs), ARGV[7] arq function applying a change, ARGV[8] the prefix of a job key before
-- its job id, ARGV[9] number of tenants; then per tenant: its id, its slot interval (µs, 0:
-- unlimited), its tolerance (µs), the most entries it may take, its number of audiences, then
-- per audience in round-robin order: its id, the number n of entries read, the first of them
-- ('' when none).
-- Returns {jobs created, stale entries dropped, ready jobs before, backlog total after,
-- 1 if it stopped short of the room because a read no longer held or was used up, else 0}.
--#include entry
--#include counts
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', now_ms) + redis.call('ZCARD', KEYS[4])
local room = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - ready)
local quantum = tonumber(ARGV[3])
local until_us = now_us + tonumber(ARGV[4]) * 1000
local fleet_interval, fleet_tolerance = tonumber(ARGV[5]), tonumber(ARGV[6])
local fn, id_from = ARGV[7], #ARGV[8] + 1

-- A GCRA's state is the last slot it gave (µs, Redis clock), so the next is one interval of the
-- rate in force later: a rate changed at runtime spaces the very next slot. A slot further than
-- the tolerance in the past no longer matters (nor does the state, which then expires).
local function next_slot(key, interval, tolerance)
  local last = redis.call('GET', key)
  if not last then
    return now_us - tolerance
  end
  return math.max(tonumber(last) + interval, now_us - tolerance)
end
local function keep_slot(key, last, interval, tolerance)
  local ttl_ms = math.ceil(math.max(0, last + interval + tolerance - now_us) / 1000) + 1000
  redis.call('SET', key, string.format('%.0f', last), 'PX', ttl_ms)
end
local fleet_slot = 0
if fleet_interval > 0 then
  fleet_slot = next_slot(KEYS[6], fleet_interval, fleet_tolerance)
end
local fleet_last = nil

-- Does the backlog still start with the entry read?
local function unchanged(au)
  if au.n == 0 then
    return redis.call('LLEN', au.backlog) == 0
  end
  return redis.call('LINDEX', au.backlog, 0) == au.first
end

local created, dropped, short = 0, 0, 0
local tenants = tonumber(ARGV[9])
-- Where each part of KEYS starts: the tenants' keys, then their audiences', then the job keys.
local a, key, audience_key = 10, 8, 8 + 11 * tenants
local job_key = audience_key
do
  local x = 10
  for _ = 1, tenants do
    local count = tonumber(ARGV[x + 4])
    job_key = job_key + 2 * count
    x = x + 5 + 3 * count
  end
end

for _ = 1, tenants do
  local tenant = {
    id = ARGV[a], interval = tonumber(ARGV[a + 1]), tolerance = tonumber(ARGV[a + 2]),
    most = tonumber(ARGV[a + 3]), active = KEYS[key], set = KEYS[key + 1],
    credit_key = KEYS[key + 2], limiter = KEYS[key + 3],
  }
  local agg = aggregates(key + 4, tenant.id)
  local count = tonumber(ARGV[a + 4])
  a = a + 5
  key = key + 11
  local audiences = {}
  for i = 1, count do
    local n = tonumber(ARGV[a + 1])
    audiences[i] = {
      id = ARGV[a], num = tonumber(ARGV[a]), n = n, first = ARGV[a + 2], key = job_key,
      taken = 0, checked = false, gone = false, backlog = KEYS[audience_key],
      stats = KEYS[audience_key + 1],
    }
    a = a + 3
    audience_key = audience_key + 2
    job_key = job_key + n
  end

  local slot, last = now_us, nil
  if tenant.interval > 0 then
    slot = next_slot(tenant.limiter, tenant.interval, tenant.tolerance)
  end
  -- The next k jobs of this tenant, as many of k as fall in the horizon: each one's due time
  -- (µs) and the tenant's and the fleet's theoretical slots it takes. A slot may lie in the
  -- past, down to the tolerance (the burst): such a job is due now. The next slot is one
  -- interval after the theoretical one, not after the due time, so a burst is a burst.
  local function dues(k)
    local found, s, f = {}, slot, fleet_slot
    for j = 1, k do
      local due = math.max(s, f, now_us)
      if due > until_us then
        break
      end
      found[j] = {due, s, f}
      if tenant.interval > 0 then
        s = s + tenant.interval
      end
      if fleet_interval > 0 then
        f = f + fleet_interval
      end
    end
    return found
  end

  local credit_of, credit = nil, 0
  local c = redis.call('GET', tenant.credit_key)
  if c then
    local sep = string.find(c, ':', 1, true)
    credit_of, credit = string.sub(c, 1, sep - 1), tonumber(string.sub(c, sep + 1))
  end
  local took_here, i, left, gated = 0, 1, #audiences, false
  while created < room and took_here < tenant.most and left > 0 do
    local au = audiences[i]
    if redis.call('LINDEX', tenant.active, 0) ~= au.id or (au.checked and au.taken == au.n) then
      short = 1
      break
    end
    if not au.checked then
      if not unchanged(au) then
        short = 1
        break
      end
      au.checked = true
      au.cleared = tonumber(redis.call('HGET', KEYS[2], au.id) or '0')
    end
    local turn = quantum
    if credit_of == au.id then
      turn = credit
    end
    credit_of = nil
    local want = math.min(turn, room - created, tenant.most - took_here, au.n - au.taken)
    local due = dues(want)
    local take = #due
    if take < want then
      gated = true
    end
    if take > 0 then
      local entries = redis.call('LPOP', au.backlog, take)
      local took, stale = 0, 0
      for j = 1, take do
        local code, version_s, profile = split_entry(entries[j])
        local version = tonumber(version_s)
        if version < au.cleared then
          stale = stale + 1
        else
          took = took + 1
          local job = KEYS[au.key + au.taken + j - 1]
          local at, tenant_slot, fleet_at = due[took][1], due[took][2], due[took][3]
          -- arq's job (schemas/jobs.py ChangeJob): try, function, one Change (an array), and
          -- its enqueue time in ms, the acceptance time (versions are that time in µs).
          redis.call('SET', job, cmsgpack.pack({
            t = 1, f = fn, a = {{au.num, profile, code == 'a', version, tenant.id + 0}},
            et = math.floor(version / 1000),
          }))
          redis.call('ZADD', KEYS[1], math.floor(at / 1000), string.sub(job, id_from))
          last, fleet_last = tenant_slot, fleet_at
          if tenant.interval > 0 then
            slot = tenant_slot + tenant.interval
          end
          if fleet_interval > 0 then
            fleet_slot = fleet_at + fleet_interval
          end
        end
      end
      au.taken = au.taken + take
      if took > 0 then
        add_count(agg, au.stats, 'dispatched', took)
      end
      if stale > 0 then
        add_count(agg, au.stats, 'dropped', stale)
      end
      rank_audience(agg, au.id, au.stats, au.backlog, now_ms)
      created = created + took
      took_here = took_here + took
      dropped = dropped + stale
    end
    if redis.call('LLEN', au.backlog) == 0 then
      -- Done: it leaves the round-robin (it is at the head) with nothing owed.
      redis.call('LPOP', tenant.active)
      redis.call('SREM', tenant.set, au.id)
      au.gone = true
      left = left - 1
    elseif take == turn then
      redis.call('LMOVE', tenant.active, tenant.active, 'LEFT', 'RIGHT')
    else
      -- Cut short: it stays at the head with the rest of its turn.
      credit_of, credit = au.id, turn - take
      if created < room and took_here < tenant.most and not gated then
        short = 1
      end
      break
    end
    if gated then
      break
    end
    -- The next audience still in the round-robin.
    for _ = 1, #audiences do
      i = i % #audiences + 1
      if not audiences[i].gone then
        break
      end
    end
  end
  if credit_of then
    redis.call('SET', tenant.credit_key, credit_of .. ':' .. credit)
  else
    redis.call('DEL', tenant.credit_key)
  end
  if tenant.interval > 0 and last then
    keep_slot(tenant.limiter, last, tenant.interval, tenant.tolerance)
  end
  if redis.call('LLEN', tenant.active) == 0 then
    redis.call('ZREM', KEYS[5], tenant.id)
  else
    -- When its next change may run: now (behind those served before) or its next slot.
    local next_at = math.max(now_us, slot, fleet_slot)
    redis.call('ZADD', KEYS[5], math.floor(next_at / 1000), tenant.id)
  end
  if short == 1 or created >= room then
    -- The tenants after this one keep their place (and their score) for the next dispatch.
    -- Keys of the audiences not reached are declared but untouched.
    break
  end
end

if fleet_interval > 0 and fleet_last then
  keep_slot(KEYS[6], fleet_last, fleet_interval, fleet_tolerance)
end
redis.call('DEL', KEYS[7])
local total = 0
if created + dropped > 0 then
  total = redis.call('DECRBY', KEYS[3], created + dropped)
else
  total = tonumber(redis.call('GET', KEYS[3]) or '0')
end
return {created, dropped, ready, total, short}
