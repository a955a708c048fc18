#!/usr/bin/env python3
"""Benchmarks of the VM runtime (see docs/benchmarks.md, "VM runtime").

Measures, on real QEMU with the stock image:
  1. time from `vgrid vm start` to the command running, against the same
     QEMU command line started by hand (spawn -> agent's Started frame);
  2. checkpoint throughput of guests with memory filled with random data,
     against `dd` sequential writes to the same file system; an
     incremental checkpoint of the idle VM against the full one; restore
     time (into a second data directory);
  3. VM setup time with 10 MB / 1 GB / 10 GB in a data repository, against
     copying the data (what packing it into the image costs each VM).

Prints Markdown tables and writes the raw numbers as JSON. Standard library
only; run through bench/vm/run.sh.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Vgrid:
    def __init__(self, binary, data_dir):
        self.binary = binary
        self.data_dir = data_dir

    def run(self, *args, check=True):
        env = dict(os.environ, VGRID_DATA_DIR=self.data_dir)
        p = subprocess.run([self.binary, *args], env=env, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise RuntimeError(f"vgrid {' '.join(args)} failed: {p.stderr.strip()}")
        return p

    def timed(self, *args):
        t = time.monotonic()
        p = self.run(*args)
        return time.monotonic() - t, p

    def vm_dir(self, name):
        return os.path.join(self.data_dir, "vms", name)

    def pid(self, name):
        with open(os.path.join(self.vm_dir(name), "qemu.pid")) as f:
            return int(f.read().strip())

    def gone(self, name):
        self.run("vm", "kill", name, check=False)
        self.run("vm", "rm", name, check=False)

    def stdout_of(self, name):
        return self.run("vm", "logs", name).stdout


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def wait_output(vg, name, needle, limit=1800):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if needle in vg.stdout_of(name):
            return
        vms = json.loads(vg.run("vm", "ls", "--json").stdout)
        state = next((v["state"] for v in vms if v["name"] == name), "gone")
        if state not in ("starting", "running", "busy"):
            raise RuntimeError(f"VM {name} is {state} before printing {needle!r}")
        time.sleep(1)
    raise RuntimeError(f"VM {name} never printed {needle!r}")


# --- 1. start latency ---------------------------------------------------------

def started_frame(path):
    """Whether agent.out holds a Started frame (magic VG, kind 3)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    i = 0
    while i + 8 <= len(data):
        if data[i:i + 2] != b"VG":
            j = data.find(b"VG", i + 1)
            if j < 0:
                return False
            i = j
            continue
        kind = data[i + 2]
        length = int.from_bytes(data[i + 4:i + 8], "little")
        if kind == 3:
            return True
        i += 8 + length
    return False


def by_hand(argv, vm_dir, hand_dir, disk_bytes, context):
    """Runs QEMU with vgrid's exact arguments, paths moved to hand_dir."""
    if os.path.exists(hand_dir):
        shutil.rmtree(hand_dir)
    os.makedirs(hand_dir)
    args = [a.replace(vm_dir, hand_dir) for a in argv]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    os.path.join(hand_dir, "disk-0.qcow2"), str(disk_bytes)], check=True)
    with open(os.path.join(hand_dir, "context.json"), "wb") as f:
        f.write(context)
    for f in ("agent.out", "console.log"):
        open(os.path.join(hand_dir, f), "w").close()
    out = os.path.join(hand_dir, "agent.out")
    t = time.monotonic()
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        while not started_frame(out):
            if p.poll() is not None:
                raise RuntimeError("hand-started QEMU exited")
            time.sleep(0.005)
        return time.monotonic() - t
    finally:
        p.kill()
        p.wait()


def bench_start(vg, runs, work):
    rows = []
    for i in range(runs):
        name = f"start{i}"
        dt, _ = vg.timed("vm", "start", name, "--image", "tiny", "--no-network",
                         "--", "sh", "-c", "sleep 100000")
        pid = vg.pid(name)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        with open(os.path.join(vg.vm_dir(name), "vm.json")) as f:
            rec = json.load(f)
        with open(os.path.join(vg.vm_dir(name), "context.json"), "rb") as f:
            context = f.read()
        vg.gone(name)
        hand = by_hand(argv, vg.vm_dir(name), os.path.join(work, "hand"), rec["disk_bytes"], context)
        rows.append({"vgrid_s": dt, "hand_s": hand})
        log(f"start run {i}: vgrid {dt:.2f} s, by hand {hand:.2f} s (load {loadavg()})")
    return rows


