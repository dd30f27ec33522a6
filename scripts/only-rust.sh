#!/usr/bin/env bash
# Runs a command as on a machine with only the Rust toolchain: in a private mount namespace
# where protoc, etcd, PostgreSQL and Chromium are hidden (the same programs `.ci/run`
# installs), so that the README's commands can be checked the way a newcomer meets them.
#
#   scripts/only-rust.sh cargo test --workspace
#   scripts/only-rust.sh bash -c 'command -v protoc || echo hidden'
#
# As root it uses a mount namespace; otherwise a user namespace with one (where the kernel
# allows unprivileged ones). Nothing outside the command sees the change: the namespace ends
# with it.
set -euo pipefail

if [ "${ONLY_RUST_INSIDE:-}" != 1 ]; then
    [ $# -gt 0 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
    user=()
    [ "$(id -u)" -ne 0 ] && user=(--user --map-root-user)
    ONLY_RUST_INSIDE=1 exec unshare "${user[@]}" --mount --propagation private "$0" "$@"
fi
unset ONLY_RUST_INSIDE

# A file is hidden under /dev/null (a character device: not an executable file, so neither
# the shell nor the tests find it); a directory under an empty tmpfs.
hide() {
    local path real
    for path in "$@"; do
        [ -e "$path" ] || continue
        real=$(readlink -f "$path")
        if [ -d "$real" ]; then
            mount -t tmpfs -o ro,size=4k only-rust "$real"
        else
            mount --bind /dev/null "$real"
        fi
    done
}

programs=(protoc etcd etcdctl etcdutl chromium chromium-browser google-chrome initdb postgres pg_ctl)
for program in "${programs[@]}"; do
    while path=$(command -v "$program" 2>/dev/null) && [ -n "$path" ] && [ -f "$(readlink -f "$path")" ]; do
        hide "$path"
        hash -r
    done
done
hide /usr/lib/postgresql /usr/lib/chromium
unset PROTOC
hash -r

# Whatever the command finds of them now would make its result prove nothing.
for program in "${programs[@]}"; do
    if "$program" --version >/dev/null 2>&1; then
        echo "only-rust.sh: $program still runs: $(command -v "$program")" >&2
        exit 1
    fi
done

exec "$@"
