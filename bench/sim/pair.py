#!/usr/bin/env python3
"""Times two commands alternately, REPEAT times each, whole process.

Usage: pair.py REPEAT CMD_A... -- CMD_B...

Prints one line: "a_wall a_cpu b_wall b_cpu ratio", the median wall and
median CPU (user + system, all threads) seconds of each command, and the
median of the pairwise wall ratios a/b (alternating the two keeps a change
in the machine's load from favouring one). Output and messages of both
commands are discarded; a failing command stops the benchmark.
"""

import resource
import statistics
import subprocess
import sys
import time


def run(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main():
    n = int(sys.argv[1])
    rest = sys.argv[2:]
    if "--" not in rest:
        sys.exit(__doc__.strip().splitlines()[2])
    cut = rest.index("--")
    a, b = rest[:cut], rest[cut + 1 :]
    aw, ac, bw, bc, ratios = [], [], [], [], []
    for i in range(n):
        # Alternate which goes first too.
        first, second = (a, b) if i % 2 == 0 else (b, a)
        r1, r2 = run(first), run(second)
        ra, rb = (r1, r2) if i % 2 == 0 else (r2, r1)
        aw.append(ra[0])
        ac.append(ra[1])
        bw.append(rb[0])
        bc.append(rb[1])
        ratios.append(ra[0] / rb[0])
    m = statistics.median
    print("%.4f %.4f %.4f %.4f %.3f" % (m(aw), m(ac), m(bw), m(bc), m(ratios)))


if __name__ == "__main__":
    main()
