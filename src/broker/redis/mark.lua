-- Appends a loss marker to a stream and publishes it: Redis lost entries of this stream that
-- some instance had seen or acknowledged. Every instance that reads the marker tells its
-- connections of that stream to resync, and a resume across it answers recovered:false.
--
-- KEYS: 1 stream, 2 id clock, 3 epoch. ARGV: 1 topic, 2 PUBLISH or SPUBLISH, 3 reason,
-- 4 the newest id the caller knows was given (lost or not): the clock moves past it, so no
-- id the lost entries had is given again, 5 MAXLEN (~), 6 a new epoch token (used if none).
-- Returns the marker's id. When the newest entry is a marker already (another instance
-- noticed the same loss first), it only moves the clock past ARGV[4] and returns that one:
-- every instance would otherwise tell its connections once per instance that noticed.
redis.call('SET', KEYS[3], ARGV[6], 'NX')
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 and newest[1][2][1] == 'm' then
  local cm, cs = parse(redis.call('GET', KEYS[2]) or '0-0')
  local fm, fs = parse(ARGV[4])
  if fm > cm or (fm == cm and fs > cs) then redis.call('SET', KEYS[2], ARGV[4]) end
  return newest[1][1]
end
local id, prev = next_id(KEYS[1], KEYS[2], ARGV[4])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], id, 'm', ARGV[3])
redis.call(ARGV[2], ARGV[1], '{"sid":"' .. id .. '","prev":"' .. prev .. '","m":"' .. ARGV[3] .. '"}')
return id
