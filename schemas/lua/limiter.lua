-- Shared GCRA rate limiter on Redis's own clock: reserve n consecutive slots in one round trip.
-- KEYS[1] limiter state (theoretical arrival time, µs), KEYS[2] runtime config hash.
-- ARGV[1] n, ARGV[2] default rate per minute, ARGV[3] default burst.
-- The config hash (cohortsync-admin set-rate) overrides the defaults on every call, so a rate
-- change reaches every replica at its next acquisition.
-- Returns {µs from now until the first slot, µs between slots, rate per minute in force};
-- slot k (0-based) is first + k * interval. Rate 0 means unlimited: {0, 0, 0}.
local n = tonumber(ARGV[1])
local cfg = redis.call('HMGET', KEYS[2], 'rate_per_minute', 'burst')
local rate = tonumber(cfg[1] or ARGV[2])
local burst = tonumber(cfg[2] or ARGV[3])
if rate <= 0 then
  return {0, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 60000000 / rate
local tolerance = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local first = tat - tolerance - now
if first < 0 then
  first = 0
end
local new_tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {math.floor(first), math.floor(interval), rate}
