#!/usr/bin/env python3
"""What the IMAP server's own work costs: CLIENTS concurrent loops, each connecting to
HOST:PORT, reading the greeting, sending LOGIN USER PASSWORD and reading the tagged answer,
then closing, for SECONDS; prints one row as saslauthd-bench does (LABEL: N req/s ... p99 ...).

    benches/imap_logins.py HOST PORT USER PASSWORD CLIENTS SECONDS LABEL
"""
import asyncio
import sys
import time


async def login(host, port, user, password):
    reader, writer = await asyncio.open_connection(host, port)
    await reader.readline()
    writer.write(f'a LOGIN "{user}" "{password}"\r\n'.encode())
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(b"a "):
            break
    writer.close()
    return line.startswith(b"a OK")


async def main():
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    clients, secs, label = int(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
    end = time.monotonic() + secs
    times, failed = [], 0

    async def loop():
        nonlocal failed
        while time.monotonic() < end:
            start = time.monotonic()
            ok = await login(host, port, user, password)
            times.append(time.monotonic() - start)
            failed += 0 if ok else 1

    await asyncio.gather(*(loop() for _ in range(clients)))
    times.sort()
    p = lambda q: int(times[min(len(times) - 1, int(q * len(times)))] * 1e6)
    print(f"{label}: {int(len(times) / secs)} req/s ({failed} failed) p50 {p(0.5)} us p99 {p(0.99)} us")


asyncio.run(main())
