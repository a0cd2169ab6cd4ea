-- Claim due jobs for one replica in a single round trip: a job starts only if it is still
-- queued, due, and no live replica holds a lease on it. A lease is a score in the leases sorted
-- set (the Redis time in ms at which it lapses), renewed by its holder while the job runs, so the
-- jobs of a replica that died are claimable again within one lease, whatever the job timeout.
-- Held ids are skipped, not counted: a head of the queue held by others never starves a replica.
-- KEYS[1] arq queue (sorted set), KEYS[2] leases (sorted set).
-- ARGV[1] most jobs to claim, ARGV[2] lease in ms, ARGV[3..] candidate job ids, oldest first.
-- Returns {id, score, id, score, ...} for the jobs claimed.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local room = tonumber(ARGV[1])
local until_ms = now_ms + tonumber(ARGV[2])
local claimed = {}
-- Leases that lapsed long ago belong to jobs that were re-run and finished elsewhere.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms - 60000)
for i = 3, #ARGV do
  if #claimed >= 2 * room then
    break
  end
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now_ms then
    local held = redis.call('ZSCORE', KEYS[2], id)
    if not held or tonumber(held) <= now_ms then
      redis.call('ZADD', KEYS[2], until_ms, id)
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = score
    end
  end
end
return claimed
