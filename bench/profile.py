"""
Profile the daemon under one request load with py-spy (not a Comet dependency:
C{.venv/bin/pip install py-spy}).

    .venv/bin/python bench/profile.py [--n 1000] [--hosts 4] [--path /cluster/c/vms]
                                      [--concurrency 1] [--seconds 8] [--busy] [--starts 50]
                                      [--gil]

Starts the daemon as C{bench/api.py} does, sends the load from a separate
process while C{py-spy record} samples the daemon, and prints the functions
with the most samples (self and inclusive) for the reactor thread and for all
threads, and where the collapsed stacks were written.  With C{--busy}, the load
is C{--starts} (50) concurrent VM starts with C{GET /cluster} probing.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import api  # noqa: E402


def top(path: str, only_main: bool, k: int = 25) -> str:
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            if only_main and "MainThread" not in frames[0]:
                continue
            n = int(count)
            total += n
            for frame in set(frames[1:]):
                inclusive[frame] += n
            own[frames[-1]] += n
    lines = [f"  {total} samples"]
    lines.append("  inclusive:")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(k)]
    lines.append("  self:")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(k // 2)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--path", default="/cluster/c/vms")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--starts", type=int, default=api.STOPPED_VMS,
                        help="with --busy: VM starts at once")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL (where CPU goes)")
    parser.add_argument("--out", default=os.path.join(api.ROOT, "bench", "results", "profile.txt"))
    args = parser.parse_args()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="comet-profile-")
    daemon = api.Daemon(args.n, args.hosts, workdir, args.starts)
    try:
        daemon.start()
        daemon.populate()
        spy = subprocess.Popen(
            [os.path.join(api.BIN, "py-spy"), "record", "--pid", str(daemon.process.pid),
             "--duration", str(int(args.seconds)), "--rate", "250", "--threads",
             "--format", "raw", "--output", args.out, *(["--gil"] if args.gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if args.busy:
            posts = [f"/cluster/s/vms/s-{i:03d}/start" for i in range(args.starts)]
            print(api.client("busy", daemon.port, "/cluster", *posts))
        else:
            print(api.client("load", daemon.port, args.concurrency, args.seconds - 1, args.path))
        spy.wait()
    finally:
        daemon.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("reactor thread:")
    print(top(args.out, True))
    print("all threads:")
    print(top(args.out, False))
    print(f"collapsed stacks: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
