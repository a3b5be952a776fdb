-- What a resume from `since` needs to know about one stream, read atomically.
--
-- KEYS: 1 stream. ARGV: 1 since (a valid stream id), 2 most entries to return.
-- Returns {present, deleted, unsure, entries}: present is 1 if the entry `since` is in this
-- stream (it proves `since` was given by this dataset and not lost); deleted is the newest id
-- ever trimmed from the stream (every entry after `since` is here iff deleted <= since or
-- `since` is present); unsure is 1 if an entry after `since` was held during an outage (the
-- client may hold it under another id), is a note saying so of an earlier entry, or is a
-- loss marker; entries are those after `since`
-- (at most ARGV[2] + 1, so the caller can tell there are too many).
local present, deleted, unsure = 0, '0-0', 0
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '0-0', 0, {}} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]) + 2)
if #entries > 0 and entries[1][1] == ARGV[1] then
  present = 1
  table.remove(entries, 1)
end
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'p' or fields[i] == 'm' or fields[i] == 'n' then unsure = 1 end
  end
end
return {present, deleted, unsure, entries}
