-- Merge pre-aggregated per-cell sums (bulk backfill of settled history, not
-- ledgered). Header also has labels = {"f:FAMILY" | "c:CATEGORY", ...} and
-- max_t = newest event time; ARGV[2..] are pairs of cell id and its binary
-- delta (see add_cell), computed relative to the landmarks in the header,
-- which must be the stored ones.
-- Returns {seq, cells}.
for i = 1, NH do
  if K[i] ~= H.hz[i][3] then
    return redis.error_reply('LANDMARK_MOVED ' .. H.hz[i][1])
  end
end
local slots = label_slots(H.labels)
for j = 2, #ARGV, 2 do
  add_cell(ARGV[j], ARGV[j + 1], slots)
end
local n = flush()
local seq = redis.call('HINCRBY', META, 'seq', 1)
local wm = tonumber(redis.call('HGET', META, 'watermark') or '0')
if H.max_t > wm then redis.call('HSET', META, 'watermark', fmt(H.max_t)) end
return {seq, n}
