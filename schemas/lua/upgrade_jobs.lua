-- Upgrade (cohortsync-admin migrate): turn arq jobs of the layout before namespaces, queued or
-- leased, back into backlog entries of their audiences with their original versions, as the
-- dispatcher had taken them (or into dead letters when their payload held no change). A job
-- leaves the old queue and leases, and its payload is deleted, in the same step its entry joins
-- the backlog: run again, it is moved once. One whose payload changed since the caller read it
-- is left for the next run.
-- KEYS[1] old arq queue, KEYS[2] old leases, KEYS[3] the default tenant's active list, KEYS[4]
-- its active set, KEYS[5] backlog total, KEYS[6] dead letters, then per job i (1-based):
-- KEYS[3 + 4i] its payload key, KEYS[4 + 4i] its arq retry key, KEYS[5 + 4i] its audience's
-- backlog, KEYS[6 + 4i] its audience's stats hash; then the tenants with work; last, the
-- default tenant's aggregates (lib/counts.lua, seven keys). Every audience from before tenants
-- belongs to the default tenant, 1.
-- ARGV per job i: ARGV[5i - 4] job id, ARGV[5i - 3] audience id, ARGV[5i - 2] the payload as
-- read ('' when it had none: another run finished it), ARGV[5i - 1] its backlog entry ('' when
-- the payload holds no change), ARGV[5i] its dead letter (when it holds no change).
-- The caller orders each audience's jobs newest first: put at the backlog's head one by one,
-- they end oldest first.
-- Returns {entries re-queued, dead letters kept}.
--#include counts
local agg = aggregates(#KEYS - 6, 1)
local tenants_due = KEYS[#KEYS - 7]
local now_ms = redis_now_ms()
local requeued, dead = 0, 0
for i = 1, #ARGV / 5 do
  local id, audience, payload = ARGV[5 * i - 4], ARGV[5 * i - 3], ARGV[5 * i - 2]
  local entry, letter = ARGV[5 * i - 1], ARGV[5 * i]
  local job_key, backlog, stats = KEYS[3 + 4 * i], KEYS[5 + 4 * i], KEYS[6 + 4 * i]
  local current = redis.call('GET', job_key)
  if (current or '') == payload then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('DEL', job_key, KEYS[4 + 4 * i])
    if current and entry ~= '' then
      redis.call('LPUSH', backlog, entry)
      -- Dispatched again later: counted once.
      add_count(agg, stats, 'dispatched', -1)
      schedule(KEYS[3], KEYS[4], tenants_due, 1, audience, 0)
      requeued = requeued + 1
    elseif current then
      redis.call('RPUSH', KEYS[6], letter)
      add_count(agg, stats, 'dead', 1)
      dead = dead + 1
    end
    rank_audience(agg, audience, stats, backlog, now_ms)
  end
end
if requeued > 0 then
  redis.call('INCRBY', KEYS[5], requeued)
end
return {requeued, dead}
