-- Forget audiences idle for long enough (Keys.audiences_idle): their counters, version and clear.
-- The totals keep what they counted. The caller (core/scripts/reclaim.py) read the oldest idle
-- audiences just before and declares their keys; each is checked again here, so one that got
-- work meanwhile (or whose backlog is not empty) keeps everything.
-- KEYS[1..3] totals, audiences by pending, idle audiences (lib/counts.lua), KEYS[4] versions
-- hash, KEYS[5] cleared hash, then per audience: its backlog, its stats hash.
-- ARGV[1] how long (ms) an audience must have been idle, then the audience ids.
-- Returns how many audiences were forgotten.
--#include counts
local agg = {totals = KEYS[1], pending = KEYS[2], idle = KEYS[3]}
local cutoff = redis_now_ms() - tonumber(ARGV[1])
local forgotten = 0
for i = 2, #ARGV do
  local audience = ARGV[i]
  local backlog, stats = KEYS[4 + 2 * (i - 1)], KEYS[5 + 2 * (i - 1)]
  local since = redis.call('ZSCORE', agg.idle, audience)
  if since and tonumber(since) <= cutoff and not redis.call('ZSCORE', agg.pending, audience)
      and redis.call('LLEN', backlog) == 0 then
    forget_audience(agg, audience, stats, KEYS[4], KEYS[5])
    forgotten = forgotten + 1
  end
end
return forgotten
