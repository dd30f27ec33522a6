#!/bin/bash
# disk_full.sh on PostgreSQL: the database's disk fills under im-server; sends fail cleanly,
# /readyz says 503, the alarm webhook hears it; space freed, writes work again without a
# restart of either. Prints the figures.
# Needs root (a 160 MB tmpfs, the server run as the postgres user), PostgreSQL's server
# binaries, and release binaries: cargo build --release -p svrkit-im --bin im-server --bin imctl
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$(cd "$(dirname "$0")/../../.." && pwd)/target/release}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
D=/tmp/pgfull
as_pg() { runuser -u postgres -- "$@"; }
as_pg $PGBIN/pg_ctl -D $D/pg stop -m immediate >/dev/null 2>&1
umount $D 2>/dev/null; rm -rf $D; mkdir -p $D
mount -t tmpfs -o size=160m tmpfs $D
chown postgres:postgres $D
rm -f /tmp/pgfull.pglog; touch /tmp/pgfull.pglog; chown postgres /tmp/pgfull.pglog
as_pg $PGBIN/initdb -D $D/pg -A trust -U im --no-sync >/dev/null
as_pg $PGBIN/pg_ctl -D $D/pg -l /tmp/pgfull.pglog -w \
  -o "-k $D -c listen_addresses='' -c max_wal_size=32MB -c min_wal_size=32MB" start >/dev/null
as_pg $PGBIN/createdb -h $D -U im im
cd /tmp && rm -rf /tmp/pgfull-home && export IMCTL_HOME=/tmp/pgfull-home
rm -f /tmp/pgfull.hook
python3 "$HERE/webhook_sink.py" 7642 /tmp/pgfull.hook &
HOOK=$!
printf '[monitor.alarms]\nwebhook = "http://127.0.0.1:7642/hook"\n[app.store]\nkind = "postgres"\nurl = "host=%s user=im dbname=im"\n' $D > /tmp/pgfull.toml
$BIN/im-server all --config /tmp/pgfull.toml --listen 127.0.0.1:7640 --admin 127.0.0.1:7641 > /tmp/pgfull.log 2>&1 &
PID=$!
sleep 2
I="$BIN/imctl --addr 127.0.0.1:7640"
$I register ann ann-password >/dev/null; $I register ben ben-password >/dev/null
$I login ann ann-password >/dev/null; $I login ben ben-password >/dev/null
for i in $(seq 1 20); do $I --as ann send ben "before $i" --id b$i >/dev/null || echo "send $i failed"; done
echo "readyz before: $(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:7641/readyz)"
dd if=/dev/zero of=$D/filler bs=1M 2>/dev/null
echo "disk: $(df -h $D | tail -1)"
fails=0; acked=0
for i in $(seq 1 100); do
  if $I --as ann send ben "$(head -c 2250 /dev/urandom | base64 -w0) $i" --id f$i >/dev/null 2>/tmp/pgfull.err; then acked=$((acked+1)); else fails=$((fails+1)); fi
done
echo "while full: $fails sends failed, $acked acknowledged; last error: $(cat /tmp/pgfull.err)"
echo "readyz while full: $(curl -s -w ' %{http_code}' 127.0.0.1:7641/readyz | tr '\n' ' ')"
echo "postgres still running: $(as_pg $PGBIN/pg_ctl -D $D/pg status >/dev/null && echo yes || echo no)"
sleep 3
echo "log lines while full: $(sed 's/\x1b\[[0-9;]*m//g' /tmp/pgfull.log | grep -cE '^\S+ +(ERROR|WARN)') at WARN or ERROR, $(sed 's/\x1b\[[0-9;]*m//g' /tmp/pgfull.log | grep -cE '^\S+ +ERROR') at ERROR"
rm -f $D/filler
t0=$(date +%s%N)
while ! $I --as ann send ben "after" --id a1 >/dev/null 2>&1; do
  sleep 0.05
  if [ $(( ($(date +%s%N) - t0) / 1000000000 )) -gt 60 ]; then echo "no send went through in 60 s"; break; fi
done
t1=$(date +%s%N)
echo "first send that worked after freeing space: $(( (t1-t0)/1000000 )) ms"
echo "readyz after: $(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:7641/readyz)"
n=$($I --as ben sync --from 0 | wc -l)
echo "ben's inbox: $n messages (20 before + $acked acknowledged while full + 1 after)"
grep -E "ERROR|INFO.*writes work" /tmp/pgfull.log | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-220
echo "postgres log:"; grep -E "PANIC|FATAL|ERROR|ready to accept" /tmp/pgfull.pglog | sed 's/^[^]]*] //' | cut -c1-120 | sort | uniq -c | head
sleep 1.5
echo "alarm webhook received:"; cut -c1-300 /tmp/pgfull.hook 2>/dev/null
kill $PID $HOOK; wait $PID 2>/dev/null
as_pg $PGBIN/pg_ctl -D $D/pg stop -m fast >/dev/null
umount $D
