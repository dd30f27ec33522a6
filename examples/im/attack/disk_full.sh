#!/bin/bash
# A full disk under im-server: sends fail cleanly, /readyz says 503, the log says it once;
# space freed, writes work again without a restart; the alarm webhook hears the readiness
# alarm fire and clear. Prints the figures.
# Needs root (it mounts a 48 MB tmpfs) and release binaries: cargo build --release -p svrkit-im --bin im-server --bin imctl
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$(cd "$(dirname "$0")/../../.." && pwd)/target/release}
D=/tmp/dfull
umount $D 2>/dev/null; rm -rf $D; mkdir -p $D
mount -t tmpfs -o size=48m tmpfs $D
cd /tmp && rm -rf /tmp/dfull-home && export IMCTL_HOME=/tmp/dfull-home
# The alarm webhook's receiver: each POSTed change, one JSON line.
rm -f /tmp/dfull.hook
python3 "$HERE/webhook_sink.py" 7632 /tmp/dfull.hook &
HOOK=$!
printf '[monitor.alarms]\nwebhook = "http://127.0.0.1:7632/hook"\n' > /tmp/dfull.toml
$BIN/im-server all --config /tmp/dfull.toml --data $D/d --listen 127.0.0.1:7630 --admin 127.0.0.1:7631 > /tmp/dfull.log 2>&1 &
PID=$!
sleep 2
I="$BIN/imctl --addr 127.0.0.1:7630"
$I register ann ann-password >/dev/null; $I register ben ben-password >/dev/null
$I login ann ann-password >/dev/null; $I login ben ben-password >/dev/null
for i in $(seq 1 20); do $I --as ann send ben "before $i" --id b$i >/dev/null || echo "send $i failed"; done
echo "readyz before: $(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:7631/readyz)"
dd if=/dev/zero of=$D/filler bs=1M 2>/dev/null
echo "disk: $(df -h $D | tail -1)"
fails=0; acked=0
for i in $(seq 1 30); do
  if $I --as ann send ben "$(head -c 3000 /dev/zero | tr '\0' x) $i" --id f$i >/dev/null 2>/tmp/dfull.err; then acked=$((acked+1)); echo f$i >> /tmp/dfull.acked; else fails=$((fails+1)); fi
done
echo "while full: $fails sends failed, $acked acknowledged; last error: $(cat /tmp/dfull.err)"
echo "readyz while full: $(curl -s -w ' %{http_code}' 127.0.0.1:7631/readyz | tr '\n' ' ')"
sleep 3
echo "log lines while full: $(sed 's/\x1b\[[0-9;]*m//g' /tmp/dfull.log | grep -cE '^\S+ +(ERROR|WARN)') at WARN or ERROR, $(sed 's/\x1b\[[0-9;]*m//g' /tmp/dfull.log | grep -cE '^\S+ +ERROR') at ERROR"
rm -f $D/filler
t0=$(date +%s%N)
while ! $I --as ann send ben "after" --id a1 >/dev/null 2>&1; do sleep 0.02; done
t1=$(date +%s%N)
echo "first send that worked after freeing space: $(( (t1-t0)/1000000 )) ms"
echo "readyz after: $(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:7631/readyz)"
n=$($I --as ben sync --from 0 | wc -l)
echo "ben's inbox: $n messages (20 before + $acked acknowledged while full + 1 after)"
grep -E "ERROR|INFO.*writes work" /tmp/dfull.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-200
sleep 1.5
echo "alarm webhook received:"; cut -c1-300 /tmp/dfull.hook
kill $PID $HOOK; wait $PID 2>/dev/null
umount $D
