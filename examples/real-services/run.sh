#!/usr/bin/env bash
# asyncprof on servers it was not written with: two open-source tokio servers taken from
# crates.io at pinned versions, wrapped by a patch of a few lines that follows the README's
# quick start (the dependency, `#[asyncprof::main]` or `guard.instrument`, tokio_unstable, line
# tables), and run under their own load clients in two twins:
#
# - bad: a known defect, marked `// asyncprof-expect: KIND` on its line: asyncprof must name
#   that line with that kind, and nothing else;
# - fixed: the defect fixed: asyncprof must find nothing.
#
#   examples/real-services/run.sh                   both services, scored (exit 1 on a miss)
#   examples/real-services/run.sh basic-http-server one service
#   examples/real-services/run.sh --throughput      also the requests per second of the fixed
#                                                   twin with and without asyncprof, alternating
#   examples/real-services/run.sh --stable          also both twins built without tokio_unstable
#                                                   (asyncprof's stable tier), scored the same way
#
# Needs curl, patch, wrk and ab (apache2-utils), and static.crates.io. Everything is built
# and run under target/real-services/.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK="$ROOT/target/real-services"
THROUGHPUT=0
STABLE=0
ONLY=()
for arg in "$@"; do
    case "$arg" in
        --throughput) THROUGHPUT=1 ;;
        --stable) STABLE=1 ;;
        -h | --help)
            sed -n '2,23p' "$0"
            exit 0
            ;;
        -*)
            echo "error: unknown option $arg (see --help)" >&2
            exit 2
            ;;
        *) ONLY+=("$arg") ;;
    esac
done

for tool in curl patch wrk ab; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is needed (Debian: apt-get install curl patch wrk apache2-utils)" >&2
        exit 2
    fi
done

echo "== building asyncprof (the CLI that runs, reports and scores)"
cargo build --quiet --release -p asyncprof-cli --manifest-path "$ROOT/Cargo.toml"
ASYNCPROF="$ROOT/target/release/asyncprof"

# A free loopback port.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# fetch NAME VERSION SHA256: the crate's source from crates.io, checked, into $WORK/NAME.crate.
fetch() {
    local name=$1 version=$2 sha=$3 file="$WORK/$1-$2.crate"
    mkdir -p "$WORK"
    if [ ! -f "$file" ] || ! echo "$sha  $file" | sha256sum --check --status; then
        curl --fail --silent --show-error --location --retry 3 \
            -o "$file" "https://static.crates.io/crates/$name/$name-$version.crate"
    fi
    echo "$sha  $file" | sha256sum --check --status || {
        echo "error: $file does not have the pinned sha256 $sha" >&2
        exit 1
    }
}

# prepare NAME VERSION VARIANT PATCH...: a fresh copy of the source with the patches applied,
# built in release; prints the binary's path. A variant named stable-* is built without
# tokio_unstable (so asyncprof records its stable tier), in a target folder of its own.
prepare() {
    local name=$1 version=$2 variant=$3
    shift 3
    local dir="$WORK/$name/$variant"
    rm -rf "$dir"
    mkdir -p "$dir"
    tar -xzf "$WORK/$name-$version.crate" -C "$dir" --strip-components=1
    for p in "$@"; do
        patch --quiet -p1 -d "$dir" <"$HERE/$name/$p.patch"
    done
    # Built from its own folder, so that its .cargo/config.toml (tokio_unstable, from the wrap
    # patch) applies. One target folder for every server and twin: they share their
    # dependencies' builds (tokio, axum, hyper). `plain` (without asyncprof) is built without
    # tokio_unstable, as the server ships (an empty RUSTFLAGS overrides every config file's).
    local target="$WORK/target"
    case "$variant" in
        plain)
            (cd "$dir" && RUSTFLAGS="" CARGO_TARGET_DIR="$target" \
                cargo build --quiet --release) >&2
            ;;
        stable-*)
            target="$WORK/target-stable"
            (cd "$dir" && RUSTFLAGS="" CARGO_TARGET_DIR="$target" \
                cargo build --quiet --release) >&2
            ;;
        *) (cd "$dir" && CARGO_TARGET_DIR="$target" cargo build --quiet --release) >&2 ;;
    esac
    cp "$target/release/$name" "$WORK/$name/$variant.bin"
    echo "$WORK/$name/$variant.bin"
}

