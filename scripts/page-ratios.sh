#!/usr/bin/env bash
# The cached pages' throughput as a share of /static, measured in interleaved
# rounds against one running server (`larder-blog serve`), so that the other
# work on a shared machine disturbs each ratio less than it disturbs the
# separate runs of scripts/load.sh. Prints each round and the medians.
#
#   scripts/page-ratios.sh [BASE_URL] [ROUNDS] [SECONDS]
#   (defaults: http://127.0.0.1:8080 5 5; wrk -t2 -c64 as load.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-http://127.0.0.1:8080}
rounds=${2:-5}
secs=${3:-5}
export LOAD_WRK_DIR="$PWD/scripts/wrk" LOAD_FRONT_PERCENT=0
rate() { # path-or-script
  local args=("$base$1")
  if [ "$1" = pages ]; then args=(-s scripts/wrk/pages.lua "$base"); fi
  wrk -t2 -c64 -d"${secs}s" "${args[@]}" 2>/dev/null | awk '/Requests\/sec/ {print $2}'
}
results=()
for round in $(seq 1 "$rounds"); do
  front=$(rate /)
  static=$(rate /static)
  posts=$(rate pages)
  results+=("$front $static $posts")
  echo "round $round: front page $front, /static $static, post pages $posts req/s"
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, line.split())) for line in sys.stdin if line.strip()]
front = statistics.median(f / s for f, s, _ in rows)
posts = statistics.median(p / s for _, s, p in rows)
print(f"median of the rounds: front page / static {front:.3f}, post pages / static {posts:.3f}")
'
