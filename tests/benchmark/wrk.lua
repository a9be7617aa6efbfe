-- wrk's script for tests/benchmark/load.py: sends prepared raw HTTP/1.1 requests in turn, counts the
-- answers that are not what a success looks like, and prints one BENCH line of JSON at the end.
-- Arguments (after --): the requests file, the bytes a successful answer holds ("" for any 200),
-- the first value of the per-request counter.
-- The requests file is, for each request, the number of its pieces and then each piece as its length
-- and its bytes; a request of several pieces has the counter, 10 digits wide, put between them.

requests_, expect, counter, failures = {}, "", 0, 0
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local data = file:read("*a")
   file:close()
   expect, counter = args[2], tonumber(args[3])
   local at = 1
   local function number()
      local newline = data:find("\n", at, true)
      local value = tonumber(data:sub(at, newline - 1))
      at = newline + 1
      return value
   end
   while at <= #data do
      local pieces = {}
      for k = 1, number() do
         local length = number()
         pieces[k] = data:sub(at, at + length - 1)
         at = at + length
      end
      requests_[#requests_ + 1] = pieces
   end
end

function request()
   counter = counter + 1
   local pieces = requests_[counter % #requests_ + 1]
   if #pieces == 1 then
      return pieces[1]
   end
   return table.concat(pieces, string.format("%010d", counter))
end

function response(status, headers, body)
   if status ~= 200 or (expect ~= "" and not body:find(expect, 1, true)) then
      failures = failures + 1
   end
end

function done(summary, latency, requests)
   local failed = 0
   for _, thread in ipairs(threads) do
      failed = failed + thread:get("failures")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests": %d, "seconds": %.6f, "p50_ms": %.3f, "p99_ms": %.3f, "failures": %d, "errors": %d}\n',
      summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
      failed, e.connect + e.read + e.write + e.timeout))
end