# profile NAME VARIANT LOAD_CMD -- SERVER ARGS: run the server under asyncprof with the load,
# then score its findings against the markers in its source.
profile() {
    local name=$1 variant=$2 load=$3 port=$4
    shift 5
    local out="$WORK/$name/runs/$variant"
    rm -rf "$out"
    echo "== $name $variant: asyncprof run --load-cmd '$load'"
    "$ASYNCPROF" run --out "$out" --listen "127.0.0.1:$port" --load-cmd "$load" --timeout 120s \
        -- "$@"
    local run
    run=$(find "$out" -name '*.run' | head -n 1)
    echo "== $name $variant: asyncprof report --expect-markers $WORK/$name/$variant"
    "$ASYNCPROF" report "$run" --expect-markers "$WORK/$name/$variant"
}

# rate CLIENT OUTPUT: requests per second from wrk's or ab's output.
rate() {
    case "$1" in
        wrk) awk '/^Requests\/sec:/ {print $2}' ;;
        ab) awk '/^Requests per second:/ {print $4}' ;;
    esac
}

# throughput NAME CLIENT LOAD_CMD PORT -- SERVER ARGS (with @BIN@ for the binary): the fixed
# twin with and without asyncprof, alternating, 5 runs each; medians and their ratio.
throughput() {
    local name=$1 client=$2 load=$3 port=$4
    shift 5
    local with=() without=()
    for round in 1 2 3 4 5; do
        for variant in plain fixed; do
            local args=("${@//@BIN@/$WORK/$name/$variant.bin}")
            ASYNCPROF_OUT="$WORK/$name/throughput.run" "${args[@]}" >/dev/null 2>&1 &
            local pid=$!
            for _ in $(seq 100); do
                (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
                sleep 0.1
            done
            local r
            # The load command is split into words on purpose.
            # shellcheck disable=SC2086
            r=$($load 2>/dev/null | rate "$client")
            kill "$pid"
            wait "$pid" 2>/dev/null || true
            if [ "$variant" = plain ]; then without+=("$r"); else with+=("$r"); fi
            echo "   round $round $variant: $r requests/s"
        done
    done
    python3 - "$name ${load##* }" "${without[*]}" "${with[*]}" <<'EOF'
import statistics, sys
name, without, with_ = sys.argv[1], list(map(float, sys.argv[2].split())), list(map(float, sys.argv[3].split()))
a, b = statistics.median(without), statistics.median(with_)
print(f"== {name}: without asyncprof {a:.1f} requests/s (runs {min(without):.1f}-{max(without):.1f}), "
      f"with {b:.1f} ({min(with_):.1f}-{max(with_):.1f}): ratio {b / a:.3f}")
EOF
}

want() {
    [ ${#ONLY[@]} -eq 0 ] && return 0
    local s
    for s in "${ONLY[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

failed=0

# basic-http-server: a static file server with Markdown rendering (axum, `#[tokio::main]`).
# Defect, as the server ships it: a `.md` page is rendered and syntax-highlighted (comrak,
# syntect) inside the request's future, tens of milliseconds on a worker per request. Fixed:
# the rendering runs in spawn_blocking. Load: wrk on a long Markdown page.
if want basic-http-server; then
    name=basic-http-server
    fetch $name 0.11.0 80e5d89f4e570febdb87d05de6ad007ba372210c3ff65e3b07c90d4cc336b789
    site="$WORK/$name/site"
    mkdir -p "$site"
    python3 - "$site/doc.md" <<'EOF'
import sys
parts = ["# Handbook\n"]
for i in range(40):
    parts.append(f"## Section {i}\n\nSome *text* with a [link](https://example.com/{i}).\n\n```rust\n")
    for j in range(30):
        parts.append(f"fn step_{i}_{j}(x: u64) -> u64 {{ let y = x.wrapping_mul({j + 3}); y ^ (y >> 7) }}\n")
    parts.append("```\n\n")
open(sys.argv[1], "w").write("".join(parts))
EOF
    echo "<!doctype html><title>ok</title><p>ok</p>" >"$site/small.html"
    prepare $name 0.11.0 bad wrap defect >/dev/null
    prepare $name 0.11.0 fixed wrap fix >/dev/null
    variants=(bad fixed)
    if [ "$STABLE" = 1 ]; then
        prepare $name 0.11.0 stable-bad wrap defect >/dev/null
        prepare $name 0.11.0 stable-fixed wrap fix >/dev/null
        variants+=(stable-bad stable-fixed)
    fi
    for variant in "${variants[@]}"; do
        port=$(free_port)
        load="wrk -t1 -c4 -d4s http://127.0.0.1:$port/doc.md"
        profile $name $variant "$load" "$port" -- \
            "$WORK/$name/$variant.bin" -x -a "127.0.0.1:$port" "$site" || failed=1
    done
    if [ "$THROUGHPUT" = 1 ]; then
        prepare $name 0.11.0 plain fix >/dev/null
        port=$(free_port)
        throughput $name wrk "wrk -t1 -c4 -d4s http://127.0.0.1:$port/doc.md" "$port" -- \
            @BIN@ -x -a "127.0.0.1:$port" "$site"
        # Many cheap requests: what asyncprof costs per request, not per rendering.
        throughput $name wrk "wrk -t1 -c8 -d4s http://127.0.0.1:$port/small.html" "$port" -- \
            @BIN@ -x -a "127.0.0.1:$port" "$site"
    fi
fi

# simple-http-server: a static file server with gzip (axum, a runtime built by hand). Defect
# (injected): a compressible file is gzipped whole inside the request's future instead of on
# its own thread. Fixed: the server as it ships. Load: ab asking for gzip.
if want simple-http-server; then
    name=simple-http-server
    fetch $name 0.8.1 e4c2ecf52ca7e046c1dc0eab68b9853c73171b2fc2296c97c0736f04d18b1db1
    site="$WORK/$name/site"
    mkdir -p "$site"
    python3 - "$site/log.txt" <<'EOF'
import random, sys
random.seed(7)
words = ["GET", "POST", "/api/items", "/health", "200", "404", "503", "user", "timeout", "cache"]
with open(sys.argv[1], "w") as f:
    for i in range(60000):
        f.write(f"{i} " + " ".join(random.choice(words) for _ in range(8)) + f" {random.random():.6f}\n")
EOF
    echo "<!doctype html><title>ok</title><p>ok</p>" >"$site/small.html"
    prepare $name 0.8.1 bad wrap defect >/dev/null
    prepare $name 0.8.1 fixed wrap >/dev/null
    variants=(bad fixed)
    if [ "$STABLE" = 1 ]; then
        prepare $name 0.8.1 stable-bad wrap defect >/dev/null
        prepare $name 0.8.1 stable-fixed wrap >/dev/null
        variants+=(stable-bad stable-fixed)
    fi
    for variant in "${variants[@]}"; do
        port=$(free_port)
        load="ab -q -n 120 -c 4 -H Accept-Encoding:gzip http://127.0.0.1:$port/log.txt"
        profile $name $variant "$load" "$port" -- \
            "$WORK/$name/$variant.bin" --ip 127.0.0.1 --port "$port" --compress txt --silent \
            --threads 2 "$site" || failed=1
    done
    if [ "$THROUGHPUT" = 1 ]; then
        prepare $name 0.8.1 plain >/dev/null
        port=$(free_port)
        throughput $name ab "ab -q -n 120 -c 4 -H Accept-Encoding:gzip http://127.0.0.1:$port/log.txt" \
            "$port" -- @BIN@ --ip 127.0.0.1 --port "$port" --compress txt --silent --threads 2 "$site"
        throughput $name wrk "wrk -t1 -c8 -d4s http://127.0.0.1:$port/small.html" \
            "$port" -- @BIN@ --ip 127.0.0.1 --port "$port" --compress txt --silent --threads 2 "$site"
    fi
fi

exit $failed
