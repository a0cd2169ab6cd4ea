-- Put dead letters back on their audiences' backlogs with their original versions, atomically:
-- each letter leaves the dead list in the same step its change joins a backlog, so a replay run
-- twice (or two at once) re-queues each change once. A replayed change still loses to anything
-- newer (versions) and to a later clear (the dispatcher drops it).
-- KEYS[1] dead letters, KEYS[2] active list, KEYS[3] active set, KEYS[4] backlog total,
-- KEYS[5..7] totals, audiences by pending, idle audiences (lib/counts.lua), then per audience
-- group g: KEYS[7 + 2g - 1] its backlog, KEYS[7 + 2g] its stats hash.
-- ARGV[1] number of groups, then per group: audience id, count, and count pairs of (the letter
-- exactly as stored, its backlog entry).
-- Returns the number of changes re-queued.
--#include counts
local agg = {totals = KEYS[5], pending = KEYS[6], idle = KEYS[7]}
local groups = tonumber(ARGV[1])
local a = 2
local total = 0
for g = 1, groups do
  local audience = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  local backlog = KEYS[7 + 2 * g - 1]
  local stats = KEYS[7 + 2 * g]
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
    rank_audience(agg, audience, stats, backlog, 0)
    if redis.call('SADD', KEYS[3], audience) == 1 then
      redis.call('RPUSH', KEYS[2], audience)
    end
    total = total + replayed
  end
  a = a + 2 + 2 * count
end
redis.call('INCRBY', KEYS[4], total)
return total