# --- 2. checkpoints -------------------------------------------------------------

def dd_write_speed(directory, mib=1024):
    path = os.path.join(directory, "dd-test")
    p = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}",
                        "conv=fdatasync"], capture_output=True, text=True)
    os.remove(path)
    # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 6.26 s, 171 MB/s"
    line = p.stderr.strip().splitlines()[-1]
    secs = float(line.split(" copied, ")[1].split(" s")[0])
    return mib * 1024 * 1024 / secs


def fill_script():
    """Fills all but ~160 MiB of the guest's memory with random data (a
    tmpfs), leaving room for its kernel, initramfs and shell."""
    return ("total=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo); fill=$((total - 160)); "
            "mkdir -p /mnt/fill && mount -t tmpfs -o size=100% tmpfs /mnt/fill; "
            "dd if=/dev/urandom of=/mnt/fill/a bs=1048576 count=$fill 2>/dev/null; "
            "echo filled $fill rc=$?; sleep 100000")


def bench_checkpoint(vg, vg2, sizes, work):
    rows = []
    ck_root = os.path.join(work, "ckpt")
    for mem in sizes:
        name = f"mem{mem}"
        log(f"{mem} MiB guest: filling its memory with random data")
        vg.run("vm", "start", name, "--image", "tiny", "--no-network", "--memory-mb", str(mem),
               "--", "sh", "-c", fill_script())
        wait_output(vg, name, "filled")
        words = vg.stdout_of(name).split()
        fill = int(words[words.index("filled") + 1])
        if "rc=0" not in words:
            raise RuntimeError(f"filling the {mem} MiB guest failed: {' '.join(words)}")
        if os.path.exists(ck_root):
            shutil.rmtree(ck_root)
        os.makedirs(ck_root)
        dd = dd_write_speed(ck_root)
        load = loadavg()
        dt, p = vg.timed("vm", "checkpoint", name, "--out", os.path.join(ck_root, "full"), "--json")
        full = json.loads(p.stdout)[0]
        time.sleep(5)
        dt2, p = vg.timed("vm", "checkpoint", name, "--out", os.path.join(ck_root, "incr"), "--json")
        incr = json.loads(p.stdout)[0]
        vg.gone(name)
        dtr, p = vg2.timed("vm", "restore", os.path.join(ck_root, "full"), "--name", name)
        vg2.gone(name)
        row = {
            "memory_mib": mem, "filled_mib": fill, "dd_bytes_per_s": dd, "load": load,
            "full": full, "full_wall_s": dt, "incr": incr, "incr_wall_s": dt2,
            "restore_wall_s": dtr, "restore_out": p.stdout.strip(),
        }
        rows.append(row)
        log(f"{mem} MiB: full {full['stream_bytes']/2**20:.0f} MiB stream in {full['total_ms']} ms, "
            f"stored {full['stored_bytes']/2**20:.0f} MiB; dd {dd/2**20:.0f} MiB/s; "
            f"incremental stored {incr['stored_bytes']/2**20:.1f} MiB; restore {dtr:.1f} s "
            f"(load {loadavg()}); stages {full.get('memory_stages')}")
        shutil.rmtree(ck_root)
    return rows


# --- 3. data repositories -----------------------------------------------------------

def parse_size(s):
    units = {"M": 2**20, "G": 2**30}
    return int(s[:-1]) * units[s[-1]]


def bench_repo(vg, sizes, work):
    rows = []
    for size in sizes:
        repo = os.path.join(vg.data_dir, "repos", f"r{size}")
        os.makedirs(repo, exist_ok=True)
        os.chmod(os.path.join(vg.data_dir, "repos"), 0o755)
        os.chmod(repo, 0o755)
        blob = os.path.join(repo, "blob")
        subprocess.run(["dd", "if=/dev/zero", f"of={blob}", "bs=1M",
                        f"count={parse_size(size) // 2**20}", "conv=fsync"],
                       check=True, capture_output=True)
        os.chmod(blob, 0o644)
        name = f"repo{size}"
        dt, _ = vg.timed("vm", "start", name, "--image", "tiny", "--no-network",
                         "--mount", f"r{size}:/data:ro", "--", "sh", "-c", "ls -l /data; sleep 100000")
        vg.gone(name)
        # The alternative: the data copied for the VM (into its image).
        copy = os.path.join(work, "copied")
        os.makedirs(copy, exist_ok=True)
        t = time.monotonic()
        subprocess.run(["cp", blob, os.path.join(copy, "blob")], check=True)
        subprocess.run(["sync"], check=True)
        copy_s = time.monotonic() - t
        shutil.rmtree(copy)
        dt_plain, _ = vg.timed("vm", "start", name, "--image", "tiny", "--no-network",
                               "--", "sh", "-c", "sleep 100000")
        vg.gone(name)
        os.remove(blob)
        rows.append({"size": size, "with_repository_s": dt, "copy_s": copy_s,
                     "start_without_data_s": dt_plain})
        log(f"repo {size}: start with repository {dt:.2f} s; copy {copy_s:.2f} s + start "
            f"{dt_plain:.2f} s (load {loadavg()})")
    return rows


