-- Shared GCRA rate limiter on Redis's own clock: reserve n consecutive slots in one round trip.
-- KEYS[1] limiter state: the next free slot (µs, Redis clock), KEYS[2] runtime config hash.
-- ARGV[1] n, ARGV[2] default rate per minute, ARGV[3] default burst, ARGV[4] jitter headroom µs.
-- The config hash (cohortsync-admin set-rate) overrides the defaults on every call, so a rate
-- change reaches every replica at its next acquisition. The state is the next slot rather than
-- GCRA's theoretical arrival time, so the tolerance of the rate in force applies at once: a
-- raised rate does not first sit out the old rate's (much longer) tolerance.
-- In any window W the slots granted number at most W / interval + tolerance / interval + 1. A
-- change commits a little after its slot, and late commits bunch up; ARGV[4] of the burst is kept
-- back for that, so committed changes stay within W * rate + burst.
-- Returns {µs from now until the first slot, µs between slots, rate per minute in force};
-- slot k (0-based) is first + k * interval. Rate 0 means unlimited: {0, 0, 0}.
local n = tonumber(ARGV[1])
local cfg = redis.call('HMGET', KEYS[2], 'rate_per_minute', 'burst')
local rate = tonumber(cfg[1] or ARGV[2]) or tonumber(ARGV[2])
local burst = tonumber(cfg[2] or ARGV[3]) or tonumber(ARGV[3])
if rate <= 0 then
  return {0, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 60000000 / rate
local tolerance = math.max(0, (burst - 1) * interval - tonumber(ARGV[4]))
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now - tolerance then
  slot = now - tolerance
end
local first = slot - now
if first < 0 then
  first = 0
end
local after = slot + n * interval
-- Once the next slot is more than the tolerance in the past the state no longer matters.
local ttl_ms = math.ceil(math.max(0, after + tolerance - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', ttl_ms)
return {math.floor(first), math.floor(interval), rate}
