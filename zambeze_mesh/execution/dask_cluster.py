"""A Dask LocalCluster in its own process: ``python -m zambeze_mesh.execution.dask_cluster``.

The ``dask`` plugin starts this once per agent (lazily, on the first Dask
activity) so that neither Dask's scheduler nor its imports live in the agent's
event loop. It writes the scheduler address to ``--address-file`` (atomically)
and runs until its stdin closes (the agent went away) or it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Start the cluster, publish its address, wait to be stopped."""
    parser = argparse.ArgumentParser(prog="zambeze_mesh.execution.dask_cluster")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--address-file", required=True)
    parser.add_argument("--local-directory", default=None)
    parser.add_argument("--memory-limit", default="auto")
    args = parser.parse_args(argv)

    import dask
    from distributed import LocalCluster

    dask.config.set({"distributed.worker.daemon": False})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
        scheduler_port=0,
        local_directory=args.local_directory,
        memory_limit=args.memory_limit,
    )
    try:
        _write_atomic(args.address_file, cluster.scheduler_address)
        print(f"dask cluster at {cluster.scheduler_address}", file=sys.stderr, flush=True)

        def watch_stdin() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        stop.wait()
    finally:
        cluster.close(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
