"""Where the tasks of a run go: this process, a dask LocalCluster, or a running scheduler; the workers' model cache."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..core import model_files


class ClusterError(RuntimeError):
    """The cluster cannot be started or reached, or a task failed on every try."""


_MODELS: dict[str, model_files.Model] = {}


def keep_model(path: str, model: model_files.Model) -> None:
    """Use this loaded model for ``path`` in this process (no second load; replaces an older one)."""
    _MODELS[path] = model


def worker_model(path: str, threads: int = 0) -> model_files.Model:
    """The model of ``path``, loaded once per process (worker) and kept; ``threads`` torch threads (0: as is)."""
    model = _MODELS.get(path)
    if model is None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        model = _MODELS[path] = model_files.load(path)
    return model


def worker_device(device: str):
    """The torch device this process (a worker) uses: ``auto`` resolved here, ``cuda`` one GPU per worker.

    A dask worker named ``k`` (a LocalCluster's workers are 0, 1, ...) takes GPU ``k`` modulo the
    number of GPUs it sees; outside a worker, the first GPU.
    """
    import torch

    from ..core.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        n = max(torch.cuda.device_count(), 1)
        index = 0
        try:
            from distributed import get_worker

            name = get_worker().name
            index = (int(name) if str(name).isdigit() else sum(map(ord, str(name)))) % n
        except (ImportError, ValueError):  # not on a dask worker: the first GPU
            pass
        resolved = torch.device("cuda", index)
    return resolved


def cluster_size(device: str, workers: int | None = None) -> tuple[int, int]:
    """Workers and torch threads per worker for ``local`` (one per GPU, else half the cores) or ``local:N``.

    The machine's cores are shared out between the workers.
    """
    cores = os.cpu_count() or 1
    if workers is not None:
        n = workers
    elif device.startswith("cuda"):
        import torch

        n = max(torch.cuda.device_count(), 1)
    else:
        n = max(cores // 2, 1)
    return n, max(cores // n, 1)


class Cluster:
    """Where tasks run: here (``"none"``), a LocalCluster, a remote scheduler, or a caller's ``distributed.Client``.

    Start it once for many images (``with Cluster("local", "cpu", print) as c: ...``, then
    ``segment_to_zarr(..., cluster=c)``); it reports progress of each phase through ``log``.

    Parameters
    ----------
    cluster : str or distributed.Client
        ``"none"``, ``"local"``, ``"local:N"``, a scheduler address, or a client (left open).
    device : str
        The run's device (sizes ``"local"``: one worker per GPU).
    log : callable
        Receives progress lines.

    Raises
    ------
    ClusterError
        A bad ``local:N``, or a scheduler that cannot be reached.
    """

    def __init__(self, cluster, device: str = "cpu", log: Callable[[str], None] = lambda _msg: None) -> None:
        self.cluster = cluster
        self.log = log
        self.client = None
        self._own = None
        self._close_client = True
        self.threads = 0
        if cluster == "none":
            return
        if not isinstance(cluster, str):  # a distributed.Client the caller runs
            self.client, self._close_client = cluster, False
            return
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - distributed is a dependency
            raise ClusterError(f"a dask cluster needs dask.distributed ({exc}): pip install distributed") from None
        if cluster == "local" or cluster.startswith("local:"):
            asked = None
            if cluster.startswith("local:"):
                try:
                    asked = int(cluster.split(":", 1)[1])
                except ValueError:
                    raise ClusterError(f"cluster {cluster!r}: give local:N with N a number of workers") from None
                if asked < 1:
                    raise ClusterError(f"cluster {cluster!r}: at least one worker")
            n, threads = cluster_size(device, asked)
            self.threads = threads
            # silence_logs CRITICAL: a task that fails on bad input is reported here in one line; at ERROR
            # each worker printed dask's "Compute Failed" block with its traceback besides
            self._own = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL
            )
            self.client = Client(self._own)
            log(f"local dask cluster: {n} worker process(es), {threads} torch thread(s) each")
        else:
            try:
                self.client = Client(cluster, timeout="10s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise ClusterError(f"cannot reach the dask scheduler at {cluster}: {exc}") from None
            workers = len(self.client.scheduler_info().get("workers", {}))
            log(f"dask scheduler {cluster}: {workers} worker(s)")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close what this object started (not a caller's client)."""
        if self.client is not None and self._close_client:
            self.client.close()
        if self._own is not None:
            self._own.close()

    def map(
        self,
        fn,
        items: Sequence[int],
        what: str,
        *args,
        log: Callable[[str], None] | None = None,
        extra: Callable[[int], tuple] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict:
        """Run ``fn(args[0], i, *args[1:], *extra(i))`` for each item; return results by item (progress to ``log``).

        On a cluster, at most :meth:`in_flight` tasks are submitted at a time (the next one as
        each ends), which keeps every worker busy without handing the scheduler a whole slide.
        ``should_stop`` is asked between tasks; when it says yes, no task is started any more,
        the ones submitted are waited for (their writes land before this returns) and the
        results so far come back.
        """
        log = log or self.log
        more = extra or (lambda _i: ())
        total = len(items)
        out: dict[int, Any] = {}
        if not total:
            return out
        t0 = time.perf_counter()
        last = [t0]

        def progress(done: int) -> None:
            now = time.perf_counter()
            if done == total or now - last[0] >= 10:
                last[0] = now
                eta = (now - t0) / done * (total - done)
                log(f"{what} {done}/{total}" + (f", about {_duration(eta)} left" if done < total else ""))

        stop = should_stop or (lambda: False)
        if self.client is None:
            for k, i in enumerate(items):
                if stop():
                    break
                out[i] = fn(args[0], i, *args[1:], *more(i))
                progress(k + 1)
            return out
        from distributed import as_completed

        if stop():
            return out
        futures: dict[Any, int] = {}
        todo = iter(items)

        def submit() -> Any | None:
            i = next(todo, None)
            if i is None:
                return None
            fut = self.client.submit(
                fn, args[0], i, *args[1:], *more(i), key=f"{what}-{i}-{os.getpid()}-{t0}", retries=3
            )
            futures[fut] = i
            return fut

        window = [self.in_flight(), time.perf_counter()]  # workers may join later (an adaptive cluster)
        first = [f for f in (submit() for _ in range(window[0])) if f is not None]
        running = as_completed(first)
        outstanding = len(first)
        stopped = False
        for k, fut in enumerate(running):
            outstanding -= 1
            i = futures[fut]
            try:
                out[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a task that failed on every try ends the run
                for f in futures:
                    f.cancel()
                raise ClusterError(
                    f"{what} {i} failed on the cluster after retries: {type(exc).__name__}: {exc} "
                    "(every worker needs napari-unet-loop, torch and the model file at the same path)"
                ) from exc
            progress(k + 1)
            stopped = stopped or stop()
            if stopped:
                continue
            if time.perf_counter() - window[1] > 1.0:
                window[:] = [self.in_flight(), time.perf_counter()]
            while outstanding < window[0] and (nxt := submit()) is not None:
                running.add(nxt)
                outstanding += 1
        return out

    def in_flight(self) -> int:
        """How many tasks :meth:`map` keeps submitted at once: twice the cluster's threads (at least 2)."""
        try:
            threads = sum(int(n) for n in self.client.nthreads().values())
        except Exception:  # noqa: BLE001 - a scheduler that does not say: a modest window
            threads = 4
        return max(2 * threads, 2)

    def run_each(self, fn, jobs: Sequence[Any], what: str, **kwargs) -> Iterator[tuple[Any, Any]]:
        """Run ``fn(job, **kwargs)`` for each job on the cluster; yield ``(job, result or exception)`` as they end.

        Errors of the job itself come back as they were raised (one job's failure does not stop
        the others); a job that no worker could run comes back as a :class:`ClusterError`.
        """
        from distributed import as_completed

        t0 = time.perf_counter()
        futures = {
            self.client.submit(fn, job, **kwargs, key=f"{what}-{k}-{os.getpid()}-{t0}"): (k, job)
            for k, job in enumerate(jobs)
        }
        for fut in as_completed(futures):
            k, job = futures[fut]
            try:
                out: Any = fut.result()
            except Exception as exc:  # noqa: BLE001 - handed to the caller with its job
                out = exc
                if not isinstance(exc, (ValueError, OSError)):  # the job's own errors (input, files) stay as they are
                    out = ClusterError(f"{what} {k + 1} could not run on the cluster: {type(exc).__name__}: {exc}")
            yield job, out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