def mib(b):
    return b / 2**20


def report(res):
    out = []
    s = res["start"]
    if s:
        v = [r["vgrid_s"] for r in s]
        h = [r["hand_s"] for r in s]
        mv, mh = statistics.median(v), statistics.median(h)
        out.append("Start to command running (median of %d):\n" % len(s))
        out.append("| | median | min | max |\n|---|---|---|---|")
        out.append(f"| `vgrid vm start` | {mv:.2f} s | {min(v):.2f} s | {max(v):.2f} s |")
        out.append(f"| same QEMU by hand | {mh:.2f} s | {min(h):.2f} s | {max(h):.2f} s |")
        out.append(f"\nOverhead of vgrid: {100 * (mv / mh - 1):+.1f}% (medians).\n")
    if res["checkpoint"]:
        out.append("| guest | filled | stream | full: stored | full: time | throughput | dd | ratio | incremental: stored | incr/full | restore | load |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in res["checkpoint"]:
            f, i = r["full"], r["incr"]
            thr = f["stream_bytes"] / (f["total_ms"] / 1000)
            out.append(
                f"| {r['memory_mib']} MiB | {r['filled_mib']} MiB | {mib(f['stream_bytes']):.0f} MiB "
                f"| {mib(f['stored_bytes']):.0f} MiB | {f['total_ms'] / 1000:.2f} s "
                f"| {mib(thr):.0f} MiB/s | {mib(r['dd_bytes_per_s']):.0f} MiB/s "
                f"| {100 * thr / r['dd_bytes_per_s']:.0f}% | {mib(i['stored_bytes']):.1f} MiB "
                f"| {100 * i['stored_bytes'] / f['stored_bytes']:.1f}% | {r['restore_wall_s']:.1f} s "
                f"| {r.get('load', '?')} |")
        out.append("")
    if res["repo"]:
        out.append("| data | start with the repository mounted | copy the data | start without data | copy + start |")
        out.append("|---|---|---|---|---|")
        for r in res["repo"]:
            out.append(f"| {r['size']} | {r['with_repository_s']:.2f} s | {r['copy_s']:.2f} s "
                       f"| {r['start_without_data_s']:.2f} s | {r['copy_s'] + r['start_without_data_s']:.2f} s |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vgrid", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="256,1024,4096")
    ap.add_argument("--repo-sizes", default="10M,1G,10G")
    ap.add_argument("--only", default="start,checkpoint,repo")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    only = a.only.split(",")
    vg = Vgrid(a.vgrid, os.path.join(a.work, "data"))
    vg2 = Vgrid(a.vgrid, os.path.join(a.work, "data2"))
    res = {"load_before": loadavg(), "start": [], "checkpoint": [], "repo": []}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        if "start" in only:
            res["start"] = bench_start(vg, a.runs, a.work)
        if "checkpoint" in only:
            res["checkpoint"] = bench_checkpoint(vg, vg2, [int(x) for x in a.sizes.split(",")], a.work)
        if "repo" in only:
            res["repo"] = bench_repo(vg, a.repo_sizes.split(","), a.work)
    finally:
        for v in (vg, vg2):
            p = v.run("vm", "ls", "--json", check=False)
            for vm in json.loads(p.stdout or "[]"):
                v.gone(vm["name"])
    res["load_after"] = loadavg()
    with open(a.json, "w") as f:
        json.dump(res, f, indent=2)
    print(report(res))
    print(f"\nLoad average (1 min) before: {res['load_before']}, after: {res['load_after']}.")


if __name__ == "__main__":
    main()
