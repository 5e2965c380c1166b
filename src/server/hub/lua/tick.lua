-- Every second, on every instance: this instance's heartbeat, and the sweep of instances
-- silent past the TTL (a few at a time), whose people are freed and announced as gone.
-- KEYS: the instances' heartbeats. ARGV: this instance, the TTL in ms.
-- Returns {1 if Redis did not know this instance (it restarted, or swept it), instances swept}.
local instances = KEYS[1]
local me, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local absent = redis.call('ZADD', instances, now, me)
local dead = redis.call('ZRANGEBYSCORE', instances, '-inf', '(' .. (now - ttl), 'LIMIT', 0, 4)
for _, d in ipairs(dead) do
  local their_rooms = 'duo:inst:' .. d .. ':rooms'
  for _, rk in ipairs(redis.call('SMEMBERS', their_rooms)) do
    local room = 'duo:room:' .. rk
    local places, size, ver = room_of(room)
    local told = instances_in(places, {})
    local changed = {}
    for i, c in pairs(places) do
      local _, instance = parse(c)
      if instance == d then
        places[i] = nil
        changed[i] = false
      end
    end
    if next(changed) then
      commit(room, rk, size, ver, places, changed, told, d)
    end
  end
  redis.call('DEL', their_rooms)
  redis.call('ZREM', instances, d)
end
return { absent, #dead }
