-- Puts back what this instance knows of a room (its own people, and those it heard of on
-- other instances) wherever Redis has the place free: after Redis lost the room (restarted
-- empty, flushed, evicted or deleted its key), or after this instance was swept while cut off.
-- Redis keeps what it has.
-- KEYS: the room, the instances' heartbeats.
-- ARGV: this instance, the room key, the room size, the heartbeat TTL in ms, the media record
-- it knows ('-' for none), then place, content, place, content, ...
-- Returns {'ok', version, size, media record or '-', place, content, ...} with every occupied
-- place.
local room, instances = KEYS[1], KEYS[2]
local me, rk, ttl, known_media = ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local places, size, ver, media = room_of(room)
size = size or tonumber(ARGV[3])
local told = instances_in(places, {})
local changed = {}
put_back(instances, size, places, changed, told, me, now, ttl, ARGV, 6)
local new_ver = string.format('%.0f', ver)
local media_back = not media and known_media ~= '-' and next(places) ~= nil
if media_back then
  -- The record, as it was: the owner's epoch is unchanged, and no one moves.
  media = owner_back(instances, known_media, now)
end
if next(changed) or media_back then
  new_ver, media = commit(room, rk, size, ver, places, changed, told, me, media)
else
  -- Nothing was missing from the room, but its instances' sets may have been.
  index(rk, {}, places, owner_of(media))
end
return listed(places, size, { 'ok', new_ver, size, media or '-' })
