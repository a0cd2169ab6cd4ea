-- End one run of a change's job, and count its outcome in the same step, exactly once per job:
-- only the run that deletes the job's key counts, so a job re-run after its holder died (or
-- run twice after a lease lapsed) never counts twice, and a crash before this step counts
-- nothing (the job runs again and is counted then). A dead change's letter is kept in the same
-- step, so it exists once, exactly when it is counted.
-- KEYS[1] arq queue, KEYS[2] leases, KEYS[3] job key, KEYS[4] arq retry key, KEYS[5] the
-- audience's stats hash, KEYS[6] this second's applied counter (the fleet's; the tenant's is
-- KEYS[16]), KEYS[7] dead letters, KEYS[8]
-- the audience's backlog, KEYS[9..15] the aggregates of its tenant (lib/counts.lua).
-- ARGV[1] job id, ARGV[2] 'done' or 'retry', ARGV[3] outcome for 'done' (applied, dropped or
-- dead), ARGV[4] score (ms) a retried job is due at, ARGV[5] TTL of the applied counter (s),
-- ARGV[6] the dead letter (JSON) when the outcome is dead, ARGV[7] the audience id, ARGV[8] its
-- tenant.
-- Returns 1 if this run counted the outcome (or re-queued the job), else 0.
--#include counts
local id = ARGV[1]
redis.call('ZREM', KEYS[2], id)
if ARGV[2] == 'retry' then
  -- Only while the job exists: one finished by another run must not come back as a ghost.
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[4]), id)
    return 1
  end
  return 0
end
redis.call('ZREM', KEYS[1], id)
redis.call('DEL', KEYS[4])
if redis.call('DEL', KEYS[3]) == 0 then
  return 0
end
local agg = aggregates(9, ARGV[8])
add_count(agg, KEYS[5], ARGV[3], 1)
rank_audience(agg, ARGV[7], KEYS[5], KEYS[8], redis_now_ms())
if ARGV[3] == 'dead' then
  redis.call('RPUSH', KEYS[7], ARGV[6])
elseif ARGV[3] == 'applied' then
  redis.call('INCR', KEYS[6])
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[5]))
  redis.call('INCR', KEYS[16])
  redis.call('EXPIRE', KEYS[16], tonumber(ARGV[5]))
end
return 1
