-- Upgrade (cohortsync-admin migrate): move dead letters of the layout before namespaces to the
-- namespace's list, in order, each rewritten for it (its job id). A letter leaves the old head in
-- the same step it is appended: run again, each is moved once.
-- KEYS[1] old dead letters, KEYS[2] dead letters.
-- ARGV pairs: a letter as read from the old head, in order, and the letter to append for it.
-- Returns the number moved; fewer than given when the old head changed since it was read.
local moved = 0
for i = 1, #ARGV, 2 do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then
    break
  end
  redis.call('LPOP', KEYS[1])
  redis.call('RPUSH', KEYS[2], ARGV[i + 1])
  moved = moved + 1
end
return moved
