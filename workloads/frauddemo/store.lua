#!lua name=frauddemo
--[[
FraudDemo store library: every data write goes through these functions, which change the data and
append the operation to this store's op log in one atomic call. Remote operations are merged by
fd_merge, which never appends to the op log (no echo) and stores the link checkpoint in the same call.

Key schema (data keys are replicated, `fd:` keys are local to one store):
  h:<name>  LWW hash: field -> value, and "~field" -> its tag "<clock16>:<replica>" (a tag without a
            value is a deletion's tombstone; field names never start with "~")
  s:<name>  add-wins set: add tag -> element   x:<name>  its removed tags (tombstones)
  c:<name>  counter: "p:<replica>"/"n:<replica>" -> that replica's monotone part
  b:<name>  immutable blob, set once, never replaced, optional TTL; `b:photo:<sha256 hex>` is
            content-addressed: fd_write refuses bytes whose SHA-256 is not the key's (BLOBHASH), and
            any blob write whose bytes differ from the stored ones (BLOBEXISTS)
  fd:meta   replica id, epoch, hlc (hybrid logical clock, 16-digit microseconds), seq (last op-log
            sequence number), retention (op-log entries kept)
  fd:log    op log (stream): c=clock s=seq o=msgpack ops      fd:ckpt:<src>  link checkpoint: epoch, seq, id,
            applied (entries merged: a witness that none is merged twice)
  fd:link:<src>  link status written by the syncer that pulls from <src>

Logged operations (msgpack arrays; all idempotent and commutative, so any order or duplicate converges):
  {"h", key, {field, value, ...}}   {"hd", key, {field...}}   {"sa", key, element, tag}
  {"sr", key, {tag...}}       {"c", key, part, total}   {"br", key, ttl_ms}
  "br" is a blob by reference: the bytes stay out of the op log (a 50 KB photo per entry would fill
  the store's memory with log); the target's syncer copies the blob from the source (fd_blobs) before
  it merges the batch that refers to it. {"b", key, value, ttl_ms} (inline bytes, written by
  library versions before 16) is still merged.

Local-only operations, accepted by fd_write and never logged:
  {"e", "fd:ev:<name>", {field, value, ...}}  append an event to this store's event stream <name>, with
            the write's clock as field "c" (consumers read every store's streams: events never replicate)
  {"hn", key, {field, value, ...}}  only as a write's first operation: a guard that skips the whole
            write when `key` already exists here, else an "h" (exactly-once creation at one store)
]]

local VERSION = '19'
local EVENT_RETENTION = 200000
local LOG = 'fd:log'

-- Builtins bound to upvalues on a library's first call: its global lookups go through the
-- sandbox's metatable, dearer than the merge's inner loops (about 5% of a merge). FUNCTION LOAD
-- itself runs without `type` or `string`, so they cannot be bound while loading.
local type_of, tonum, each, spread, try, sbyte, ssub, smatch, sformat, rcall, mp_unpack, mp_pack
local band, bor, bxor, rshift, ror, tobit, tohex, srep, schar
local function bind()
  type_of, tonum, each, spread, try = type, tonumber, ipairs, unpack, pcall
  sbyte, ssub, smatch, sformat = string.byte, string.sub, string.match, string.format
  rcall, mp_unpack, mp_pack = redis.call, cmsgpack.unpack, cmsgpack.pack
  band, bor, bxor, rshift = bit.band, bit.bor, bit.bxor, bit.rshift
  ror, tobit, tohex, srep, schar = bit.ror, bit.tobit, bit.tohex, string.rep, string.char
end

local function bound(fn)
  return function(keys, args)
    if not rcall then bind() end
    return fn(keys, args)
  end
end

local function now_us()
  local t = rcall('TIME')
  return tonum(t[1]) * 1000000 + tonum(t[2])
end

local function clock_str(c)
  return sformat('%016d', c)
end

-- 's:x' -> 'x:x'
local function sibling(prefix, key)
  return prefix .. ssub(key, 2)
end

local function split_id(id)
  local ms, seq = smatch(id, '^(%d+)-(%d+)$')
  return tonum(ms), tonum(seq)
end

local function id_gt(a, b)
  local am, as = split_id(a)
  local bm, bs = split_id(b)
  if am ~= bm then return am > bm end
  return as > bs
end

---------------------------------------------------------------------------------------------------
-- SHA-256 (FIPS 180-4) on Lua's bit library: the server has only SHA-1 built in, and photo keys are
-- SHA-256 digests. About 0.5 ms per KB (25-30 ms for a 48 KB photo on the 2-core development machine),
-- so it runs only when a blob is created at its origin, never for the same bytes again or in a merge.

local K256 = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
local W = {}

local function sha256(msg)
  local ml = #msg
  local bits = ml * 8
  msg = msg .. '\128' .. srep('\0', (55 - ml) % 64) .. schar(0, 0, 0, band(math.floor(bits / 4294967296), 255),
    band(rshift(bits, 24), 255), band(rshift(bits, 16), 255), band(rshift(bits, 8), 255), band(bits, 255))
  local h0, h1, h2, h3 = 0x6a09e667, -0x4498517b, 0x3c6ef372, -0x5ab00ac6
  local h4, h5, h6, h7 = 0x510e527f, -0x64fa9774, 0x1f83d9ab, 0x5be0cd19
  local w, k = W, K256
  for chunk = 1, #msg, 64 do
    for i = 0, 15 do
      local a, b, c, d = sbyte(msg, chunk + i * 4, chunk + i * 4 + 3)
      w[i] = tobit(((a * 256 + b) * 256 + c) * 256 + d)
    end
    for i = 16, 63 do
      local x, y = w[i - 15], w[i - 2]
      w[i] = tobit(w[i - 16] + bxor(ror(x, 7), ror(x, 18), rshift(x, 3)) + w[i - 7]
        + bxor(ror(y, 17), ror(y, 19), rshift(y, 10)))
    end
    local a, b, c, d, e, f, g, h = h0, h1, h2, h3, h4, h5, h6, h7
    for i = 0, 63 do
      -- ch(e, f, g) and maj(a, b, c) in their cheaper equivalent forms (fewer bit-library calls)
      local t1 = h + bxor(ror(e, 6), ror(e, 11), ror(e, 25)) + bxor(g, band(e, bxor(f, g))) + k[i + 1] + w[i]
      local t2 = bxor(ror(a, 2), ror(a, 13), ror(a, 22)) + bor(band(a, b), band(c, bor(a, b)))
      h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + t2)
    end
    h0, h1, h2, h3 = tobit(h0 + a), tobit(h1 + b), tobit(h2 + c), tobit(h3 + d)
    h4, h5, h6, h7 = tobit(h4 + e), tobit(h5 + f), tobit(h6 + g), tobit(h7 + h)
  end
  return tohex(h0) .. tohex(h1) .. tohex(h2) .. tohex(h3) .. tohex(h4) .. tohex(h5) .. tohex(h6) .. tohex(h7)
