"""A pool of warm Ray actors: each loads its state once (a model), then serves payloads (shards).

`run_on_actors` starts the actors, keeps each one busy, and hands every result to `on_result` in
the calling thread, so that this process alone writes the database. An actor that dies (kill -9,
OOM, lost node) has its in-flight payloads sent again to another actor or to itself once Ray has
restarted it; an exception raised by `work` itself is not retried: the pool stops and raises it.

Ray is imported inside the functions only: `import app.run.ray_pool` imports neither ray nor torch.

Authentication (Ray 2.60 turns token auth on by default for a cluster that `ray.init()` starts):
RAY_AUTH_MODE is `token` or `disabled`. Where it is unset, the driver copies `ray start`'s own rule:
token mode as soon as a token is available (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token), else disabled. A token-mode driver also joins a head whose auth is disabled.
"""
from __future__ import annotations

import collections
import logging
import math
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.core.contract import check_cancel
from analyses.core.errors import BadInput, IwbError

LOCAL = "local"
AUTO = "auto"


class PoolError(IwbError):
    """The pool could not run: no cluster, no actor could start, or a payload kept losing its actor."""

    title = "Cluster error"


@dataclass(frozen=True)
class PoolOptions:
    """How many actors, where, and with what.

    address: "local" (a private Ray instance started by this call, shut down at the end), "auto"
    (the running cluster: RAY_ADDRESS, else the one started on this machine), or an address: "host:6379" (joins as a driver; this machine must be able to reach every node) or
    "ray://host:10001" (Ray Client; needs the ray[client] extra).
    """

    address: str = LOCAL
    actors: int | None = None          # default: one per GPU; where the cluster has none, one per CPU
    num_gpus: float | None = None      # per actor; default 1 where the cluster has GPUs, else 0
    num_cpus: float | None = None      # per actor; default 0 with GPUs, else half of an even share (never all)
    threads_per_actor: int | None = None  # torch/OpenMP threads per actor; default 1 on CPUs, Ray's (1) with GPUs
    in_flight: int = 2                 # payloads queued on each actor (one running, one waiting)
    max_actor_restarts: int = 3        # Ray restarts a dead actor (and its init) this many times
    max_payload_attempts: int = 3      # a payload whose actor died this many times stops the pool
    start_timeout_s: float | None = 900.0  # no actor ready after this long: PoolError
    local_cpus: int | None = None      # address="local" only: logical CPUs/GPUs of the private instance
    local_gpus: int | None = None      # (default: what Ray detects)
    runtime_env: dict | None = None    # passed to ray.init, e.g. {"env_vars": {"HF_HOME": "/scratch/hf"}}


@dataclass(frozen=True)
class Plan:
    """What run_on_actors decided to start, from the options and the cluster's resources."""

    actors: int
    num_gpus: float
    num_cpus: float
    threads: int | None


