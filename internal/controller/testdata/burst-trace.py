#!/usr/bin/env python3
"""Decomposes BenchmarkBurst's latency per connection, from a run of the
build with burst-trace.patch applied (docs/benchmarks.md, "the observer's
own delay"):

  burst-trace.py OBS RT

OBS is BURST_TRACE's file (the observer's reads of each connection's
ESTABLISHED and lte SUB_ESTABLISHED), RT is GP_RT_TRACE's (the create
thread's or the floor's: whether the event was already queued, when it
read it, when its creates were done). Per round of the thread's (the
kernel's rounds have no thread record): the latency's p50 and p99, and the
medians of its parts, for all connections and for the slowest 1 %:
pickup (the thread's read less the observer's ESTABLISHED), create (read
to done) and lag (the observer's SUB_ESTABLISHED less done); how many
events were queued; and over the whole run, how many creates took more
than 0.5, 1 and 2 ms. Times in µs."""
import statistics as st
import sys


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def main(obs_file, rt_file):
    rt = {}
    creates = []
    for line in open(rt_file):
        tok, queued, read, done = map(int, line.split())
        rt[tok] = (queued, read, done)
        creates.append(done - read)
    rounds = []
    for line in open(obs_file):
        if line.startswith("round"):
            rounds.append([])
        else:
            rounds[-1].append(tuple(map(int, line.split())))
    us = lambda ns: f"{ns / 1000:.0f}"
    for r in rounds:
        rows = [(s - e, rt[t][1] - e, rt[t][2] - rt[t][1], s - rt[t][2], rt[t][0]) for t, e, s in r if t in rt]
        if len(rows) < len(r) / 2:
            continue  # the kernel's round
        p99 = pct([x[0] for x in rows], 0.99)
        tail = [x for x in rows if x[0] >= p99]
        med = lambda xs, i: us(st.median(x[i] for x in xs))
        print(f"n {len(rows)} p50 {us(pct([x[0] for x in rows], 0.5))} p99 {us(p99)} | "
              f"all: pickup {med(rows, 1)} create {med(rows, 2)} lag {med(rows, 3)} queued {sum(x[4] for x in rows)} | "
              f"slowest {len(tail)}: pickup {med(tail, 1)} create {med(tail, 2)} lag {med(tail, 3)} queued {sum(x[4] for x in tail)}")
    print(f"creates {len(creates)}: > 0.5 ms {sum(c > 500_000 for c in creates)}, "
          f"> 1 ms {sum(c > 1_000_000 for c in creates)}, > 2 ms {sum(c > 2_000_000 for c in creates)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
