#!/usr/bin/env bash
# Flamegraph of Sluice under the flood.
#
#   perf/flamegraph.sh [seconds=15] [out=perf/sluice.svg] [extra flood args...]
#
# Builds release with full debug info, starts `sluice --cores 1` pinned to CPU 0, drives it
# with remote_write_flood pinned to CPU 1, records the receiver with `perf record -g` (this VM
# has no hardware counters: perf samples cpu-clock) and renders an SVG with inferno.
# Installs linux-perf (apt) and inferno (cargo) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
out=${2:-perf/sluice.svg}
shift $(( $# > 2 ? 2 : $# ))

command -v perf >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
export PATH="$HOME/.cargo/bin:$PATH"

# Full debug info and frame pointers so call stacks resolve.
export CARGO_PROFILE_RELEASE_DEBUG=true
export RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes"
cargo build --release --quiet -p sluice --bin sluice -p sluice-bench --bin remote_write_flood

work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 target/release/sluice --cores 1 --listen 127.0.0.1:$port --data-dir "$work/data" \
  --log warn &
pid=$!
until curl -sf http://127.0.0.1:$port/-/ready >/dev/null; do sleep 0.1; done

taskset -c 1 target/release/remote_write_flood --target http://127.0.0.1:$port/api/v1/receive \
  --duration $((secs + 4))s "$@" &
flood=$!
sleep 2 # let the series set get created before sampling the steady state
perf record -F 499 -g -p $pid -o "$work/perf.data" -- sleep "$secs" 2>/dev/null
wait $flood
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/folded"
inferno-flamegraph --title "sluice --cores 1 under remote_write_flood" < "$work/folded" > "$out"
# The top self-time frames, for the notes.
echo "top self-time frames:"
awk '{n=$NF; $NF=""; split($0, f, ";"); leaf=f[length(f)]; self[leaf]+=n; total+=n}
     END {for (k in self) printf "%6.2f%%  %s\n", 100*self[k]/total, k}' "$work/folded" |
  sort -rn | head -15
echo "wrote $out"
