-- Upgrade (cohortsync-admin migrate), its last step: merge the active audiences of the layout
-- before namespaces into the namespace's, add what is left of the old backlog total (what the
-- backlogs moved took theirs along), and drop what live processes rebuild. The old total and
-- active list are what the edge and the worker look for to warn that an upgrade is pending, so
-- they go last, in one step.
-- KEYS[1] old active list, KEYS[2] old active set, KEYS[3] active list, KEYS[4] active set,
-- KEYS[5] old backlog total, KEYS[6] backlog total, then old keys to drop (rate limiter state,
-- worker registry, applied-per-second counters).
-- Returns {audiences added to the active list, backlog total added, keys dropped}.
local added = 0
for _, audience in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if redis.call('SADD', KEYS[4], audience) == 1 then
    redis.call('RPUSH', KEYS[3], audience)
    added = added + 1
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
local total = tonumber(redis.call('GETDEL', KEYS[5]) or '0')
if total ~= 0 then
  redis.call('INCRBY', KEYS[6], total)
end
local dropped = 0
for k = 7, #KEYS do
  dropped = dropped + redis.call('DEL', KEYS[k])
end
return {added, total, dropped}
