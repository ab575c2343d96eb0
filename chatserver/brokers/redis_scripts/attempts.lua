-- Attempt budgets (login failures, per-address joins/logins/hellos), shared by every
-- node (issue 14): checked and counted in one step, so parallel requests cannot all
-- slip under the limit. Each key is a fixed window: hash {n, reset} with reset in the
-- caller's clock (injectable in tests); PEXPIRE only collects keys nobody uses.
-- KEYS[i] a counter; ARGV[1] now_ms, then per key: limit, window_ms.
-- Returns 1 and counts one on every key when all are under their limit; else 0 and
-- counts nothing (a locked-out caller does not extend its own lock).
local now = tonumber(ARGV[1])
local live = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local reset = tonumber(redis.call('HGET', key, 'reset') or '0')
  local n = 0
  live[i] = reset > now
  if live[i] then
    n = tonumber(redis.call('HGET', key, 'n') or '0')
  end
  if n >= limit then
    return 0
  end
end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i + 1])
  if live[i] then
    redis.call('HINCRBY', key, 'n', 1)
  else
    redis.call('HSET', key, 'n', 1, 'reset', now + window)
  end
  redis.call('PEXPIRE', key, window)
end
return 1
