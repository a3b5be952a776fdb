-- Where a stream stands, for an instance that (re)connects: the dataset's epoch (created if
-- missing), the stream's newest id, whether the instance's cursor entry is still there, and
-- the newest id Redis ever trimmed from it.
--
-- KEYS: 1 stream, 2 epoch. ARGV: 1 cursor ('' for none), 2 a new epoch token.
-- Returns {epoch, newest id or '', 1 if the cursor entry exists else 0, max deleted id}.
redis.call('SET', KEYS[2], ARGV[2], 'NX')
local epoch = redis.call('GET', KEYS[2])
local newest, present, deleted = '', 0, '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then newest = last[1][1] end
  if ARGV[1] ~= '' then present = #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) end
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
  end
end
return {epoch, newest, present, deleted}
