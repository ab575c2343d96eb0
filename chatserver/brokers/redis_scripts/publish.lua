-- Add a delivered message to its room's capped history and publish it, atomically,
-- so that history order and publish order are the same (docs/architecture.md § Ports).
-- KEYS[1] history sorted set (score = seq); ARGV: seq, payload, cap, channel, and
-- publish ('0' only adds to history: rebuilding it from the store).
-- seq comes from the store (the system of record), which never reuses one.
-- Idempotent by seq: a message already in history (or older than all of a full
-- history) is not published again, so a node may republish what it is unsure of
-- (a retried send, a hole it filled from the store) without anyone seeing it twice.
local seq = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
if redis.call('ZCOUNT', KEYS[1], seq, seq) > 0 then
  return 0
end
if redis.call('ZCARD', KEYS[1]) >= cap then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] and seq < tonumber(first[2]) then
    return 0
  end
end
redis.call('ZADD', KEYS[1], seq, ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(cap + 1))
if ARGV[5] ~= '0' then
  redis.call('PUBLISH', ARGV[4], ARGV[2])
end
return seq
