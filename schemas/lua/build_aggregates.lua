-- Upgrade (cohortsync-admin migrate): bring audiences whose counters were written before the
-- aggregates existed into them (lib/counts.lua): each stats hash adds its counters into the
-- totals once (it is marked in the same step), and the audience is ranked by its pending. Run
-- again, or beside live scripts that do the same on first touch, nothing counts twice.
-- KEYS[1..3] totals, audiences by pending, idle audiences, then per audience: its backlog, its
-- stats hash. ARGV: the audience ids. Returns how many stats hashes joined the totals.
--#include counts
local agg = {totals = KEYS[1], pending = KEYS[2], idle = KEYS[3]}
local now_ms = redis_now_ms()
local joined = 0
for i = 1, #ARGV do
  local backlog, stats = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  if redis.call('HEXISTS', stats, 'in_totals') == 0 then
    joined = joined + 1
  end
  rank_audience(agg, ARGV[i], stats, backlog, now_ms)
end
return joined
