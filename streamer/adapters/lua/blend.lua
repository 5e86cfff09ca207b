-- Read-only: the top of a blend of two horizons' rankings at one resolution.
-- KEYS[1] is the key prefix; ARGV = long horizon, short horizon, resolution,
-- long share, k.
-- Each ranking is divided by its own total, so a cell's blend is
-- share * L / sum(L) + (1 - share) * S / sum(S): its share of the area's
-- decayed harm, mixed (the landmark factors cancel, so no time is needed).
-- Returns {seq, then cell, score pairs, best first} (scores as text).
local P = KEYS[1]
local long = P .. ':rank:' .. ARGV[1] .. ':' .. ARGV[3]
local short = P .. ':rank:' .. ARGV[2] .. ':' .. ARGV[3]
local share = tonumber(ARGV[4])
local k = tonumber(ARGV[5])
local function total(key)
  local t = 0
  local rows = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for i = 2, #rows, 2 do t = t + tonumber(rows[i]) end
  return t
end
local out = {redis.call('HGET', P .. ':meta', 'seq') or '0'}
local tl, ts = total(long), total(short)
local wl = 0
local ws = 0
if tl > 0 then wl = share / tl end
if ts > 0 then ws = (1 - share) / ts end
if wl == 0 and ws == 0 then return out end
local rows = redis.call('ZUNION', 2, long, short, 'WEIGHTS',
  string.format('%.17g', wl), string.format('%.17g', ws), 'WITHSCORES')
-- ascending: the best are last
local i = #rows - 1
while i >= 1 and (#out - 1) / 2 < k do
  out[#out + 1] = rows[i]
  out[#out + 1] = rows[i + 1]
  i = i - 2
end
return out
