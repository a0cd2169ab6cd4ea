-- Hand out the next version for an audience (used by clear and delete).
-- KEYS[1] versions hash. ARGV[1] audience id. Returns the version as a decimal string.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local v = string.format('%.0f', math.max(last + 1, now_us))
redis.call('HSET', KEYS[1], ARGV[1], v)
return v
