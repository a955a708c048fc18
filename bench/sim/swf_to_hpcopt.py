#!/usr/bin/env python3
"""Converts an SWF trace (plain or gzipped) to the JSON array of job records
that HPCOpt's `sim-runner --input` reads, keeping exactly the jobs `vgrid
sim` keeps (crates/swf/src/workload.rs), so both simulators see one job set:

- processors: field 8 if > 0, else field 5; jobs with < 1 or more than the
  machine's processors are dropped;
- jobs with a negative run time (field 4) or submit time (field 2) are
  dropped;
- numbers are truncated toward zero, as vgrid's reader does.

sim-runner has no estimate field: its EASY backfills with the real run time
(field 4), vgrid's with the user's estimate (field 9, else the run time).

Usage: swf_to_hpcopt.py TRACE.swf[.gz] MACHINE_PROCS OUT.json
"""

import gzip
import json
import sys


def number(tok, path, line_no, field):
    try:
        return int(tok)
    except ValueError:
        pass
    try:
        v = float(tok)
    except ValueError:
        sys.exit(f"{path}:{line_no}: field {field}: {tok!r} is not a number")
    if v != v or v in (float("inf"), float("-inf")):
        sys.exit(f"{path}:{line_no}: field {field}: {tok!r} is not finite")
    return int(v)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    path, machine, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    jobs, dropped = [], 0
    with opener(path, "rt", encoding="ascii", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith(";"):
                continue
            toks = s.split()
            if len(toks) != 18:
                sys.exit(f"{path}:{line_no}: expected 18 fields, found {len(toks)}")
            v = [number(t, path, line_no, k + 1) for k, t in enumerate(toks)]
            job_id, submit, run, alloc, req = v[0], v[1], v[3], v[4], v[7]
            procs = req if req > 0 else alloc
            if run < 0 or submit < 0 or procs < 1 or procs > machine:
                dropped += 1
                continue
            if job_id < 0:
                sys.exit(f"{path}:{line_no}: field 1: sim-runner needs job ids >= 0")
            jobs.append((submit, job_id, line_no, run, procs))
    jobs.sort()
    with open(out, "w") as f:
        json.dump(
            [
                {
                    "job_id": j,
                    "submit_ts": s,
                    "runtime_actual_sec": r,
                    "requested_cpus": p,
                }
                for (s, j, _, r, p) in jobs
            ],
            f,
            separators=(",", ":"),
        )
    print(f"{len(jobs)} jobs, {dropped} dropped", file=sys.stderr)


if __name__ == "__main__":
    main()
