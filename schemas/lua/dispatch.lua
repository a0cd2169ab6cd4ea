-- Move changes from the per-audience backlogs into arq's queue by deficit round-robin across
-- audiences, only while arq's ready queue plus the running jobs (leases) stay below the
-- watermark. Atomic: an entry leaves its backlog in the same step that creates its arq job, so a
-- crash in between cannot lose it.
-- Each audience's turn is a quantum of entries. A turn cut short (the room ran out, or the
-- entries read were used up) is not lost: the audience stays at the head of the round-robin
-- with what is left of its turn (the credit key), and the next dispatch, any replica's, goes on
-- from there. So over k rounds every audience with work gets k quanta, give or take one.
-- The caller (core/scripts/dispatch.py) declares every key: it read the head of the active list
-- and the head of those audiences' backlogs just before, and named each entry's job key. Those
-- reads are checked here, optimistically: the turns stop at the first audience that is no longer
-- next in the round-robin, or whose backlog no longer starts with the entry read (another
-- replica dispatched meanwhile: a backlog only loses entries from its head, so an unchanged
-- first entry means the n entries read are all still there, in order), and at one whose
-- entries read are used up.
-- KEYS[1] arq queue (sorted set), KEYS[2] active list, KEYS[3] active set, KEYS[4] cleared hash,
-- KEYS[5] backlog total, KEYS[6] leases, KEYS[7] the head audience's credit
-- (<audience>:<entries left of its turn>), then for each audience i: KEYS[6 + 2i] its backlog,
-- KEYS[7 + 2i] its stats hash; then one arq job key per entry read, in the order of the
-- entries; then totals, audiences by pending, idle audiences (lib/counts.lua); last, the
-- dispatch turn, which this call ends.
-- ARGV[1] watermark, ARGV[2] most jobs to create, ARGV[3] quantum (entries per turn),
-- ARGV[4] number of audiences, ARGV[5] arq function applying a change, ARGV[6] the prefix of a
-- job key before its job id, then per audience in round-robin order: its id, the number n of
-- entries read, the first of them ('' when none).
-- Returns {jobs created, stale entries dropped, ready jobs before, backlog total after,
-- 1 if it stopped short of the room because a read no longer held or was used up, else 0}.
--#include entry
--#include counts
local agg = {totals = KEYS[#KEYS - 3], pending = KEYS[#KEYS - 2], idle = KEYS[#KEYS - 1]}
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', now_ms) + redis.call('ZCARD', KEYS[6])
local room = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - ready)
local quantum = tonumber(ARGV[3])
local fn, id_from = ARGV[5], #ARGV[6] + 1

-- What is left of the head audience's turn, if a dispatch cut it short.
local credit_of, credit = nil, 0
local c = redis.call('GET', KEYS[7])
if c then
  local sep = string.find(c, ':', 1, true)
  credit_of, credit = string.sub(c, 1, sep - 1), tonumber(string.sub(c, sep + 1))
end

local audiences = {}
local a, k = 7, 8 + 2 * tonumber(ARGV[4])
for i = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[a + 1])
  audiences[i] = {
    id = ARGV[a], num = tonumber(ARGV[a]), n = n, first = ARGV[a + 2], key = k, taken = 0,
    checked = false, gone = false, backlog = KEYS[6 + 2 * i], stats = KEYS[7 + 2 * i],
  }
  a = a + 3
  k = k + n
end

-- Does the backlog still start with the entry read?
local function unchanged(au)
  if au.n == 0 then
    return redis.call('LLEN', au.backlog) == 0
  end
  return redis.call('LINDEX', au.backlog, 0) == au.first
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
  local turn = quantum
  if credit_of == au.id then
    turn = credit
  end
  credit_of = nil
  local take = math.min(turn, room - created, au.n - au.taken)
  if take > 0 then
    local entries = redis.call('LPOP', au.backlog, take)
    local took, stale = 0, 0
    for j = 1, take do
      local code, version_s, profile = split_entry(entries[j])
      local version = tonumber(version_s)
      if version < au.cleared then
        stale = stale + 1
      else
        local job_key = KEYS[au.key + au.taken + j - 1]
        -- arq's job (schemas/jobs.py ChangeJob): try, function, one Change (an array), and
        -- its enqueue time in ms, the acceptance time (versions are that time in µs).
        redis.call('SET', job_key, cmsgpack.pack({
          t = 1, f = fn, a = {{au.num, profile, code == 'a', version}},
          et = math.floor(version / 1000),
        }))
        redis.call('ZADD', KEYS[1], now_ms, string.sub(job_key, id_from))
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
    -- Done: it leaves the round-robin (it is at the head) with nothing owed.
    redis.call('LPOP', KEYS[2])
    redis.call('SREM', KEYS[3], au.id)
    au.gone = true
    left = left - 1
  elseif take == turn then
    redis.call('LMOVE', KEYS[2], KEYS[2], 'LEFT', 'RIGHT')
  else
    -- Cut short: it stays at the head with the rest of its turn.
    credit_of, credit = au.id, turn - take
    if created < room then
      short = 1
    end
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
  redis.call('SET', KEYS[7], credit_of .. ':' .. credit)
else
  redis.call('DEL', KEYS[7])
end
redis.call('DEL', KEYS[#KEYS])
local total = 0
if created + dropped > 0 then
  total = redis.call('DECRBY', KEYS[5], created + dropped)
else
  total = tonumber(redis.call('GET', KEYS[5]) or '0')
end
return {created, dropped, ready, total, short}