def plan(options: PoolOptions, resources: dict) -> Plan:
    """Fill the options' defaults from the cluster's resources (ray.cluster_resources())."""
    total_gpus = float(resources.get("GPU", 0) or 0)
    total_cpus = float(resources.get("CPU", 0) or 0)
    num_gpus = options.num_gpus if options.num_gpus is not None else (1.0 if total_gpus >= 1 else 0.0)
    if options.actors is not None:
        actors = options.actors
    elif num_gpus > 0:
        actors = max(1, int(total_gpus // num_gpus))
    else:
        actors = max(1, int(total_cpus))
    if actors < 1:
        raise BadInput(f"--actors must be at least 1, not {actors}")
    if num_gpus < 0 or (options.num_cpus is not None and options.num_cpus < 0):
        raise BadInput("an actor's CPUs and GPUs cannot be negative")
    if options.num_cpus is not None:
        num_cpus = options.num_cpus
    elif num_gpus > 0:
        num_cpus = 0.0
    else:
        # Half of an even share: the actors always fit, and CPU is left for anything else Ray
        # schedules (on 2 cores, actors that claim every CPU starve other tasks).
        share = total_cpus / actors if total_cpus else 1.0
        num_cpus = math.floor(min(1.0, share) / 2 * 1000) / 1000 or 0.001
    # Checked before anything waits: an actor that no node can hold would wait start_timeout_s.
    if num_gpus > total_gpus:
        raise BadInput(f"each actor asks for {num_gpus:g} GPU but the Ray cluster has {total_gpus:g}; use --gpus-per-actor 0 (or fewer) here")
    if total_cpus and num_cpus > total_cpus:
        raise BadInput(f"each actor asks for {num_cpus:g} CPUs but the Ray cluster has {total_cpus:g}")
    if options.threads_per_actor is not None:
        threads = options.threads_per_actor
        if threads < 1:
            raise BadInput(f"threads per actor must be at least 1, not {threads}")
    elif num_gpus > 0:
        threads = None  # Ray's own setting: OMP_NUM_THREADS=1 for num_cpus < 2 (unless the environment sets it)
    else:
        # One each: CPU work scales by adding actors. OpenMP threads that share cores with other
        # busy processes spin at their barriers; measured here, 1 actor with 2 threads on 2 busy
        # cores ran 3x slower than with 1 thread.
        threads = 1
    return Plan(actors=actors, num_gpus=float(num_gpus), num_cpus=float(num_cpus), threads=threads)


# --- the actor -------------------------------------------------------------------------------

class _Host:
    """One warm actor: init once, then work(state, payload) per call. Wrapped by ray.remote lazily."""

    def __init__(self, index: int, init: Callable[..., Any], init_args: tuple, work: Callable, threads: int | None):
        started = time.monotonic()
        self._index = index
        self._work = work
        self._state = None
        self._init_error: Exception | None = None
        if threads:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ[name] = str(threads)
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(threads)
        try:
            self._state = init(*init_args)
        except Exception as error:  # reported by ready(), so it surfaces with its own class
            self._init_error = error
        if threads and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        self._init_s = time.monotonic() - started

    def ready(self) -> dict:
        if self._init_error is not None:
            raise self._init_error
        import ray

        context = ray.get_runtime_context()
        torch = sys.modules.get("torch")
        return {
            "pid": os.getpid(),
            "node": ray.util.get_node_ip_address(),
            "node_id": context.get_node_id(),
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "threads": torch.get_num_threads() if torch is not None else None,
            "omp": os.environ.get("OMP_NUM_THREADS"),
            "init_s": round(self._init_s, 2),
        }

    def work(self, payload: Any) -> Any:
        return self._work(self._state, payload)


# --- the driver ------------------------------------------------------------------------------

@dataclass
class _Slot:
    index: int
    handle: Any
    state: str = "starting"            # starting | ready | recovering | dead
    info: dict | None = None
    probe: Any = None                  # ObjectRef of the pending ready() call
    in_flight: dict = field(default_factory=dict)   # ObjectRef -> key
    probe_failures: int = 0
    retry_at: float = 0.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BadInput("Ray is not installed: pip install 'iwb[cluster]' (ray==2.60.0)") from None
    return ray


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return Path(path).expanduser().is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()


def _settle_auth_mode(ray) -> None:
    """RAY_AUTH_MODE unset: token when a token is at hand (as `ray start --head` decides), else leave it."""
    if os.environ.get("RAY_AUTH_MODE") or not _token_available():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # refresh Ray's cached config, as ray's own _enable_token_auth does
        from ray._raylet import Config

        Config.initialize("")
    except Exception:
        pass


_HOST = re.compile(r"^[A-Za-z0-9._:-]+$")


def check_address(address: str) -> None:
    """Refuse a malformed --ray address (BadInput), and fail in seconds where nothing listens at a
    host:port (PoolError): ray.init retries an unreachable GCS for many minutes. Cheap enough to
    run before anything is stored."""
    if address in (LOCAL, AUTO):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    if not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"a Ray address is local, auto, host:port or ray://host:port, not {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise PoolError(f"nothing answers at {address} ({error.strerror or error}): is the Ray head running there?") from None


class _Connection:
    """ray.init for this call, and undoing exactly that."""

    def __init__(self, options: PoolOptions, on_event: Callable[[str], None]):
        self.ray = ray = _import_ray()
        self.owned = False
        self.local = False
        address = options.address.strip() if options.address else LOCAL
        if ray.is_initialized():
            on_event("using this process's existing Ray connection")
            return
        common = {
            "log_to_driver": False, "logging_level": logging.WARNING, "namespace": "iwb",
            "runtime_env": options.runtime_env,
        }
        if address == LOCAL:
            self.local = True
            # Ray binds its ports on every interface whatever node IP it is given; its default token
            # auth (a token in ~/.ray/auth_token, made once) keeps others out. Its notice is muted.
            notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
            level = notice.level
            notice.setLevel(logging.ERROR)
            try:
                ray.init(
                    address="local", num_cpus=options.local_cpus, num_gpus=options.local_gpus,
                    include_dashboard=False, **common,
                )
            finally:
                notice.setLevel(level)
        else:
            if address == AUTO:
                address = os.environ.get("RAY_ADDRESS") or AUTO
            if address.startswith("ray://"):
                try:
                    import grpc  # noqa: F401  (Ray Client's transport)
                except ImportError:
                    raise BadInput("a ray:// address needs the Ray Client: pip install 'ray[client]==2.60.0'") from None
            check_address(address)
            _settle_auth_mode(ray)
            try:
                ray.init(address=address, **common)
            except ConnectionError as error:
                hint = ""
                if os.environ.get("RAY_AUTH_MODE", "") != "token":
                    hint = " (if the head uses token auth, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token)"
                raise PoolError(f"cannot join the Ray cluster at {address}: {error}{hint}") from None
        self.owned = True

    def close(self) -> None:
        if self.owned:
            self.owned = False
            self.ray.shutdown()


_RETRYABLE_NAMES = (
    "RayActorError", "WorkerCrashedError", "ObjectLostError", "OwnerDiedError", "NodeDiedError",
    "OutOfMemoryError", "LocalRayletDiedError", "ObjectReconstructionFailedError", "ObjectFetchTimedOutError",
)


def _retryable(ray) -> tuple[type, ...]:
    return tuple(getattr(ray.exceptions, name) for name in _RETRYABLE_NAMES if hasattr(ray.exceptions, name))


def _unwrap(ray, error: BaseException) -> BaseException:
    """The user's own exception out of a RayTaskError, with the remote traceback as its cause."""
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None)
        if isinstance(cause, BaseException):
            return cause
        try:
            return error.as_instanceof_cause()
        except Exception:
            return error
    return error


def _describe(info: dict | None) -> str:
    if not info:
        return ""
    bits = [f"pid {info['pid']}"]
    if info.get("gpus"):
        bits.append("GPU " + ",".join(info["gpus"]))
    threads = info.get("threads") or info.get("omp")
    if threads:
        bits.append(f"{threads} thread{'s' if str(threads) != '1' else ''}")
    bits.append(f"init {info['init_s']} s")
    return f"on node {info['node']} ({', '.join(bits)})"


def run_on_actors(
    options: PoolOptions,
    init: Callable[..., Any],
    init_args: tuple,
    work: Callable[[Any, Any], Any],
    payloads: list[tuple[int, Any]],
    on_result: Callable[[int, Any], list[tuple[int, Any]] | None],
    on_event: Callable[[str], None] = lambda text: None,
    cancel: threading.Event | None = None,
) -> None:
    """Compute work(state, payload) for every (key, payload) on warm actors; results to on_result.

    on_result may return more (key, payload) pairs (new, unique keys): they are queued on the same
    warm actors and the call returns only when they are done too.

    Each actor runs `state = init(*init_args)` once in its own process; `init` and `work` must be
    importable module-level functions (they are pickled by reference). on_result(key, result) and
    on_event(text) are called in this thread only, in completion order. Payloads whose actor died
    are sent again (at most options.max_payload_attempts times each). Returns when every payload
    has a result. Raises: the exception `work` or `init` raised (its own class, e.g. ValueError),
    Cancelled when `cancel` is set (nothing more is sent; actors are killed at once), PoolError when
    no actor could start or all died, KeyboardInterrupt as usual. Whatever this call started
    (actors; for "local" the whole Ray instance) is stopped before it returns or raises.
    """
    _check_payloads(payloads)
    if options.in_flight < 1:
        raise BadInput("in_flight must be at least 1")
    if not payloads:
        return
    with ActorPool(options, init, init_args, work, on_event, cancel) as pool:
        pool.run(payloads, on_result)


def _check_payloads(payloads: list[tuple[int, Any]]) -> None:
    keys = [key for key, _ in payloads]
    if len(set(keys)) != len(keys):
        raise BadInput("payload keys must be unique")


class ActorPool:
    """The warm actors of run_on_actors, kept for several rounds of payloads: ``with ActorPool(...) as
    pool: pool.run(first, on_result); ...; pool.run(more, on_result)``. A sweep checks its request on
    an actor first and writes the run row only once that passed, on the same warm actors.
    Leaving the block stops whatever the pool started (actors; for "local" the Ray instance)."""

    def __init__(self, options: PoolOptions, init: Callable[..., Any], init_args: tuple, work: Callable[[Any, Any], Any],
                 on_event: Callable[[str], None] = lambda text: None, cancel: threading.Event | None = None) -> None:
        if options.in_flight < 1:
            raise BadInput("in_flight must be at least 1")
        self.options, self.init, self.init_args, self.work = options, init, init_args, work
        self.on_event, self.cancel = on_event, cancel
        self.slots: list[_Slot] = []
        self.connection: _Connection | None = None

    def __enter__(self) -> ActorPool:
        self.connection = _Connection(self.options, self.on_event)
        ray = self.connection.ray
        try:
            chosen = plan(self.options, ray.cluster_resources())
            self.on_event(
                f"starting {chosen.actors} actor{'s' if chosen.actors != 1 else ''} "
                f"({chosen.num_gpus:g} GPU, {chosen.num_cpus:g} CPU each"
                + (f", {chosen.threads} thread{'s' if chosen.threads != 1 else ''}" if chosen.threads else "") + ")"
            )
            remote_host = ray.remote(_Host).options(
                num_gpus=chosen.num_gpus, num_cpus=chosen.num_cpus,
                max_restarts=self.options.max_actor_restarts, max_task_retries=0,
                scheduling_strategy="SPREAD",
            )
            for index in range(chosen.actors):
                handle = remote_host.remote(index, self.init, self.init_args, self.work, chosen.threads)
                slot = _Slot(index=index, handle=handle)
                slot.probe = handle.ready.remote()
                self.slots.append(slot)
        except BaseException:
            self.close()
            raise
        return self

    def run(self, payloads: list[tuple[int, Any]], on_result: Callable[[int, Any], list[tuple[int, Any]] | None],
            on_unit: Callable[[int, int], None] | None = None) -> None:
        """Every payload (and those on_result adds) computed on the pool's actors; see run_on_actors.
        on_unit(actor index, key) is called for each result just before on_result (per-actor progress)."""
        _check_payloads(payloads)
        if not payloads:
            return
        if self.connection is None:
            raise RuntimeError("ActorPool.run outside its with block")
        _drive(self.connection.ray, self.options, self.slots, payloads, on_result, self.on_event, self.cancel, on_unit)

    def close(self) -> None:
        if self.connection is None:
            return
        for slot in self.slots:
            try:
                self.connection.ray.kill(slot.handle, no_restart=True)
            except Exception:
                pass
        self.slots = []
        self.connection.close()
        self.connection = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drive(ray, options, slots, payloads, on_result, on_event, cancel, on_unit=None) -> None:
    retryable = _retryable(ray)
    by_key = dict(payloads)
    queue = collections.deque(payloads)
    attempts: dict[int, int] = collections.Counter()
    pending: dict[Any, tuple[str, _Slot, Any]] = {}   # ref -> (kind, slot, key)
    for slot in slots:
        if slot.probe is not None:  # an actor still starting (or restarting) from an earlier round
            pending[slot.probe] = ("probe", slot, None)
    remaining = len(queue)
    idle_since = time.monotonic()      # when no actor was last ready
    last_wait_note = idle_since

    def fail_slot(slot: _Slot, error: BaseException) -> None:
        if slot.state in ("recovering", "dead"):
            return
        was = _describe(slot.info)
        slot.state = "recovering"
        slot.probe_failures = 0
        on_event(f"actor {slot.index} died ({type(error).__name__}{'; was ' + was if was else ''})")
        probe(slot)

    def probe(slot: _Slot) -> None:
        slot.probe = slot.handle.ready.remote()
        pending[slot.probe] = ("probe", slot, None)

    while remaining:
        check_cancel(cancel)
        for slot in slots:
            if slot.state == "recovering" and slot.probe is None and time.monotonic() >= slot.retry_at:
                probe(slot)
            while slot.state == "ready" and queue and len(slot.in_flight) < options.in_flight:
                key, payload = queue.popleft()
                ref = slot.handle.work.remote(payload)
                slot.in_flight[ref] = key
                pending[ref] = ("work", slot, key)
        if not pending and not any(s.state == "recovering" for s in slots):
            raise PoolError("every actor has died; no actor is left to compute the remaining payloads")
        if not pending:
            time.sleep(0.1)
            continue
        done, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
        now = time.monotonic()
        if any(s.state == "ready" for s in slots):
            idle_since = now
        elif not done:
            if options.start_timeout_s is not None and now - idle_since > options.start_timeout_s:
                raise PoolError(
                    f"no actor has been ready for {options.start_timeout_s:g} s: the cluster may lack the "
                    "GPUs/CPUs asked for (see `ray status`), or init is stuck"
                )
            if now - last_wait_note > 30:
                last_wait_note = now
                on_event(f"waiting for actors to start ({now - idle_since:.0f} s)")
        if not done:
            continue
        for ref in done:
            kind, slot, key = pending.pop(ref)
            if kind == "work":
                slot.in_flight.pop(ref, None)
            try:
                value = ray.get(ref)
            except retryable as error:
                if isinstance(error, ray.exceptions.RayActorError) and getattr(error, "actor_init_failed", False):
                    raise PoolError(f"actor {slot.index} failed while starting: {error}") from None
                if kind == "work":
                    attempts[key] += 1
                    if attempts[key] >= options.max_payload_attempts:
                        raise PoolError(
                            f"payload {key} lost its actor {attempts[key]} times ({type(error).__name__}); stopping"
                        ) from None
                    queue.appendleft((key, by_key[key]))
                    fail_slot(slot, error)
                    on_event(f"retrying payload {key} (its actor {slot.index} died)")
                    continue
                # A probe failed: the actor is restarting, or out of restarts. Ask again a few times,
                # after a pause; a task sent just as it died can fail though Ray restarts it.
                slot.state = "recovering"
                slot.probe, slot.probe_failures = None, slot.probe_failures + 1
                if slot.probe_failures <= options.max_actor_restarts + 2:
                    slot.retry_at = time.monotonic() + min(5.0, 0.5 * slot.probe_failures)
                else:
                    slot.state = "dead"
                    for lost in slot.in_flight.values():
                        queue.appendleft((lost, by_key[lost]))
                    for other in slot.in_flight:
                        pending.pop(other, None)
                    slot.in_flight.clear()
                    on_event(f"actor {slot.index} is gone for good ({type(error).__name__}); "
                             f"{sum(s.state != 'dead' for s in slots)} left")
                continue
            except ray.exceptions.RayTaskError as error:
                raise _unwrap(ray, error) from error
            if kind == "probe":
                restarted = slot.state == "recovering"
                slot.info, slot.state, slot.probe = value, "ready", None
                verb = "restarted" if restarted else "started"
                on_event(f"actor {slot.index} {verb} {_describe(value)}")
            else:
                remaining -= 1
                if on_unit is not None:
                    on_unit(slot.index, key)
                more = on_result(key, value)
                del value
                # on_result may return more (key, payload) pairs: e.g. the shards, once the run-level
                # prepare step they need has come back; they go to the same warm actors.
                for extra_key, extra_payload in more or ():
                    if extra_key in by_key:
                        raise BadInput(f"on_result returned payload key {extra_key!r}, which is already taken")
                    by_key[extra_key] = extra_payload
                    queue.append((extra_key, extra_payload))
                    remaining += 1


# --- `python -m app.run.ray_pool`: wait for a cluster's nodes, and check that actors start everywhere ---

def probe_init(tag: str) -> dict:
    """A trivial init for --check: importing it on a node proves that iwb is installed there."""
    return {"tag": tag, "host": os.uname().nodename}


def probe_work(state: dict, payload: int) -> dict:
    time.sleep(1.0)  # long enough for every actor to come up and take a payload
    return {"host": state["host"], "pid": os.getpid(), "payload": payload}


def _wait_for_nodes(ray, nodes: int, timeout: float, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        if alive >= nodes:
            say(f"{alive} node{'s' if alive != 1 else ''} up")
            return
        if time.monotonic() > deadline:
            raise PoolError(f"only {alive} of {nodes} nodes joined in {timeout:g} s")
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m app.run.ray_pool",
        description="Join a Ray cluster, wait for its nodes, and (with --check) start one warm actor per GPU "
        "(or CPU) running iwb's code, to see that every node can run a sweep.",
    )
    parser.add_argument("address", help="local, auto, host:port or ray://host:10001")
    parser.add_argument("--wait-nodes", type=int, default=0, help="wait until this many nodes are alive")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the nodes (default 300)")
    parser.add_argument("--check", action="store_true", help="start the actors and run one payload on each")
    parser.add_argument("--actors", type=int, default=None)
    args = parser.parse_args(argv)
    def say(text: str) -> None:
        print(text, flush=True)

    try:
        connection = _Connection(PoolOptions(address=args.address), say)
        try:
            ray = connection.ray
            if args.wait_nodes:
                _wait_for_nodes(ray, args.wait_nodes, args.timeout, say)
            resources = ray.cluster_resources()
            alive = sum(1 for node in ray.nodes() if node.get("Alive"))
            say(f"cluster: {alive} node{'s' if alive != 1 else ''}, {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
            if args.check:
                options = PoolOptions(address=args.address, actors=args.actors)
                actors = plan(options, resources).actors
                started: set[str] = set()
                seen: list[dict] = []

                def on_event(text: str) -> None:
                    say(text)
                    if " started on node " in text:
                        started.add(text.split()[1])

                run_on_actors(options, probe_init, ("check",), probe_work, [(i, i) for i in range(actors * 2)],
                              lambda key, value: seen.append(value), on_event)
                hosts = dict(collections.Counter(item["host"] for item in seen))
                say(f"{len(started)} of {actors} actors started; {len(seen)} payloads done on hosts {hosts}")
                if len(started) < actors:
                    raise PoolError(f"{actors - len(started)} actor(s) did not start in time")
        finally:
            connection.close()
    except IwbError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
