-- Settle a login (issue 14): KEYS[1..ARGV[1]] are cleared (the account-and-address
-- failures of a right password), the rest are given one attempt back (the address's
-- failures). A counter that has expired is left alone, never created.
local clear = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if i <= clear then
    redis.call('DEL', key)
  elseif tonumber(redis.call('HGET', key, 'n') or '0') > 0 then
    redis.call('HINCRBY', key, 'n', -1)
  end
end
return 1
