-- Read-only: where cells stand in the rankings (for dispatch's /v1/risk).
-- KEYS[1] is the key prefix; ARGV = number of horizons H, the H horizon
-- names, then pairs of resolution and cell.
-- Returns {seq, landmark per horizon ('' if none), then per pair and
-- horizon: reverse rank (-1 if unranked), stored score ('' if none), ranking size}.
local P = KEYS[1]
local nh = tonumber(ARGV[1])
local meta = P .. ':meta'
local out = {redis.call('HGET', meta, 'seq') or '0'}
for i = 1, nh do
  out[#out + 1] = redis.call('HGET', meta, 'k:' .. ARGV[1 + i]) or ''
end
for j = 2 + nh, #ARGV, 2 do
  local res, cell = ARGV[j], ARGV[j + 1]
  for i = 1, nh do
    local key = P .. ':rank:' .. ARGV[1 + i] .. ':' .. res
    out[#out + 1] = redis.call('ZREVRANK', key, cell) or -1
    out[#out + 1] = redis.call('ZSCORE', key, cell) or ''
    out[#out + 1] = redis.call('ZCARD', key)
  end
end
return out
