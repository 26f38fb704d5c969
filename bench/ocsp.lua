-- wrk script for the OCSP benchmark (bench/bench.py writes the data files).
--
-- Usage: wrk ... -s ocsp.lua URL -- MODE DATA LENGTHS THREADS
--   MODE     "get"  : DATA holds one request path per line ("/" + percent-escaped base64 DER)
--            "post" : DATA holds DER OCSP requests back to back, LENGTHS one length per line
--   THREADS  wrk -t value: each thread cycles through its own slice of the requests, so
--            concurrent threads never send the same request (distinct nonces stay distinct
--            until a slice wraps; wraps are reported).
--
-- Binary bodies are read with io.open in init(), never embedded in Lua source.
-- done() prints one line "BENCHJSON {...}" with the exact figures bench.py records.

-- wrk's default resolve() probes every address with connect()+close() before the run;
-- `openssl ocsp` spins at 100% CPU in the child that accepts such a connection. Resolve
-- without the probe: the harness has already checked that the server answers.
function wrk.resolve(host, service)
   wrk.addrs = wrk.lookup(host, service)
end

local threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local reqs = {}
local lo, pos = 1, 0
sent, wraps, hi = 0, 0, 0

local function slurp(path, binary)
   local f = assert(io.open(path, binary and "rb" or "r"))
   local data = f:read("*a")
   f:close()
   return data
end

function init(args)
   local mode, data, lengths, nthreads = args[1], args[2], args[3], tonumber(args[4])
   local all = {}
   if mode == "get" then
      for line in slurp(data):gmatch("[^\n]+") do
         table.insert(all, wrk.format("GET", line))
      end
   elseif mode == "post" then
      local blob = slurp(data, true)
      local headers = { ["Content-Type"] = "application/ocsp-request" }
      local offset = 1
      for len in slurp(lengths):gmatch("%d+") do
         local n = tonumber(len)
         table.insert(all, wrk.format("POST", wrk.path, headers, blob:sub(offset, offset + n - 1)))
         offset = offset + n
      end
      assert(offset == #blob + 1, "lengths do not add up to the size of " .. data)
   else
      error("mode must be get or post, not " .. tostring(mode))
   end
   -- this thread's slice of the request list
   local per = math.floor(#all / nthreads)
   assert(per >= 1, "fewer requests than threads")
   local first = tid * per + 1
   for i = first, first + per - 1 do
      table.insert(reqs, all[i])
   end
   hi = #reqs
   pos = 0
end

function request()
   pos = pos + 1
   if pos > hi then
      pos = lo
      wraps = wraps + 1
   end
   sent = sent + 1
   return reqs[pos]
end

function done(summary, latency, requests)
   local total_sent, total_wraps, slice = 0, 0, 0
   for _, t in ipairs(threads) do
      total_sent = total_sent + (t:get("sent") or 0)
      total_wraps = total_wraps + (t:get("wraps") or 0)
      slice = t:get("hi") or slice
   end
   local e = summary.errors
   io.write(string.format(
      'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, '
      .. '"p50": %d, "p90": %d, "p99": %d, "p999": %d}, '
      .. '"sent": %d, "slice_wraps": %d, "slice_size": %d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9),
      total_sent, total_wraps, slice))
end
