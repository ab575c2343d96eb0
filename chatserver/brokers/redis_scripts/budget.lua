-- One participant's send budget, shared by every node (SECURITY.md FL-03, SEC-19):
-- a sliding window of message ids in a sorted set scored by time.
-- KEYS[1] the participant's window; ARGV: now_ms, window_ms, limit, message id.
-- A resend of an id already counted is free (the core answers it with its first outcome).
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 1
