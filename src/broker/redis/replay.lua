-- One page of what a resume from `since` needs to know about one stream, read atomically.
--
-- KEYS: 1 stream. ARGV: 1 since (a valid stream id), 2 where this page starts: `since` for the
-- first page, else the last id the previous page returned, 3 most entries to return.
-- Returns {present, deleted, unsure, entries}: present is 1 if the entry `since` is in this
-- stream (first page only: it proves `since` was given by this dataset and not lost); deleted is
-- the newest id ever trimmed from the stream (every entry after the page's start is here iff
-- deleted <= the start, or for the first page `since` is present); unsure is 1 if an entry of
-- the page was held during an outage (the client may hold it under another id), is a note
-- saying so of an earlier entry, or is a loss marker; entries are those after the page's start
-- (at most ARGV[3]; a full page means there may be more).
local present, deleted, unsure = 0, '0-0', 0
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '0-0', 0, {}} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
local first = ARGV[1] == ARGV[2]
local count = tonumber(ARGV[3])
local entries
if first then
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', count + 1)
  if #entries > 0 and entries[1][1] == ARGV[1] then
    present = 1
    table.remove(entries, 1)
  elseif #entries > count then
    table.remove(entries)
  end
else
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', count)
end
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'p' or fields[i] == 'm' or fields[i] == 'n' then unsure = 1 end
  end
end
return {present, deleted, unsure, entries}
