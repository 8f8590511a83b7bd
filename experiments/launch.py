"""Starts one run as N local processes: python -m experiments.launch --processes N -- RUN ARGS

How to try several processes on one machine (and how the tests do): each process is
`python -m experiments.run RUN ARGS --coordinator 127.0.0.1:PORT --num-processes N
--process-id I` on a free port. Their output lines are prefixed with `[I] `; the last line of
standard output is process 0's summary, unprefixed, as `experiments.run` prints it. If any
process fails, the others get `--grace` seconds to stop on their own (they do, with a
one-line error, when a peer dies) and are then killed; the exit code is the first failure's.

On a cluster, start `experiments.run` once per task instead (see the README's SLURM example).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, run_args = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(prog="python -m experiments.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, required=True, help="how many processes")
    p.add_argument("--cpu-devices", type=int, default=0, metavar="D",
                   help="simulate D CPU devices per process (XLA_FLAGS); 0: leave as is")
    p.add_argument("--grace", type=float, default=120.0,
                   help="seconds the others get to stop after one fails (default 120)")
    args = p.parse_args(argv)
    if args.processes < 1:
        p.error(f"--processes {args.processes}: expected at least 1")
    if not run_args:
        p.error("give the run's arguments after --, e.g. -- --config cnn_lowlr")
    return args, run_args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(stream, out, prefix: str, lines: list[str] | None) -> None:
    for line in iter(stream.readline, ""):
        if lines is not None:
            lines.append(line)
        out.write(prefix + line)
        out.flush()


def main(argv: list[str] | None = None) -> int:
    args, run_args = parse_args(argv)
    env = dict(os.environ)
    if args.cpu_devices:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_"
                            f"count={args.cpu_devices}").strip()
    port = free_port()
    procs, pumps, stdout_of_0 = [], [], []
    for i in range(args.processes):
        cmd = [sys.executable, "-m", "experiments.run", *run_args,
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(args.processes),
               "--process-id", str(i)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, bufsize=1)
        procs.append(proc)
        for stream, out, keep in ((proc.stdout, sys.stdout, stdout_of_0 if i == 0 else None),
                                  (proc.stderr, sys.stderr, None)):
            t = threading.Thread(target=_pump, args=(stream, out, f"[{i}] ", keep), daemon=True)
            t.start()
            pumps.append(t)

    def forward(signum, _frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    failed_at, rc = None, 0
    while any(p.poll() is None for p in procs):
        for i, proc in enumerate(procs):
            if proc.returncode not in (None, 0) and failed_at is None:
                failed_at, rc = time.monotonic(), proc.returncode
                print(f"launch: process {i} exited with code {proc.returncode}; waiting up to "
                      f"{args.grace:g} s for the others", file=sys.stderr)
        if failed_at is not None and time.monotonic() - failed_at > args.grace:
            for i, proc in enumerate(procs):
                if proc.poll() is None:
                    print(f"launch: killing process {i}", file=sys.stderr)
                    proc.kill()
        time.sleep(0.2)
    for t in pumps:
        t.join(timeout=5)
    if rc == 0:
        rc = next((p.returncode for p in procs if p.returncode != 0), 0)
    if rc == 0 and stdout_of_0:
        print(stdout_of_0[-1].rstrip("\n"))
    return rc if rc > 0 else 128 - rc if rc < 0 else 0


if __name__ == "__main__":
    sys.exit(main())
