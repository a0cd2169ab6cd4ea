-- Renew the leases of the jobs one replica is running (see claim.lua). A lease that finished
-- (removed by finish.lua) is not brought back.
-- KEYS[1] leases (sorted set). ARGV[1] lease in ms, ARGV[2..] job ids.
-- Returns how many leases were renewed.
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', until_ms, ARGV[i])
end
return renewed
