-- Upgrade (cohortsync-admin migrate): move the newest entries of one audience's backlog of the
-- layout before namespaces onto the head of its backlog in the namespace, with the backlog
-- total they count in. Taken from the old tail and put at the new head, batch after batch, the
-- entries keep their order and stay ahead of any accepted since (their versions are older),
-- however often this is interrupted and run again.
-- KEYS[1] old backlog, KEYS[2] old backlog total, KEYS[3] backlog, KEYS[4] backlog total,
-- KEYS[5] active list, KEYS[6] active set.
-- ARGV[1] audience id, ARGV[2] most entries to move (unpack() is bounded: at most a few thousand).
-- Returns the number of entries moved, 0 once the old backlog is gone.
local moved = redis.call('RPOP', KEYS[1], tonumber(ARGV[2]))
if not moved then
  return 0
end
-- RPOP gives the newest first; LPUSH of that sequence leaves them oldest first.
redis.call('LPUSH', KEYS[3], unpack(moved))
redis.call('DECRBY', KEYS[2], #moved)
redis.call('INCRBY', KEYS[4], #moved)
if redis.call('SADD', KEYS[6], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[5], ARGV[1])
end
return #moved
