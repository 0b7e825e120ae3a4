-- One machine-readable line per wrk run, which scripts/load.sh parses:
-- RESULT requests/s p50-ms p99-ms non-2xx timeouts socket-errors requests
-- (wrk counts a status above 399 as a status error: 303 redirects succeed.)
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.timeout, e.connect + e.read + e.write, summary.requests))
end
