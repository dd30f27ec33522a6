#!/usr/bin/env bash
# Measures the figures of docs/performance.md's current section again and writes them there,
# between its `performance.sh` markers: the date, the machine, the RPC table (svrkit, tarpc,
# tonic and a bare TCP floor at 1, 64 and 512 calls in flight; medians of interleaved runs)
# and the codec table (svrkit against prost, the contenders taking turns).
#
# Usage: scripts/performance.sh [RUNS] [ROUNDS]   (defaults: 3 runs of the RPC bench, 300
#        rounds of the codec bench). Needs protoc for the tonic rows (the bench leaves tonic
#        out without it, and says so). Takes about five minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
rounds=${2:-300}
doc=docs/performance.md
begin='<!-- scripts/performance.sh writes from here -->'
end='<!-- scripts/performance.sh writes up to here -->'
grep -qF "$begin" "$doc" && grep -qF "$end" "$doc" ||
    { echo "$doc has no performance.sh markers" >&2; exit 1; }

rpc_cmd="cargo bench -p svrkit-tests --bench rpc -- --runs $runs --seconds 3 --concurrency 1,64,512 --systems svrkit,tarpc,tonic,floor"
codec_cmd="cargo bench -p svrkit-tests --bench codec -- --side-by-side $rounds"
cargo bench -q -p svrkit-tests --bench rpc --bench codec --no-run 2>/dev/null

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
mem=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
echo "RPC bench ($runs runs)..." >&2
rpc=$($rpc_cmd 2>/dev/null)
echo "codec bench ($rounds rounds)..." >&2
codec=$($codec_cmd 2>/dev/null)

section=$(mktemp)
{
    echo "$begin"
    echo
    echo "Measured $started on $(nproc) cores ($cpu), $mem of RAM, Linux $(uname -r)."
    echo
    echo "\`$rpc_cmd\`:"
    echo
    echo "$rpc"
    echo
    echo "\`$codec_cmd\`:"
    echo
    echo "$codec"
    echo
    echo "$end"
} >"$section"
# Replace what is between the markers (markers included) with the new section.
awk -v begin="$begin" -v end="$end" -v file="$section" '
    $0 == begin { while ((getline line < file) > 0) print line; skip = 1; next }
    $0 == end { skip = 0; next }
    !skip { print }
' "$doc" >"$doc.new"
mv "$doc.new" "$doc"
rm -f "$section"
echo "wrote the measured section of $doc" >&2
