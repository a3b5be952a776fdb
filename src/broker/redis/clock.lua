-- Prepended to publish.lua and mark.lua: stream ids from one clock.
--
-- An id is `<ms>-<seq>`, after Redis's TIME, after the clock key (the newest id any stream
-- sharing it gave: ids keep increasing even if Redis's clock steps back), after the stream's
-- newest entry, and after `floor` (an id Redis lost, never to be given again).
local function parse(x)
  local d = string.find(x, '-', 1, true)
  return tonumber(string.sub(x, 1, d - 1)), tonumber(string.sub(x, d + 1))
end

-- Returns the new id, the stream's newest id before it ('0-0' if none) and TIME in ms.
local function next_id(stream, clock, floor)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local prev = '0-0'
  if #last > 0 then prev = last[1][1] end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local ms, seq = now, 0
  for _, f in ipairs({redis.call('GET', clock) or '0-0', prev, floor}) do
    local fm, fs = parse(f)
    if fm > ms or (fm == ms and fs >= seq) then ms, seq = fm, fs + 1 end
  end
  local id = string.format('%.0f-%.0f', ms, seq)
  redis.call('SET', clock, id)
  return id, prev, now
end

