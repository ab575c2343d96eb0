-- Add a delivered message to its room's capped history and publish it, atomically,
-- so that history order and publish order are the same (STYLE.md example 8).
-- KEYS[1] history sorted set (score = seq); ARGV: seq, payload, cap, channel.
-- seq comes from the store (the system of record), which never reuses one.
local seq = tonumber(ARGV[1])
if redis.call('ZCOUNT', KEYS[1], seq, seq) == 0 then
  redis.call('ZADD', KEYS[1], seq, ARGV[2])
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return seq
