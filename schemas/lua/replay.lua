-- Put dead letters back on their audiences' backlogs with their original versions, atomically:
-- each letter leaves the dead list in the same step its change joins a backlog, so a replay run
-- twice (or two at once) re-queues each change once. A replayed change still loses to anything
-- newer (versions) and to a later clear (the dispatcher drops it).
-- KEYS[1] dead letters, KEYS[2] the tenant's active list, KEYS[3] its active set, KEYS[4]
-- backlog total, KEYS[5] tenants with work, KEYS[6..12] the tenant's aggregates
-- (lib/counts.lua), then per audience group g: KEYS[12 + 2g - 1] its backlog, KEYS[12 + 2g] its
-- stats hash. One call replays the letters of one tenant's audiences.
-- ARGV[1] the tenant, ARGV[2] number of groups, then per group: audience id, count, and count
-- pairs of (the letter exactly as stored, its backlog entry).
-- Returns the number of changes re-queued.
--#include counts
local tenant = ARGV[1]
local agg = aggregates(6, tenant)
local groups = tonumber(ARGV[2])
local now_ms = redis_now_ms()
local a = 3
local total = 0
for g = 1, groups do
  local audience = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  local backlog = KEYS[12 + 2 * g - 1]
  local stats = KEYS[12 + 2 * g]
  local replayed = 0
  for i = 1, count do
    local letter = ARGV[a + 2 * i]
    if redis.call('LREM', KEYS[1], 1, letter) == 1 then
      redis.call('RPUSH', backlog, ARGV[a + 2 * i + 1])
      replayed = replayed + 1
    end
  end
  if replayed > 0 then
    -- Letters kept before dead changes were counted must not take the counter below 0.
    local dead = tonumber(redis.call('HGET', stats, 'dead') or '0')
    set_count(agg, stats, 'dead', math.max(0, dead - replayed))
    rank_audience(agg, audience, stats, backlog, now_ms)
    schedule(KEYS[2], KEYS[3], KEYS[5], tenant, audience, now_ms)
    total = total + replayed
  end
  a = a + 2 + 2 * count
end
redis.call('INCRBY', KEYS[4], total)
return total
