#!/usr/bin/env bash
# The README's quick start against built binaries: starts the messaging backend (every
# service in one process, a throwaway data directory, free ports), registers alice and bob,
# sends from alice to bob, and checks that bob's sync shows the message. Exits non-zero,
# with the server's log, if any step fails.
#
#   scripts/quick-start.sh [TARGET_DIR/release]      # default: target/release
set -euo pipefail

bin=${1:-target/release}
work=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "quick start: $*" >&2
    echo "--- im-server's output" >&2
    cat "$work/server.log" >&2
    exit 1
}

"$bin/im-server" all --data "$work/data" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    grep -q "^im-server serving" "$work/server.log" && break
    kill -0 "$server" 2>/dev/null || fail "im-server exited"
    sleep 0.1
done
addr=$(sed -n 's/^im-server serving gateway on \([^ ,]*\).*/\1/p' "$work/server.log")
[ -n "$addr" ] || fail "im-server did not say it was serving within 30 s"
echo "quick start: $(grep '^im-server serving' "$work/server.log")"

# imctl keeps its sessions in ~/.imctl: a home of its own.
imctl() { HOME="$work" "$bin/imctl" --addr "$addr" "$@"; }
imctl register alice 'alice-password' >/dev/null || fail "register alice"
imctl register bob 'bob-password' >/dev/null || fail "register bob"
imctl login alice 'alice-password' >/dev/null || fail "login alice"
imctl login bob 'bob-password' >/dev/null || fail "login bob"
imctl --as alice send bob 'hi bob' >/dev/null || fail "send"
got=$(imctl sync) || fail "sync"
echo "quick start: bob's sync: $got"
[[ "$got" == *"alice: hi bob"* ]] || fail "bob's sync does not show alice's message"
