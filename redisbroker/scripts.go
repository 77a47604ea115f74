package redisbroker

import "github.com/redis/go-redis/v9"

// The broker owns two keys, both tagged {Key} so that they share one Redis
// Cluster slot and one script may touch both:
//
//	{notify}:meta  hash: epoch, seq (last seq given), sub (raw entries after it)
//	{notify}:log   stream: one entry per message, ID "<seq>-<sub>"
//
// A message published by Broadcast gets ID "<seq>-0" with seq one above the
// last; a raw one (NotifyText) gets "<seq>-<sub>" with sub counting up from
// 1 after the last seq. Stream order is therefore seq order, raw messages
// take their place in it without using a seq, and History can ask XRANGE
// for exactly the seq range it wants.
//
// Invariant: the log holds only entries of the epoch in meta, and every
// epoch starts at seq 1. Whoever finds meta missing (a new, flushed or
// restarted Redis) creates a new epoch and deletes any log left over; the
// scripts below are the only writers, and Redis runs each atomically.

// openLua reads meta, creating a new epoch (ARGV[1]) if there is none. It
// leaves epoch, seq and sub in locals for the script that includes it.
const openLua = `
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'sub')
local epoch, seq, sub = m[1], tonumber(m[2]) or 0, tonumber(m[3]) or 0
local function fresh()
  epoch, seq, sub = ARGV[1], 0, 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', '0', 'sub', '0')
end
if not epoch then fresh() end
`

// publishScript appends a batch of messages, in order. KEYS: meta, log.
// ARGV: candidate epoch, history length, then five per message: "1" if
// raw, topic, user, client, body. It returns each message's seq (0 for a
// raw one). The entries' time t comes from Redis's clock (microseconds),
// read once per batch, so the age limit does not depend on the nodes'
// clocks agreeing.
var publishScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end -- Redis 5: allow TIME before writes
` + openLua + `
local now = redis.call('TIME')
local t = now[1] .. string.format('%06d', tonumber(now[2]))
local out = {}
for i = 3, #ARGV, 5 do
  local raw = ARGV[i] == '1'
  if raw then sub = sub + 1 else seq, sub = seq + 1, 0 end
  local f = {KEYS[2], 'MAXLEN', '~', ARGV[2], string.format('%d-%d', seq, sub), 'e', epoch, 't', t, 'b', ARGV[i+4]}
  if ARGV[i+1] ~= '' then f[#f+1] = 'p'; f[#f+1] = ARGV[i+1] end
  if ARGV[i+2] ~= '' then f[#f+1] = 'u'; f[#f+1] = ARGV[i+2] end
  if ARGV[i+3] ~= '' then f[#f+1] = 'c'; f[#f+1] = ARGV[i+3] end
  redis.call('XADD', unpack(f))
  if raw then out[#out+1] = 0 else out[#out+1] = seq end
end
redis.call('HSET', KEYS[1], 'seq', string.format('%d', seq), 'sub', string.format('%d', sub))
return out
`)

// syncScript tells a delivery loop where the stream stands. KEYS: meta, log.
// ARGV: candidate epoch; the epoch the loop is in ("" for none); the last
// seq it saw there; the ID of the last entry it read and that entry's t (""
// if unknown). It returns {epoch, seq, sub, t of the newest entry or ""}.
//
// If Redis lost acknowledged writes (a failover to a replica that had not
// received them, a restart from an older RDB or AOF), the same seqs would be
// given to different messages and a loop waiting after its last ID would
// skip the new ones. The script detects it from the loop's side: meta's seq
// is below what the loop saw, or the loop's last entry is missing while an
// older one is retained, or it is there with another t (a different message
// under the same ID). Then it starts a new epoch, and clients are told about
// the gap.
var syncScript = redis.NewScript(openLua + `
local function field(e, name)
  if not e then return '' end
  for i = 1, #e[2], 2 do
    if e[2][i] == name then return e[2][i+1] end
  end
  return ''
end
if epoch == ARGV[2] then
  local lost = seq < tonumber(ARGV[3])
  if not lost and ARGV[5] ~= '' then
    local last = redis.call('XRANGE', KEYS[2], ARGV[4], ARGV[4])[1]
    if last then
      lost = field(last, 't') ~= ARGV[5]
    else
      lost = redis.call('XRANGE', KEYS[2], '-', ARGV[4], 'COUNT', 1)[1] ~= nil
    end
  end
  if lost then fresh() end
end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
return {epoch, seq, sub, field(top, 't')}
`)
