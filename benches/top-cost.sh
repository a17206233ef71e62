#!/usr/bin/env bash
# What watching costs: a bundled pipeline runs ROUNDS times without and ROUNDS times with
# `asyncprof top` attached in a real terminal (tmux, 200x50), alternating, and the script
# prints each run's wall time, items per second and p99 item latency, the viewer's own CPU
# time, then the medians and their spread.
#
#   cargo build --release -p asyncprof-cli
#   benches/top-cost.sh [ROUNDS] [PIPELINE] [VARIANT] [LOAD]     # defaults: 5 log-aggregator fixed heavy
#
# Needs tmux and python3. A benchmark, not a test: run it by hand on a machine as idle as
# you can get, and compare the two columns within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
pipeline=${2:-log-aggregator}
variant=${3:-fixed}
load=${4:-heavy}
bin=${ASYNCPROF_BIN:-$PWD/target/release/asyncprof}
[ -x "$bin" ] || { echo "error: $bin not built (cargo build --release -p asyncprof-cli)" >&2; exit 2; }
command -v tmux >/dev/null || { echo "error: tmux is not installed" >&2; exit 2; }
work=$(mktemp -d)
sock="asyncprof-top-cost-$$"
trap 'tmux -L "$sock" kill-server 2>/dev/null || true; rm -rf "$work"' EXIT

one() { # one run: $1 = without|with, $2 = round
    local mode=$1 r=$2 run="$work/$1-$2.run" out="$work/$1-$2.json" stat="$work/$1-$2.stat"
    ASYNCPROF_OUT="$run" "$bin" __pipeline "$pipeline" "$variant" "$load" >"$out" 2>/dev/null &
    local pid=$!
    if [ "$mode" = with ]; then
        while [ ! -s "$run" ]; do sleep 0.01; done
        # The viewer runs under a shell of its own, whose children's CPU time (fields 16 and
        # 17 of its stat, in clock ticks) is the viewer's once it has quit.
        tmux -L "$sock" -f /dev/null new-session -d -x 200 -y 50 \
            "bash -c '\"$bin\" top \"$run\"; cat /proc/\$\$/stat > \"$stat\"'"
    fi
    wait "$pid"
    if [ "$mode" = with ]; then
        tmux -L "$sock" send-keys q
        while [ ! -s "$stat" ]; do sleep 0.05; done
        tmux -L "$sock" kill-server 2>/dev/null || true
    fi
    python3 - "$out" "$stat" "$mode" "$r" <<'EOF'
import json, os, sys
out, stat, mode, r = sys.argv[1:]
o = json.load(open(out))
cpu = ""
if os.path.exists(stat):
    f = open(stat).read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(f[13]) + int(f[14])) / ticks  # cutime, cstime (fields 16, 17)
print(json.dumps({"mode": mode, "round": int(r), "elapsed_s": o["elapsed_s"],
                  "throughput": o["throughput"], "p99_ms": o["p99_ms"], "viewer_cpu_s": cpu}))
EOF
}

echo "$pipeline $variant ($load), $rounds rounds, without and with asyncprof top attached"
for r in $(seq 1 "$rounds"); do
    one without "$r"
    one with "$r"
done | tee "$work/all.jsonl"
python3 - "$work/all.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(mode, key):
    v = sorted(r[key] for r in rows if r["mode"] == mode and r[key] != "")
    return statistics.median(v), v[0], v[-1]
for key, unit in [("elapsed_s", "s"), ("throughput", "items/s"), ("p99_ms", "ms")]:
    (a, alo, ahi), (b, blo, bhi) = med("without", key), med("with", key)
    print(f"{key:>11}: without {a:.3f} ({alo:.3f}-{ahi:.3f}) {unit}, with {b:.3f} ({blo:.3f}-{bhi:.3f}) {unit}, with/without {b / a:.3f}")
cpu, lo, hi = med("with", "viewer_cpu_s")
el, _, _ = med("with", "elapsed_s")
print(f"viewer CPU: {cpu:.3f} s ({lo:.3f}-{hi:.3f}) over a {el:.2f} s run, {100 * cpu / el:.1f}% of one core")
EOF
