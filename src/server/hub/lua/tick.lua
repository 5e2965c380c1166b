-- Every second, on every instance: this instance's heartbeat, the sweep of instances silent
-- past the TTL (a few at a time), whose people are freed and announced as gone, and a look at
-- whether Redis still has some of this instance's rooms. A swept instance's rooms include those
-- whose media it carried, which go to another.
-- KEYS: the instances' heartbeats. ARGV: this instance, the TTL in ms, 1 if it beat before
-- (else 0), 1 if it has a forwarding unit (else 0), then room keys of rooms where it has
-- people.
-- Returns {1 if Redis did not know this instance (it restarted, or swept it), instances swept,
-- room key, ...} with the rooms of ARGV that Redis does not have.
local instances = KEYS[1]
local me, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local absent = redis.call('ZADD', instances, now, me)
local mine = ARGV[4] == '1'
if mine then
  redis.call('SADD', 'duo:units', me)
end
-- `duo:epoch` lasts as long as Redis keeps its data. Missing once this instance beat before:
-- Redis lost everything, rooms of live instances included. Until each had a heartbeat's time
-- to put its rooms back, a join refuses a room Redis does not have rather than take it for a
-- new one.
if redis.call('SET', 'duo:epoch', now, 'NX') and ARGV[3] == '1' then
  redis.call('SET', 'duo:recovering', '1', 'PX', ttl)
end
local dead = redis.call('ZRANGEBYSCORE', instances, '-inf', '(' .. (now - ttl), 'LIMIT', 0, 4)
for _, d in ipairs(dead) do
  local their_rooms = 'duo:inst:' .. d .. ':rooms'
  for _, rk in ipairs(redis.call('SMEMBERS', their_rooms)) do
    local room = 'duo:room:' .. rk
    local places, size, ver, media = room_of(room)
    local told = instances_in(places, {})
    local changed = {}
    for i, c in pairs(places) do
      local _, instance = parse(c)
      if instance == d then
        places[i] = nil
        changed[i] = false
      end
    end
    -- Its media goes to a live instance of the room (a room with only dead ones left keeps the
    -- record: the next join hands it on).
    local moved = owner_of(media) == d and next(places) and pick_owner(instances, places, now, ttl, me, mine)
    if moved then
      media = moved
    end
    if next(changed) or moved then
      commit(room, rk, size, ver, places, changed, told, d, media)
    end
  end
  redis.call('DEL', their_rooms)
  redis.call('ZREM', instances, d)
  redis.call('SREM', 'duo:units', d)
end
local reply = { absent, #dead }
for k = 5, #ARGV do
  if redis.call('EXISTS', 'duo:room:' .. ARGV[k]) == 0 then
    table.insert(reply, ARGV[k])
  end
end
return reply
