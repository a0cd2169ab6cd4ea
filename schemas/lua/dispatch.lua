-- Move changes from the per-audience backlogs into arq's queue, round-robin across audiences,
-- only while arq's ready queue plus the running jobs (leases) stay below the watermark. Atomic:
-- an entry leaves its backlog in the same step that creates its arq job, so a crash in between
-- cannot lose it.
-- The caller (core/scripts/dispatch.py) declares every key: it read the head of the active list
-- and the head of those audiences' backlogs just before, and built each entry's job id, job key
-- and job. Those reads are checked here, optimistically: the turns stop at the first audience
-- that is no longer next in the round-robin, or whose backlog no longer starts with the entries
-- read (another replica dispatched meanwhile), and at one whose entries read are used up.
-- KEYS[1] arq queue (sorted set), KEYS[2] active list, KEYS[3] active set, KEYS[4] cleared hash,
-- KEYS[5] backlog total, KEYS[6] leases, then for each audience i: KEYS[5 + 2i] its backlog,
-- KEYS[6 + 2i] its stats hash; then one job key per entry read, in the order of the entries;
-- then totals, audiences by pending, idle audiences (lib/counts.lua); last, the dispatch turn,
-- which this call ends.
-- ARGV[1] watermark, ARGV[2] most jobs to create, ARGV[3] entries per audience per turn,
-- ARGV[4] number of audiences, then per audience in round-robin order: its id, the number n of
-- entries read, then n times: the entry, its version, its job id, its job (arq's payload).
-- Returns {jobs created, stale entries dropped, ready jobs before, backlog total after,
-- 1 if it stopped short of the room because a read no longer held or was used up, else 0}.
--#include counts
local agg = {totals = KEYS[#KEYS - 3], pending = KEYS[#KEYS - 2], idle = KEYS[#KEYS - 1]}
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', now_ms) + redis.call('ZCARD', KEYS[6])
local room = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - ready)
local quantum = tonumber(ARGV[3])

local audiences = {}
local a, k = 5, 7 + 2 * tonumber(ARGV[4])
for i = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[a + 1])
  audiences[i] = {
    id = ARGV[a], n = n, arg = a + 2, key = k, taken = 0, checked = false, gone = false,
    backlog = KEYS[5 + 2 * i], stats = KEYS[6 + 2 * i],
  }
  a = a + 2 + 4 * n
  k = k + n
end

-- Does the backlog still start with the entries read?
local function unchanged(au)
  if au.n == 0 then
    return redis.call('LLEN', au.backlog) == 0
  end
  local head = redis.call('LRANGE', au.backlog, 0, au.n - 1)
  if #head ~= au.n then
    return false
  end
  for j = 1, au.n do
    if head[j] ~= ARGV[au.arg + 4 * (j - 1)] then
      return false
    end
  end
  return true
end

local created, dropped, short = 0, 0, 0
local i, left = 1, #audiences
while created < room and left > 0 do
  local au = audiences[i]
  if redis.call('LINDEX', KEYS[2], 0) ~= au.id or (au.checked and au.taken == au.n) then
    short = 1
    break
  end
  if not au.checked then
    if not unchanged(au) then
      short = 1
      break
    end
    au.checked = true
    au.cleared = tonumber(redis.call('HGET', KEYS[4], au.id) or '0')
  end
  redis.call('LMOVE', KEYS[2], KEYS[2], 'LEFT', 'RIGHT')
  local take = math.min(quantum, room - created, au.n - au.taken)
  if take > 0 then
    redis.call('LPOP', au.backlog, take)
    local took, stale = 0, 0
    for j = au.taken + 1, au.taken + take do
      local arg = au.arg + 4 * (j - 1)
      if tonumber(ARGV[arg + 1]) < au.cleared then
        stale = stale + 1
      else
        redis.call('SET', KEYS[au.key + j - 1], ARGV[arg + 3])
        redis.call('ZADD', KEYS[1], now_ms, ARGV[arg + 2])
        took = took + 1
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
    dropped = dropped + stale
  end
  if redis.call('LLEN', au.backlog) == 0 then
    redis.call('LREM', KEYS[2], -1, au.id)
    redis.call('SREM', KEYS[3], au.id)
    au.gone = true
    left = left - 1
  end
  -- The next audience still in the round-robin.
  for _ = 1, #audiences do
    i = i % #audiences + 1
    if not audiences[i].gone then
      break
    end
  end
end

redis.call('DEL', KEYS[#KEYS])
local total = 0
if created + dropped > 0 then
  total = redis.call('DECRBY', KEYS[5], created + dropped)
else
  total = tonumber(redis.call('GET', KEYS[5]) or '0')
end
return {created, dropped, ready, total, short}
