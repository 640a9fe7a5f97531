-- lib/arg_blocks.lua (included): the reader of a script's argument blocks, as
-- permitchain.scripts.flat_pairs builds them.
--
-- pairs_at(i): the block at ARGV[i] (N, then N name/value pairs) as a list of its 2N values,
-- and the index of the argument just after the block.
local function pairs_at(i)
  local n = tonumber(ARGV[i])
  local out = {}
  for j = i + 1, i + 2 * n do out[#out + 1] = ARGV[j] end
  return out, i + 2 * n + 1
end

-- xadd(key, maxlen, fields): XADD key MAXLEN ~ maxlen * with the list fields (a block read
-- by pairs_at); the entry's id.
local function xadd(key, maxlen, fields)
  local cmd = {'XADD', key, 'MAXLEN', '~', maxlen, '*'}
  for _, v in ipairs(fields) do cmd[#cmd + 1] = v end
  return redis.call(unpack(cmd))
end
