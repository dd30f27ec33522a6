#!/usr/bin/env python3
# Slowloris and /stats.json flood against an admin port, while probing /livez and /readyz
# from another address; prints probe latency percentiles and failures.
# Usage: im-server all --admin 127.0.0.1:7641 ..., then: python3 admin_flood.py 127.0.0.1 7641 20 (needs 127.0.0.2-6 to be bindable, as on Linux loopback).
import asyncio, sys, time, statistics
host, port = sys.argv[1], int(sys.argv[2])
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20

async def slowloris(n):
    conns = []
    for _ in range(n):
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=('127.0.0.1', 0))
            w.write(b"GET /stats.json HTTP/1.1\r\nHo")
            conns.append(w)
        except Exception:
            pass
    end = time.time() + seconds
    while time.time() < end:
        # re-open what the server closed
        for i, w in enumerate(conns):
            if w.is_closing():
                try:
                    r, w2 = await asyncio.open_connection(host, port, local_addr=('127.0.0.1', 0))
                    w2.write(b"GET /stats.json HTTP/1.1\r\nHo")
                    conns[i] = w2
                except Exception:
                    pass
        await asyncio.sleep(0.5)

async def get(path, src):
    r, w = await asyncio.open_connection(host, port, local_addr=(src, 0))
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await r.read()
    w.close()
    return data

async def stats_flood(src, stop):
    n = 0
    while time.time() < stop:
        try:
            await get("/stats.json", src)
            n += 1
        except Exception:
            await asyncio.sleep(0.01)
    return n

async def probe(stop):
    lat, fails = [], 0
    while time.time() < stop:
        t = time.perf_counter()
        try:
            data = await asyncio.wait_for(get("/readyz", "127.0.0.2"), 2)
            if not data.startswith(b"HTTP/1.1 200"):
                fails += 1
            else:
                lat.append((time.perf_counter() - t) * 1e3)
        except Exception:
            fails += 1
        await asyncio.sleep(0.05)
    return lat, fails

async def main():
    stop = time.time() + seconds
    tasks = [asyncio.create_task(slowloris(300))]
    floods = [asyncio.create_task(stats_flood(f"127.0.0.{3 + i % 4}", stop)) for i in range(64)]
    lat, fails = await probe(stop)
    pages = sum([await f for f in floods])
    for t in tasks: t.cancel()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float('nan')
    print(f"probes {len(lat) + fails}, failed {fails}; readyz p50 {q(0.5):.1f} ms p99 {q(0.99):.1f} ms max {lat[-1] if lat else 0:.1f} ms; /stats.json pages served {pages}")

asyncio.run(main())
