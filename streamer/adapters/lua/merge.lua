-- Merge pre-aggregated per-cell sums (bulk backfill of settled history, not
-- ledgered). ARGV[2] is a JSON list of cells:
--   {c = hex, n = count, hi = {..per horizon}, lo = {..}, nf = {fam = n},
--    F = {fam = {..per horizon}}, nc = {cat = n}, C = {cat = v}, w = {how = v}, last = t}
-- (C and w are decayed with the profile horizon)
-- computed relative to the landmarks in the header, which must be the stored ones.
-- Returns {seq, cells}.
for i = 1, NH do
  if K[i] ~= H.hz[i][3] then
    return redis.error_reply('LANDMARK_MOVED ' .. H.hz[i][1])
  end
end
local cells = cjson.decode(ARGV[2])
for _, c in ipairs(cells) do
  local d = cell_delta(c.c)
  d.n = d.n + c.n
  for i = 1, NH do
    d.hi[i], d.lo[i] = dd_add(d.hi[i], d.lo[i], c.hi[i], c.lo[i])
  end
  for fam, n in pairs(c.nf) do d.nf[fam] = (d.nf[fam] or 0) + n end
  for cat, n in pairs(c.nc) do d.nc[cat] = (d.nc[cat] or 0) + n end
  for fam, tv in pairs(c.F) do add_vec(d.F, fam, tv) end
  for cat, v in pairs(c.C) do d.C[cat] = (d.C[cat] or 0.0) + v end
  for how, v in pairs(c.w) do d.w[how] = (d.w[how] or 0.0) + v end
  if d.last == nil or c.last > d.last then d.last = c.last end
end
local n = flush()
local seq = redis.call('HINCRBY', META, 'seq', 1)
local wm = tonumber(redis.call('HGET', META, 'watermark') or '0')
if H.max_t > wm then redis.call('HSET', META, 'watermark', fmt(H.max_t)) end
return {seq, n}
