-- Puts back what this instance knows of a room (its own people, and those it heard of on
-- other instances) wherever Redis has the place free: after Redis restarted empty, or after
-- this instance was swept while cut off. Redis keeps what it has.
-- KEYS: the room, the instances' heartbeats, this instance's rooms.
-- ARGV: this instance, the room key, the room size, the heartbeat TTL in ms, then place,
-- content, place, content, ...
-- Returns {'ok', version, size, place, content, ...} with every occupied place.
local room, instances, my_rooms = KEYS[1], KEYS[2], KEYS[3]
local me, rk, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4])
local now = now_ms()
local places, size, ver = room_of(room)
size = size or tonumber(ARGV[3])
local told = instances_in(places, {})
local changed = {}
for k = 5, #ARGV, 2 do
  local i, c = tonumber(ARGV[k]), ARGV[k + 1]
  local _, instance = parse(c)
  if i < size and not places[i] then
    if instance ~= me and not redis.call('ZSCORE', instances, instance) then
      -- Redis lost its heartbeats too: taken to be alive now, swept after the TTL if not.
      redis.call('ZADD', instances, now, instance)
    end
    if instance == me or alive(instances, instance, now, ttl) then
      places[i] = c
      changed[i] = c
      told[instance] = true
      -- So that this instance's death frees the place too. If the person left meanwhile, their
      -- instance hears of them here and takes them out again.
      redis.call('SADD', 'duo:inst:' .. instance .. ':rooms', rk)
    end
  end
end
if instances_in(places, {})[me] then
  redis.call('SADD', my_rooms, rk)
end
local new_ver = string.format('%.0f', ver)
if next(changed) then
  new_ver = commit(room, rk, size, ver, places, changed, told, me)
end
return listed(places, size, { 'ok', new_ver, size })
