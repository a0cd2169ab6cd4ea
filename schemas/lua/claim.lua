-- Claim due jobs for one replica in a single round trip. A running job leaves arq's queue for
-- the leases sorted set, scored with the Redis time (ms) at which its lease lapses; its replica
-- renews the lease while the job runs. So the queue holds only jobs no replica holds, and a claim
-- costs O(room), however many jobs other replicas are running. A lease that lapsed (its replica
-- died, or lost Redis for longer than a lease) puts its job back at the head of the queue here,
-- a bounded number per call, so a dead replica's jobs run again within about one lease.
-- KEYS[1] arq queue (sorted set), KEYS[2] leases (sorted set).
-- ARGV[1] most jobs to claim, ARGV[2] lease in ms, ARGV[3] most lapsed leases to return.
-- Returns {id, score, id, score, ...} for the jobs claimed.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(lapsed) do
  redis.call('ZREM', KEYS[2], id)
  -- Due at once, ahead of anything queued since.
  redis.call('ZADD', KEYS[1], 0, id)
end
local claimed = {}
local room = tonumber(ARGV[1])
if room <= 0 then
  return claimed
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'WITHSCORES', 'LIMIT', 0, room)
local until_ms = now_ms + tonumber(ARGV[2])
for i = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[i])
  redis.call('ZADD', KEYS[2], until_ms, due[i])
  claimed[#claimed + 1] = due[i]
  claimed[#claimed + 1] = due[i + 1]
end
return claimed
