-- Claim due jobs for one worker in a single round trip, with arq's own rule for each id: it
-- starts only if it is still queued, due, and not already running on some replica.
-- KEYS[1] arq queue (sorted set). ARGV[1] arq in-progress key prefix, ARGV[2] in-progress TTL in
-- ms, ARGV[3..] job ids. In-progress keys are derived from the ids: a single Redis node is assumed.
-- Returns {id, score, id, score, ...} for the jobs claimed.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local claimed = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now_ms and redis.call('EXISTS', ARGV[1] .. id) == 0 then
    redis.call('SET', ARGV[1] .. id, '1', 'PX', ARGV[2])
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
  end
end
return claimed
