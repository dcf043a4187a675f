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
  b:<name>  immutable blob (content-addressed), set once, optional TTL; conflicts keep the greater SHA-1
  fd:meta   replica id, epoch, hlc (hybrid logical clock, 16-digit microseconds), seq (last op-log
            sequence number), retention (op-log entries kept)
  fd:log    op log (stream): c=clock s=seq o=msgpack ops      fd:ckpt:<src>  link checkpoint: epoch, seq, id,
            applied (entries merged: a witness that none is merged twice)
  fd:link:<src>  link status written by the syncer that pulls from <src>

Logged operations (msgpack arrays; all idempotent and commutative, so any order or duplicate converges):
  {"h", key, {field, value, ...}}   {"hd", key, {field...}}   {"sa", key, element, tag}
  {"sr", key, {tag...}}       {"c", key, part, total}   {"b", key, value, ttl_ms}

Local-only operations, accepted by fd_write and never logged:
  {"e", "fd:ev:<name>", {field, value, ...}}  append an event to this store's event stream <name>, with
            the write's clock as field "c" (consumers read every store's streams: events never replicate)
  {"hn", key, {field, value, ...}}  only as a write's first operation: a guard that skips the whole
            write when `key` already exists here, else an "h" (exactly-once creation at one store)
]]

local VERSION = '15'
local EVENT_RETENTION = 200000
local LOG = 'fd:log'

-- Builtins bound to upvalues on a library's first call: its global lookups go through the
-- sandbox's metatable, dearer than the merge's inner loops (about 5% of a merge). FUNCTION LOAD
-- itself runs without `type` or `string`, so they cannot be bound while loading.
local type_of, tonum, each, spread, try, sbyte, ssub, smatch, sformat, rcall, mp_unpack, mp_pack
local function bind()
  type_of, tonum, each, spread, try = type, tonumber, ipairs, unpack, pcall
  sbyte, ssub, smatch, sformat = string.byte, string.sub, string.match, string.format
  rcall, mp_unpack, mp_pack = redis.call, cmsgpack.unpack, cmsgpack.pack
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

-- Blobs are meant to be content-addressed (same key, same bytes). Should two stores still write
-- different bytes under one key, every store keeps the one with the greater SHA-1: convergent.
local function apply_b(key, value, ttl_ms)
  local cur = rcall('GET', key)
  if not cur then
    if ttl_ms and tonum(ttl_ms) and tonum(ttl_ms) > 0 then
      rcall('SET', key, value, 'PX', tonum(ttl_ms))
    else
      rcall('SET', key, value)
    end
  elseif cur ~= value and redis.sha1hex(value) > redis.sha1hex(cur) then
    rcall('SET', key, value, 'KEEPTTL')
  end
end

---------------------------------------------------------------------------------------------------
-- Validation: a malformed operation is rejected before anything is written.

-- The first byte of the key each operation may write ('h', 's', 'c' or 'b'; the second is ':').
local PREFIX = { h = 104, hd = 104, sa = 115, sr = 115, c = 99, b = 98 }

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
  end
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

local function check_origin(op, i)
  if type_of(op) ~= 'table' then return false end
  if op[1] == 'e' then return check_event(op) end
  if op[1] == 'hn' then
    return i == 1 and valid_logged({ 'h', op[2], op[3] })
  end
  if not check_key(op) then return false end
  local k = op[1]
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
    if k == 'c' or k == 'sa' or k == 'sr' or k == 'e' or k == 'hn' then rewrite = true end
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

-- args: source replica, epoch, seq, id: the position a full resync started from.
local function fd_checkpoint(keys, args)
  rcall('HSET', 'fd:ckpt:' .. args[1], 'epoch', args[2], 'seq', args[3], 'id', args[4])
  return 1
end

-- args: source replica, then field/value pairs of the link's status (local metadata only).
local function fd_link(keys, args)
  local kv = {}
  for i = 2, #args do kv[#kv + 1] = args[i] end
  rcall('HSET', 'fd:link:' .. args[1], spread(kv))
  return 1
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
redis.register_function('fd_link', bound(fd_link))
