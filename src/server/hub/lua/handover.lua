-- Hands the media of a room this instance carries to another live instance with a forwarding
-- unit and people in the room, as this instance shuts down: its people connect there at once
-- rather than after the sweep finds this instance dead.
-- KEYS: the room, the instances' heartbeats. ARGV: this instance, the room key, the TTL in ms.
-- Returns {0} if the room stays (not this instance's, or no one else can take it), or {1,
-- version, media record}.
local room, instances = KEYS[1], KEYS[2]
local me, rk, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local places, size, ver, media = room_of(room)
if owner_of(media) ~= me then
  return { 0 }
end
local heir = pick_owner(instances, places, now, ttl, me, false)
if not heir then
  return { 0 }
end
local new_ver, record = commit(room, rk, size, ver, places, {}, instances_in(places, {}), me, heir)
return { 1, new_ver, record }
