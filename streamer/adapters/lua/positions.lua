-- Read-only: where cells stand in the rankings (for dispatch's /v1/risk).
-- KEYS[1] is the key prefix; ARGV = number of horizons H, the H horizon
-- names, then pairs of resolution and cell.
-- Returns {seq, landmark per horizon ('' if none), then per pair and
-- horizon: reverse rank (-1 if unranked), stored score ('' if none), ranking size}.
local P = KEYS[1]
local nh = tonumber(ARGV[1])
local meta = P .. ':meta'
-- (an unranked cell's size is not read: 0)
local fields = {'seq'}
for i = 1, nh do fields[i + 1] = 'k:' .. ARGV[1 + i] end
local head = redis.call('HMGET', meta, unpack(fields))
local out = {head[1] or '0'}
for i = 1, nh do out[i + 1] = head[i + 1] or '' end
for j = 2 + nh, #ARGV, 2 do
  local res, cell = ARGV[j], ARGV[j + 1]
  for i = 1, nh do
    local key = P .. ':rank:' .. ARGV[1 + i] .. ':' .. res
    local score = redis.call('ZSCORE', key, cell)
    if score then
      out[#out + 1] = redis.call('ZREVRANK', key, cell)
      out[#out + 1] = score
      out[#out + 1] = redis.call('ZCARD', key)
    else
      out[#out + 1] = -1
      out[#out + 1] = ''
      out[#out + 1] = 0
    end
  end
end
return out
