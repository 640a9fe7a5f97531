-- lib/arg_blocks.lua (included): the reader of a script's argument blocks, as
-- permitchain.store.scripts.flat_pairs builds them. A block is passed on to a command by
-- unpack(ARGV, first, last): no copy of its values into a table.
--
-- block_at(i): the block at ARGV[i] (N, then N name/value pairs): the index of its first and
-- last value (last < first when N = 0), and the index of the argument just after it.
local function block_at(i)
  local last = i + 2 * tonumber(ARGV[i])
  return i + 1, last, last + 1
end

-- xadd(key, maxlen, first, last): XADD key MAXLEN ~ maxlen * with the values ARGV[first..last]
-- (a block read by block_at); the entry's id.
local function xadd(key, maxlen, first, last)
  return redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, first, last))
end
