-- kv.lua - wrk script for tests/workloads/kvserver (used by failover_bench.py).
--
--   wrk -t T -c C -d D -s bench/kv.lua http://HOST:PORT -- MODE KEYS SIZE SETPCT THREADS [START]
--
-- MODE fill: every request is /set, walking key0 .. key(KEYS-1) in turn (the
--            threads share the walk), values of SIZE bytes; run it until the
--            server's /state counts KEYS items.
-- MODE mix:  uniformly random keys; SETPCT percent /set?k=..&v=.. (SIZE
--            bytes), the rest /get?k=.. (a missing key answers 404, which
--            wrk counts as a non-2xx answer: fill first).
-- THREADS must be wrk's -t, so that the fill walk covers every key once.
-- START (fill only, default 0): where the walk begins, so that a fill cut
-- short by -d can go on where it stopped.
--
-- done() prints one line "wrk-json {...}": request count, duration, socket
-- errors, non-2xx answers and latency percentiles in microseconds, for the
-- bench to read instead of wrk's human summary.

local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  mode = args[1] or "mix"
  keys = tonumber(args[2] or "10000")
  size = tonumber(args[3] or "256")
  setpct = tonumber(args[4] or "10")
  nthreads = tonumber(args[5] or "1")
  counter = (id or 0) + tonumber(args[6] or "0")
  math.randomseed(os.time() * 1000 + (id or 0) * 7919)
  -- a value per thread that changes each request would cost Lua time;
  -- distinct keys and fresh Go strings per /set dirty memory just as well
  value = string.rep("v", size)
end

local function set(k)
  return wrk.format("GET", "/set?k=key" .. k .. "&v=" .. value)
end

function request()
  if mode == "fill" then
    local k = counter % keys
    counter = counter + nthreads
    return set(k)
  end
  local k = math.random(0, keys - 1)
  if math.random(100) <= setpct then
    return set(k)
  end
  return wrk.format("GET", "/get?k=key" .. k)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'wrk-json {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"non2xx":%d,"timeouts":%d,' ..
    '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d,"lat_mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
