"""Runs a command under `/usr/bin/time -v` and reports, as one JSON line on stdout: wall seconds, the maximum
resident set size (time's figure: heap and mapped file pages together), the peak of the process's anonymous
resident memory (`RssAnon` in /proc/<pid>/status, sampled every 20 ms: the heap, since vl2v's jemalloc never
gives freed pages back) and of its file-backed resident memory (`RssFile`: mapped pages of the view files),
and the seconds the command printed after "caches opened in".

    python3 tests/bench/peak_memory.py LOG -- COMMAND [ARGS...]

The command's stderr goes to LOG (with time's report at its end); exits with the command's status.
"""

import json
import os
import re
import subprocess
import sys
import time


def children(pid):
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def status_kib(pid, keys):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in keys:
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def main():
    log_path, sep, *command = sys.argv[1:]
    assert sep == "--" and command, __doc__
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["/usr/bin/time", "-v", *command], stdout=subprocess.DEVNULL, stderr=log)
        peak = {"RssAnon": 0, "RssFile": 0}
        target = None
        while proc.poll() is None:
            if target is None:
                kids = children(proc.pid)
                target = kids[0] if kids else None
            if target is not None:
                for key, kib in status_kib(target, peak).items():
                    peak[key] = max(peak[key], kib)
            time.sleep(0.02)
    wall = time.monotonic() - started
    text = open(log_path, errors="replace").read()
    max_rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    opened = re.findall(r"caches opened in ([0-9.]+) s", text)
    print(json.dumps({
        "status": proc.returncode,
        "wall_s": round(wall, 2),
        "max_rss_mib": round(int(max_rss.group(1)) / 1024, 1) if max_rss else None,
        "peak_anon_mib": round(peak["RssAnon"] / 1024, 1),
        "peak_file_mib": round(peak["RssFile"] / 1024, 1),
        "open_s": float(opened[-1]) if opened else None,
    }))
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
