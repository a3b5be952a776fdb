-- Appends one event to its stream and publishes it, atomically (an event is in both or in
-- neither), honouring an idempotency key. See wire.rs for the entry and message formats;
-- clock.lua (prepended) gives the id.
--
-- KEYS: 1 stream, 2 idempotency key (the stream again when there is none), 3 id clock, 4 epoch.
-- ARGV: 1 topic, 2 PUBLISH or SPUBLISH, 3 MAXLEN (~), 4 max age in ms (0: none),
--       5 key fingerprint ('' for none), 6 key window in ms, 7 event ULID,
--       8 '1' when the event was held during an outage and already reached the publishing
--         instance's clients under its ULID ('0' otherwise),
--       9 '1' to look for an entry with this ULID among the newest first (an append whose
--         reply was lost may have happened); '2' the same for an event the publishing instance
--         delivered to its clients under its ULID meanwhile: if the entry is there, a note
--         (field n = the ULID) follows it, so a resume across it is not promised,
--       10 users as a JSON list ('' for a broadcast or a channel event),
--       11 the frame without its opening '{"id":"<id>",', 12 a new epoch token, used if the
--       dataset has none (a fresh or emptied Redis).
-- Returns {'new', id} | {'found', id} (ARGV[9]) | {'dup', id} (the key) | {'conflict', ''}.
if ARGV[9] ~= '0' then
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1000)) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'i' and fields[i + 1] == ARGV[7] then
        if ARGV[9] == '2' then
          local note = next_id(KEYS[1], KEYS[3], '0-0')
          redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], note, 'n', ARGV[7])
        end
        return {'found', entry[1]}
      end
    end
  end
end
if ARGV[5] ~= '' then
  local prior = redis.call('GET', KEYS[2])
  if prior then
    local sep = string.find(prior, ' ', 1, true)
    if string.sub(prior, 1, sep - 1) == ARGV[5] then
      return {'dup', string.sub(prior, sep + 1)}
    end
    return {'conflict', ''}
  end
end
redis.call('SET', KEYS[4], ARGV[12], 'NX')
local id, prev, now = next_id(KEYS[1], KEYS[3], '0-0')
local frame = '{"id":"' .. id .. '",' .. ARGV[11]
local entry = {'f', frame, 'i', ARGV[7]}
local header = '{"sid":"' .. id .. '","prev":"' .. prev .. '","eid":"' .. ARGV[7] .. '"'
if ARGV[10] ~= '' then
  table.insert(entry, 'a'); table.insert(entry, ARGV[10])
  header = header .. ',"users":' .. ARGV[10]
end
if ARGV[8] == '1' then
  table.insert(entry, 'p'); table.insert(entry, '1')
  header = header .. ',"p":1'
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], id, unpack(entry))
local age = tonumber(ARGV[4])
if age > 0 then
  local cutoff = now - age
  if cutoff > 0 then redis.call('XTRIM', KEYS[1], 'MINID', cutoff) end
end
redis.call(ARGV[2], ARGV[1], header .. ',"f":' .. frame .. '}')
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[2], ARGV[5] .. ' ' .. id, 'PX', ARGV[6])
end
return {'new', id}
