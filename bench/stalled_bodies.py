#!/usr/bin/env python3
"""300 connections announce 2 MB request bodies, send 1 MB of each and stall: prints the
service's peak RSS, how the 300 were answered and how long an ordinary call beside them took.
Run from the repository root with ../shared beside it: GBDS_BIN=target/release/gbds-notifier
python3 bench/stalled_bodies.py (BENCHMARKS.md, "Slow request bodies")."""
import os, socket, subprocess, sys, tempfile, time, json, urllib.request
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "contract-check"))
import check
sink = check.Sink(); svc = check.Service(sink.port); svc.start(os.environ["GBDS_BIN"])
def rss():
    for l in open(f"/proc/{svc.proc.pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1]) / 1024
base = rss(); peak = base; socks = []; answers = {}
try:
    for i in range(300):
        c = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
        c.sendall(b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + check.TOKEN.encode() + b"\r\nContent-Length: 2097152\r\n\r\n")
        socks.append(c)
    for c in socks:
        try:
            c.settimeout(0.05); c.sendall(b" " * (1 << 20))
        except OSError:
            pass
        peak = max(peak, rss())
    t_end = time.time() + 5
    while time.time() < t_end:
        peak = max(peak, rss()); time.sleep(0.1)
    for c in socks:
        c.settimeout(0.2)
        try:
            first = c.recv(64).split(b"\r\n")[0].decode()
        except OSError:
            first = "(no answer yet)"
        answers[first] = answers.get(first, 0) + 1
    t0 = time.time()
    code, _ = svc.call("POST", "/v1/transactions", {"tguid": "tg-big-normal", "operation": "SEARCH"})
    took = time.time() - t0
finally:
    for c in socks: c.close()
    svc.stop()
print(f"RSS at start {base:.0f} MB, peak {peak:.0f} MB; answers to the 300: {answers}; a normal call: HTTP {code} in {took*1e3:.0f} ms")
