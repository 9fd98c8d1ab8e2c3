"""The zoo build's worker processes: chunks fitted in parallel, each worker dying with the build.

:func:`run_workers` is what ``build_zoo(workers=N)`` runs; a worker writes and journals each INR
itself, and the main process replays the journal into the manifest as lines appear.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor

from gmn_inr.fields import registry


def _worker_init(parent_pid: int) -> None:
    """Build workers die with the build: on Linux the kernel sends them SIGKILL when the parent
    dies (``prctl(PR_SET_PDEATHSIG)``), kill -9 included; elsewhere a thread polls the parent."""
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent_pid:                                       # died before prctl
            os._exit(1)
        return
    except (OSError, AttributeError):
        pass
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()




def run_workers(fit_chunk, writer, cfg, descs: dict, work: list, workers: int, bar, device: str = "cpu") -> list:
    """Fit the chunks of ``work`` with ``fit_chunk`` (:func:`gmn_inr.zoo.build._fit_chunk`) in
    ``workers`` processes; their journal lines enter the manifest (and move the progress bar) as
    they are written, not when a chunk ends. Returns the chunks' fit statistics."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 2) // workers)
    stats = []
    plugins = registry.plugin_sources()
    objs = dict(writer.manifest["objects"])
    last_flush = time.monotonic()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(os.getpid(),)) as ex:
        futs = [ex.submit(fit_chunk, str(writer.root), cfg, descs, todo, threads, plugins=plugins,
                          manifest_objects=objs, device=device) for todo in work]
        pending = set(futs)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                new = writer.replay_journal()
                if bar is not None and new:
                    bar.update(len(new))
                for f in finished:
                    stats += f.result().stats          # a worker's exception is raised here
                if finished or time.monotonic() - last_flush > 30:
                    writer.flush()
                    last_flush = time.monotonic()
        except BrokenProcessPool as exc:
            from .store import ZooError

            raise ZooError(f"a build worker of {writer.root} died ({exc}); what it stored is kept: run the "
                           f"build again to resume") from None
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    new = writer.replay_journal()
    if bar is not None and new:
        bar.update(len(new))
    return stats
