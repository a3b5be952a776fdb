-- Appends a loss marker to a stream and publishes it: Redis lost entries of this stream that
-- some instance had seen or acknowledged. Every instance that reads the marker tells its
-- connections of that stream to resync, and a resume across it answers recovered:false.
--
-- KEYS: 1 stream, 2 id clock, 3 epoch. ARGV: 1 topic, 2 PUBLISH or SPUBLISH, 3 reason,
-- 4 the newest id the caller knows was given (lost or not): the clock moves past it, so no
-- id the lost entries had is given again, 5 MAXLEN (~), 6 a new epoch token (used if none).
-- Returns the marker's id.
redis.call('SET', KEYS[3], ARGV[6], 'NX')
local function parse(x)
  local d = string.find(x, '-', 1, true)
  return tonumber(string.sub(x, 1, d - 1)), tonumber(string.sub(x, d + 1))
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if #last > 0 then prev = last[1][1] end
local t = redis.call('TIME')
local ms, seq = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 0
for _, floor in ipairs({redis.call('GET', KEYS[2]) or '0-0', prev, ARGV[4]}) do
  local fm, fs = parse(floor)
  if fm > ms or (fm == ms and fs >= seq) then ms, seq = fm, fs + 1 end
end
local id = string.format('%.0f-%.0f', ms, seq)
redis.call('SET', KEYS[2], id)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], id, 'm', ARGV[3])
redis.call(ARGV[2], ARGV[1], '{"sid":"' .. id .. '","prev":"' .. prev .. '","m":"' .. ARGV[3] .. '"}')
return id