end

local PHOTO = 'b:photo:'

-- Why a local blob write may not happen, or nil. Same bytes again: allowed (nothing changes).
local function blob_refusal(key, value)
  local cur = rcall('GET', key)
  if cur then
    if cur ~= value then
      return 'BLOBEXISTS blob ' .. key .. ' exists with other bytes: blobs are immutable'
    end
    return nil
  end
  if ssub(key, 1, #PHOTO) == PHOTO then
    local h = ssub(key, #PHOTO + 1)
    if #h ~= 64 or not smatch(h, '^[0-9a-f]+$') or sha256(value) ~= h then
      return 'BLOBHASH ' .. key .. ' is not the SHA-256 of its bytes: a photo is stored under the hash of its content'
    end
  end
  return nil
end

---------------------------------------------------------------------------------------------------
-- CRDT primitives, shared by local writes, remote merges and full-state imports.
-- Tags compare with >=: an equal tag can only come from a later operation of the same write, which
-- must win as it did at the origin (a write's operations always travel and apply together).

-- Scratch tables reused by every apply_h: a merge applies thousands of ops per call, and fresh
-- tables per op cost more (allocation and GC) than the HMGET and HSET themselves.
local TNAMES, SET = {}, {}

-- fields: a flat list {field1, value1, field2, value2, ...}
local function apply_h(key, fields, tag)
  local n = #fields
  if n == 0 then return end
  local m = 0
  for i = 1, n, 2 do m = m + 1; TNAMES[m] = '~' .. fields[i] end
  local cur = rcall('HMGET', key, spread(TNAMES, 1, m))
  local k = 0
  for j = 1, m do
    local old = cur[j]
    if (not old) or tag >= old then
      SET[k + 1] = fields[2 * j - 1]; SET[k + 2] = fields[2 * j]
      SET[k + 3] = TNAMES[j]; SET[k + 4] = tag
      k = k + 4
    end
  end
  if k > 0 then rcall('HSET', key, spread(SET, 1, k)) end
end

local function apply_hd(key, names, tag)
  if #names == 0 then return end
  local tnames = {}
  for i, f in each(names) do tnames[i] = '~' .. f end
  local cur = rcall('HMGET', key, spread(tnames))
  local dels, tags = {}, {}
  for i, f in each(names) do
    local old = cur[i]
    if (not old) or tag >= old then
      dels[#dels + 1] = f
      tags[#tags + 1] = tnames[i]; tags[#tags + 1] = tag
    end
  end
  if #dels > 0 then
    rcall('HDEL', key, spread(dels))
    rcall('HSET', key, spread(tags))
  end
end

local function apply_sa(key, element, tag)
  if rcall('SISMEMBER', sibling('x', key), tag) == 0 then
    rcall('HSET', key, tag, element)
  end
end

local function apply_sr(key, tags)
  if #tags == 0 then return end
  rcall('HDEL', key, spread(tags))
  rcall('SADD', sibling('x', key), spread(tags))
end

local function apply_c(key, part, total)
  local cur = rcall('HGET', key, part)
  if (not cur) or tonum(total) > tonum(cur) then
    rcall('HSET', key, part, total)
  end
end

-- Blobs are immutable: set once, never replaced. Local writes of other bytes are refused (fd_write),
-- photo keys are checked against their content at their origin, so every store that holds a key
-- holds the same bytes, in any merge order.
local function apply_b(key, value, ttl_ms)
  if rcall('EXISTS', key) == 1 then return end
  if ttl_ms and tonum(ttl_ms) and tonum(ttl_ms) > 0 then
    rcall('SET', key, value, 'PX', tonum(ttl_ms))
  else
    rcall('SET', key, value)
  end
end

---------------------------------------------------------------------------------------------------
-- Validation: a malformed operation is rejected before anything is written.

-- The first byte of the key each operation may write ('h', 's', 'c' or 'b'; the second is ':').
local PREFIX = { h = 104, hn = 104, hk = 104, hd = 104, sa = 115, sr = 115, c = 99, b = 98, br = 98 }

local function is_str(v) return type_of(v) == 'string' end
-- A counter part or a TTL: decimal digits that HINCRBY and PX accept (tonumber alone takes
-- '1.5', '-3', '0x10', 'nan' and 'inf', which would fail a later write half-way), or a whole
-- number (msgpack carries a client's integer TTL as a number).
local function is_uint(v)
  if type_of(v) == 'number' then return v >= 0 and v < 1e15 and v == math.floor(v) end
  return is_str(v) and #v <= 18 and smatch(v, '^%d+$') ~= nil
end
-- spread() fails past Lua's C stack (about 8000 values): a longer list is malformed.
local MAX_LIST = 2000

local function check_key(op)
  local want, key = PREFIX[op[1]], op[2]
  if want == nil or not is_str(key) or #key <= 2 then return false end
  local first, second = sbyte(key, 1, 2)
  return first == want and second == 58
end

-- Shape of an operation as logged (origin form for `c` and `sr` differs, see fd_write).
local function valid_logged(op)
  if type_of(op) ~= 'table' or not check_key(op) then return false end
  local k = op[1]
  if k == 'h' then
    local l = op[3]
    if type_of(l) ~= 'table' or #l == 0 or #l % 2 == 1 or #l > MAX_LIST then return false end
    for i = 1, #l, 2 do
      local f, v = l[i], l[i + 1]
      if type_of(f) ~= 'string' or type_of(v) ~= 'string' or sbyte(f, 1) == 126 then return false end
    end
    return true
  elseif k == 'hd' or k == 'sr' then
    if type_of(op[3]) ~= 'table' or #op[3] > MAX_LIST then return false end
    for _, f in each(op[3]) do
      if not is_str(f) or (k == 'hd' and sbyte(f, 1) == 126) then return false end
    end
    return true
  elseif k == 'sa' then
    return is_str(op[3]) and is_str(op[4])
  elseif k == 'c' then
    return is_str(op[3]) and smatch(op[3], '^[pn]:') ~= nil and is_uint(op[4])
  elseif k == 'b' then
    return is_str(op[3]) and (op[4] == nil or is_uint(op[4]))
  elseif k == 'br' then
    return op[3] == nil or is_uint(op[3])
  end
  return false
end

local function apply_logged(op, tag)
  local k = op[1]
  if k == 'h' then apply_h(op[2], op[3], tag)
  elseif k == 'hd' then apply_hd(op[2], op[3], tag)
  elseif k == 'sa' then apply_sa(op[2], op[3], op[4])
  elseif k == 'sr' then apply_sr(op[2], op[3])
  elseif k == 'c' then apply_c(op[2], op[3], op[4])
  elseif k == 'b' then apply_b(op[2], op[3], op[4])
  end  -- 'br': the syncer copied the blob before this merge (fd_blobs); nothing left to do
end

---------------------------------------------------------------------------------------------------
-- Store identity and clock.

local function advance_clock(remote)
  local last = tonum(rcall('HGET', 'fd:meta', 'hlc') or '0')
  if remote > last then rcall('HSET', 'fd:meta', 'hlc', clock_str(remote)) end
end

-- args: replica id, a fresh epoch (kept only the first time), optional retention.
local function fd_init(keys, args)
  local replica, epoch = args[1], args[2]
  if not replica or not smatch(replica, '^[a-z0-9][a-z0-9-]*$') or #replica > 32 then
    return redis.error_reply('ERR replica id must match [a-z0-9][a-z0-9-]* (max 32)')
  end
  local cur = rcall('HMGET', 'fd:meta', 'replica', 'epoch')
  if cur[1] and cur[1] ~= replica then
    return redis.error_reply('WRONGREPLICA this store is replica ' .. cur[1] .. ', not ' .. replica)
  end
  if not cur[1] then
    rcall('HSET', 'fd:meta', 'replica', replica, 'epoch', epoch, 'hlc', clock_str(0), 'seq', 0,
      'retention', 1000000)
    cur = { replica, epoch }
  end
  if args[3] then rcall('HSET', 'fd:meta', 'retention', args[3]) end
  return cur
end

---------------------------------------------------------------------------------------------------
-- Local writes.

local function check_event(op)
  local l = op[3]
  if not is_str(op[2]) or not smatch(op[2], '^fd:ev:[a-z][a-z0-9_]*$') or type_of(l) ~= 'table'
    or #l % 2 == 1 then return false end
  for _, v in each(l) do if not is_str(v) then return false end end
  return true
end

-- Fields whose name starts with '@' are written by the store itself (an 'hk' operation), never by a
-- client: a till cannot claim what its store had heard of.
local function store_fields(l)
  if type_of(l) ~= 'table' then return false end
  for j = 1, #l, 2 do
    if is_str(l[j]) and sbyte(l[j], 1) == 64 then return true end
  end
  return false
end

local function check_origin(op, i)
  if type_of(op) ~= 'table' then return false end
  if op[1] == 'e' then return check_event(op) end
  if op[1] == 'hn' then
    return i == 1 and valid_logged({ 'h', op[2], op[3] }) and not store_fields(op[3])
  end
  if op[1] == 'br' or not check_key(op) then return false end
  local k = op[1]
  if k == 'h' and store_fields(op[3]) then return false end
  if k == 'hk' then
    return is_str(op[3]) and sbyte(op[3], 1) == 64 and #op[3] > 1 and is_str(op[4]) and #op[4] > 2
      and ssub(op[4], 1, 2) == 's:'
  end
  if k == 'c' then return tonum(op[3]) ~= nil and tonum(op[3]) ~= 0 end
  if k == 'sa' or k == 'sr' then return is_str(op[3]) end
  return valid_logged(op)
end

-- args: msgpack array of operations (origin form). Returns {clock, seq, op-log id, skipped}: skipped=1
-- when an "hn" guard found its key (nothing written); the id is "" when nothing was logged.
local function fd_write(keys, args)
  local m = rcall('HMGET', 'fd:meta', 'replica', 'hlc', 'seq', 'retention', 'ev_retention')
  local replica = m[1]
  if not replica then return redis.error_reply('NOTINIT store has no replica id: call fd_init first') end
  local ok, ops = try(mp_unpack, args[1] or '')
  if not ok or type_of(ops) ~= 'table' or #ops == 0 then
    return redis.error_reply('BADOP payload must be a non-empty msgpack array of operations')
  end
  -- Validate everything first: Redis does not roll back a script that fails half-way.
  local rewrite = false
  for i, op in each(ops) do
    if not check_origin(op, i) then
      return redis.error_reply('BADOP operation ' .. i .. ' is malformed')
    end
    local k = op[1]
    if k == 'c' or k == 'sa' or k == 'sr' or k == 'e' or k == 'hn' or k == 'hk' or k == 'b' then rewrite = true end
  end
  for _, op in each(ops) do
    if op[1] == 'b' then
      local why = blob_refusal(op[2], op[3])
      if why then return redis.error_reply(why) end
    end
  end
  if ops[1][1] == 'hn' and rcall('EXISTS', ops[1][2]) == 1 then
    return { m[2], tonum(m[3]), '', 1 }
  end
  local t = rcall('TIME')
  local c = tonum(t[1]) * 1000000 + tonum(t[2])
  local last = tonum(m[2])
  if c <= last then c = last + 1 end
  local cs = clock_str(c)
  local tag = cs .. ':' .. replica
  local logged = ops
  if rewrite then logged = {} end
  for i, op in each(ops) do
    local k = op[1]
    local out = op
    if k == 'hn' then k = 'h'; out = { 'h', op[2], op[3] } end
    if k == 'hk' then
      -- what this store knows of an add-wins set now, recorded in a field (logged as a plain 'h'):
      -- its distinct elements, sorted, comma-separated
      local seen, known = {}, {}
      for _, e in each(rcall('HVALS', op[4])) do
        if not seen[e] then seen[e] = true; known[#known + 1] = e end
      end
      table.sort(known)
      k = 'h'; out = { 'h', op[2], { op[3], table.concat(known, ',') } }
      op = out
    end
    if k == 'e' then
      out = nil
      local l = op[3]
      rcall('XADD', op[2], 'MAXLEN', '~', m[5] or EVENT_RETENTION, '*', 'c', cs, spread(l))
    elseif k == 'c' then
      local delta = tonum(op[3])
      local part = (delta > 0 and 'p:' or 'n:') .. replica
      local total = rcall('HINCRBY', op[2], part, math.abs(delta))
      out = { 'c', op[2], part, sformat('%d', total) }
    elseif k == 'sa' then
      out = { 'sa', op[2], op[3], tag .. ':' .. i }
      apply_logged(out, tag)
    elseif k == 'h' then
      -- The local clock is past every clock this store has seen (merges advance it), so a local
      -- write wins every field: no need to read the old tags.
      local set, l = {}, op[3]
      for j = 1, #l, 2 do
        set[#set + 1] = l[j]; set[#set + 1] = l[j + 1]
        set[#set + 1] = '~' .. l[j]; set[#set + 1] = tag
      end
      rcall('HSET', op[2], spread(set))
    elseif k == 'b' then
      apply_b(op[2], op[3], op[4])
      out = { 'br', op[2], op[4] }
    elseif k == 'sr' then
      local all = rcall('HGETALL', op[2])
      local tags = {}
      for j = 1, #all, 2 do
        if all[j + 1] == op[3] then tags[#tags + 1] = all[j] end
      end
      out = { 'sr', op[2], tags }
      apply_logged(out, tag)
    else
      apply_logged(out, tag)
    end
    if rewrite and out then logged[#logged + 1] = out end
  end
  if #logged == 0 then
    rcall('HSET', 'fd:meta', 'hlc', cs)
    return { cs, tonum(m[3]), '', 0 }
  end
  local seq = tonum(m[3]) + 1
  rcall('HSET', 'fd:meta', 'hlc', cs, 'seq', seq)
  local payload = args[1]
  if rewrite then payload = mp_pack(logged) end
  local id = rcall('XADD', LOG, 'MAXLEN', '~', m[4], '*', 'c', cs, 's', seq, 'o', payload)
  return { cs, seq, id, 0 }
end

---------------------------------------------------------------------------------------------------
-- Replication.

-- args: source replica, source epoch, then (id, clock, seq, ops) per op-log entry, ids ascending.
-- Returns {applied, duplicates, now_us, gap, malformed id...}. gap=1 means entries are missing
-- (trimmed by retention, or the source was reset): the caller must do a full resync.
local function fd_merge(keys, args)
  local src, epoch = args[1], args[2]
  -- The batch's shape is checked before anything is written (Redis never rolls a script back).
  if not src or not epoch or (#args - 2) % 4 ~= 0 then
    return redis.error_reply('BADBATCH args are: source, epoch, then (id, clock, seq, ops) per entry')
  end
  local pms, pseq = -1, -1
  for i = 3, #args, 4 do
    local ms, sq = split_id(args[i])
    if not ms or ms < pms or (ms == pms and sq <= pseq) then
      return redis.error_reply('BADBATCH entry ids must be stream ids in ascending order')
    end
    pms, pseq = ms, sq
  end
  local ck = 'fd:ckpt:' .. src
  local cur = rcall('HMGET', ck, 'epoch', 'seq', 'id')
  if cur[1] and cur[1] ~= epoch then
    return { 0, 0, clock_str(now_us()), 1 }
  end
  local seq = tonum(cur[2] or '0')
  local last_id = cur[3] or '0-0'
  local first = 3
  -- ids ascend within a batch, so only its head can repeat what was already applied
  while first <= #args and not id_gt(args[first], last_id) do first = first + 4 end
  local dups = (first - 3) / 4
  local applied, maxc, gap = 0, '', 0  -- maxc: the greatest clock, compared as 16-digit strings
  local bad = {}
  for i = first, #args, 4 do
    local id, c, o = args[i], args[i + 1], args[i + 3]
    local s = is_uint(args[i + 2]) and tonum(args[i + 2]) or nil
    if s and s > seq + 1 then
      gap = 1
      break
    end
    local ok, ops = try(mp_unpack, o)
    local good = ok and s ~= nil and #c == 16 and is_uint(c) and type_of(ops) == 'table'
    if good then
      for _, op in each(ops) do
        if not valid_logged(op) then good = false; break end
      end
    end
    if good then
      local tag = c .. ':' .. src
      for _, op in each(ops) do apply_logged(op, tag) end
      if c > maxc then maxc = c end
      applied = applied + 1
    else
      bad[#bad + 1] = id
    end
    if s and s > seq then seq = s end
    last_id = id
  end
  if maxc ~= '' then advance_clock(tonum(maxc)) end
  rcall('HSET', ck, 'epoch', epoch, 'seq', seq, 'id', last_id)
  if applied > 0 then rcall('HINCRBY', ck, 'applied', applied) end
  local out = { applied, dups, clock_str(now_us()), gap }
  for _, id in each(bad) do out[#out + 1] = id end
  return out
end

-- The source's position, read atomically before a full-state export: {epoch, seq, last id}.
local function fd_position(keys, args)
  local m = rcall('HMGET', 'fd:meta', 'epoch', 'seq')
  if not m[1] then return redis.error_reply('NOTINIT store has no replica id: call fd_init first') end
  local last = rcall('XREVRANGE', LOG, '+', '-', 'COUNT', 1)
  local id = '0-0'
  if #last > 0 then id = last[1][1] end
  return { m[1], tonum(m[2]), id }
end

-- Full state of the given canonical data keys (h:, s:, c:, b:), as one msgpack array.
local function fd_export(keys, args)
  local out = {}
  for _, key in each(args) do
    local p = ssub(key, 1, 1)
    if p == 'h' then
      out[#out + 1] = { 'h', key, rcall('HGETALL', key) }
    elseif p == 's' then
      out[#out + 1] = { 's', key, rcall('HGETALL', key), rcall('SMEMBERS', sibling('x', key)) }
    elseif p == 'c' then
      out[#out + 1] = { 'c', key, rcall('HGETALL', key) }
    elseif p == 'b' then
      local v = rcall('GET', key)
      if v then out[#out + 1] = { 'b', key, v, rcall('PTTL', key) } end
    end
  end
  return mp_pack(out)
end

-- Merge a full-state export (state-based CRDT merge: same result as replaying the ops).
local function fd_import(keys, args)
  local ok, states = try(mp_unpack, args[1] or '')
  if not ok or type_of(states) ~= 'table' then
    return redis.error_reply('BADSTATE export payload is not a msgpack array')
  end
  local maxc = 0
  for _, st in each(states) do
    local k, key = st[1], st[2]
    if k == 'h' then
      local vals, tags = {}, {}
      for i = 1, #st[3], 2 do
        local f = st[3][i]
        if sbyte(f, 1) == 126 then tags[ssub(f, 2)] = st[3][i + 1] else vals[f] = st[3][i + 1] end
      end
      for f, tag in pairs(tags) do
        local c = tonum(ssub(tag, 1, 16))
        if c and c > maxc then maxc = c end
        if vals[f] then apply_h(key, { f, vals[f] }, tag) else apply_hd(key, { f }, tag) end
      end
    elseif k == 's' then
      apply_sr(key, st[4])
      for i = 1, #st[3], 2 do apply_sa(key, st[3][i + 1], st[3][i]) end
    elseif k == 'c' then
      for i = 1, #st[3], 2 do apply_c(key, st[3][i], st[3][i + 1]) end
    elseif k == 'b' then
      apply_b(key, st[3], (st[4] and st[4] > 0) and st[4] or nil)
    end
  end
  if maxc > 0 then advance_clock(maxc) end
  return #states
end

-- args: (key, value, ttl_ms) per blob, copied by a syncer from the source store before it merges
-- the entries that refer to them ("br"). Set once: a key already here is left as it is. Returns the
-- number of blobs created.
local function fd_blobs(keys, args)
  if #args % 3 ~= 0 then return redis.error_reply('BADBLOBS args are (key, value, ttl_ms) triples') end
  for i = 1, #args, 3 do
    local key, ttl = args[i], args[i + 2]
    if sbyte(key, 1) ~= 98 or sbyte(key, 2) ~= 58 or #key <= 2 or not is_uint(ttl) then
      return redis.error_reply('BADBLOBS blob ' .. i .. ' has a bad key or TTL')
    end
  end
  local n = 0
  for i = 1, #args, 3 do
    if rcall('EXISTS', args[i]) == 0 then
      apply_b(args[i], args[i + 1], args[i + 2])
      n = n + 1
    end
  end
  return n
end

-- args: source replica, epoch, seq, id: the position a full resync started from; then optional
-- field/value pairs kept beside it (reborn_epoch: the source came back empty under that epoch, and this
-- store holds its earlier life).
local function fd_checkpoint(keys, args)
  local kv = { 'epoch', args[2], 'seq', args[3], 'id', args[4] }
  for i = 5, #args do kv[#kv + 1] = args[i] end
  if #kv % 2 == 1 then return redis.error_reply('BADARGS fd_checkpoint wants field/value pairs') end
  rcall('HSET', 'fd:ckpt:' .. args[1], spread(kv))
  return 1
end

-- args: source replica, then field/value pairs of the link's status (local metadata only).
local function fd_link(keys, args)
  local kv = {}
  for i = 2, #args do kv[#kv + 1] = args[i] end
  rcall('HSET', 'fd:link:' .. args[1], spread(kv))
  return 1
end

-- The demo's reset: a local maintenance write (never logged, so it never replicates). The demo's
-- data keys and the idempotency records go, event streams are emptied in place (the detectors'
-- consumer groups stay), the reset token is set, and the op-log position is read in the same atomic
-- step, for the peers' checkpoints. args: the reset token's key, the new token.
-- Returns {keys deleted, epoch, seq, last op-log id}.
local function fd_reset(keys, args)
  local deleted, cur = 0, '0'
  repeat
    local res = rcall('SCAN', cur, 'COUNT', 1000)
    cur = res[1]
    for _, k in each(res[2]) do
      local p = ssub(k, 1, 2)
      if p == 'h:' or p == 's:' or p == 'x:' or p == 'c:' or p == 'b:' or ssub(k, 1, 8) == 'fd:idem:' then
        rcall('UNLINK', k)
        deleted = deleted + 1
      elseif ssub(k, 1, 6) == 'fd:ev:' and rcall('TYPE', k)['ok'] == 'stream' then
        rcall('XTRIM', k, 'MAXLEN', 0)
      end
    end
  until cur == '0'
  local m = rcall('HMGET', 'fd:meta', 'epoch', 'seq')
  if not m[1] then return redis.error_reply('NOTINIT store has no replica id') end
  rcall('SET', args[1], args[2])
  local last = rcall('XREVRANGE', LOG, '+', '-', 'COUNT', 1)
  local id = '0-0'
  if #last > 0 then id = last[1][1] end
  return { deleted, m[1], m[2], id }
end

local function fd_version() return VERSION end

redis.register_function { function_name = 'fd_version', callback = bound(fd_version), flags = { 'no-writes' } }
redis.register_function('fd_init', bound(fd_init))
redis.register_function('fd_write', bound(fd_write))
redis.register_function('fd_merge', bound(fd_merge))
redis.register_function { function_name = 'fd_position', callback = bound(fd_position), flags = { 'no-writes' } }
redis.register_function { function_name = 'fd_export', callback = bound(fd_export), flags = { 'no-writes' } }
redis.register_function('fd_import', bound(fd_import))
redis.register_function('fd_checkpoint', bound(fd_checkpoint))
redis.register_function('fd_blobs', bound(fd_blobs))
redis.register_function('fd_link', bound(fd_link))
redis.register_function('fd_reset', bound(fd_reset))
