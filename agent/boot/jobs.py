"""The resident daemon's jobs: each in a short-lived child process that exits when done.

``python -m agent.boot.jobs HANDOFF KIND RESULT ARG`` (run by :mod:`agent.boot.resident`, never by
hand): rebuilds what the boot knew from the hand-off (the boot's own configuration, the
instance, the published secrets, the telemetry's figures), runs one job, and writes its
result (JSON) to RESULT: the changes to state.json it made (a :class:`agent.state.recorder.Journal`;
the resident writes them) and what the resident needs to know. What a job changes that a
later job needs (the secrets' versions, the request counts, a promotion) it writes back to the
hand-off's ``job`` part.

Jobs: ``refresh`` (the secrets' rotation: :meth:`agent.secrets.publish.Secrets.refresh`; with
``[readiness]``, the (secret, unit) pairs it reloaded come back as ``regate``), ``regate``
(the readiness gate again for those units: :class:`agent.readiness.gate.Regate`; ARG: the pairs),
``drain`` (a termination notice; ARG: kind, detail, deadline), ``promote`` (a warm pool's
instance going InService), ``health`` (SetInstanceHealth Unhealthy), ``rebalance`` (the
rebalance command; ARG: kind, detail).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from agent.config import cache
from agent.errors import AgentError
from agent.fsutil import atomic_write
from agent.lifecycle import termination
from agent.service.notify import Notifier, setup_logging
from agent.state.recorder import Journal, progress_path, utc_now

if TYPE_CHECKING:
    from agent.boot.instance import Instance
    from agent.boot.sequence import Boot, Booted
    from agent.cloud.aws import Aws
    from agent.config.loader import Config
    from agent.telemetry.metrics import Requests

log = logging.getLogger("agent.boot.jobs")

REFRESH_FAILED = "secrets: refresh failed"


# -- the hand-off ---------------------------------------------------------------------------


def carry(boot: Boot, booted: Booted, config_path: str | None, lock_fd: int,
          verbose: bool) -> dict[str, Any]:
    """The hand-off of a boot that went ready: the resident's part and its jobs' part."""
    from agent.telemetry.metrics import counted  # noqa: PLC0415 - loaded by the boot

    cfg, rec, instance = boot.cfg, boot.rec, booted.instance
    meta = instance.meta if instance is not None else None
    secrets = booted.secrets.carried() if booted.secrets is not None else None
    try:
        config: Any = cache.dump(cfg)
    except TypeError:  # something the cache cannot hold either: the jobs read the file
        config = None
    group = str(rec.doc.get("instance", {}).get("auto_scaling_group") or "")
    term = cfg.termination
    earlier = (rec.previous or {}).get("health")
    figures = boot.telemetry.boot
    return {
        "format": 1,
        "resident": {
            "state_dir": cfg.state_dir, "lock_fd": lock_fd, "verbose": verbose,
            "imds": {"endpoint": cfg.imds.endpoint, "token_ttl": cfg.imds.token_ttl_seconds,
                     "timeout": cfg.imds.timeout_seconds},
            "termination": {"enabled": term.enabled, "poll_seconds": term.poll_seconds,
                            "scheduled_events": term.scheduled_events,
                            "deadline_seconds": term.deadline_seconds},
            "refresh_seconds": cfg.secrets.refresh_seconds,
            "refreshing": secrets is not None and bool(cfg.secrets.files),
            "instance": {"known": meta is not None,
                         "target_state": meta.target_state if meta else None,
                         "group": group,
                         "in_group": bool(group) or (meta is not None
                                                     and meta.target_state is not None)},
            "health": earlier if isinstance(earlier, dict) else None,
        },
        "job": {
            "config": config, "config_path": config_path,
            "meta": None if meta is None else {"identity": asdict(meta.identity),
                                               "tags": meta.tags,
                                               "target_state": meta.target_state},
            "aws": made(booted) is not None,
            "secrets": secrets,
            "telemetry": None if figures is None else asdict(figures),
            "requests": [[api, outcome, n] for (api, outcome), n in
                         counted(made(booted)).items()],
            "earlier_boot": instance.earlier_boot if instance is not None else None,
            "previous": rec.previous,
        },
    }


def made(booted: Booted) -> Aws | None:
    """The boot's AWS clients, if they were made."""
    return booted.instance.clients.value if booted.instance is not None else None


def write_handoff(path: str, doc: dict[str, Any]) -> None:
    """The hand-off, atomically, private (it holds no secret value, but names them)."""
    atomic_write(path, json.dumps(doc).encode(), mode=0o600, sync=False)


class Work:
    """What a job has: the boot as it was (its configuration, instance, published secrets).

    The boot's objects (and with them the AWS SDK) are made on first use: a drain's commands
    start before they are loaded.
    """

    def __init__(self, path: str, doc: dict[str, Any], progress: str | None = None) -> None:
        self.path = path
        self.doc = doc
        job = doc["job"]
        self.job: dict[str, Any] = job
        self.cfg: Config = cache.view(job["config"]) if job["config"] is not None else \
            cache.load(job["config_path"])
        self.rec = Journal(doc["resident"]["state_dir"], progress)
        self.rec.previous = job["previous"]
        self.earlier: Requests = {(api, outcome): int(n) for api, outcome, n in job["requests"]}
        self._rebuilt: tuple[Boot, Booted] | None = None
        self._lock = threading.Lock()

    @property
    def boot(self) -> Boot:
        """The boot as it was, rebuilt."""
        return self._rebuild()[0]

    @property
    def booted(self) -> Booted:
        """What the boot ended with (or its promotion since), rebuilt."""
        return self._rebuild()[1]

    def _rebuild(self) -> tuple[Boot, Booted]:
        with self._lock:
            if self._rebuilt is None:
                self._rebuilt = self._rebuilt_boot()
            return self._rebuilt

    def _rebuilt_boot(self) -> tuple[Boot, Booted]:
        from agent.boot.instance import Instance  # noqa: PLC0415
        from agent.boot.sequence import Boot, Booted  # noqa: PLC0415
        from agent.cloud.imds import Identity, Metadata  # noqa: PLC0415
        from agent.telemetry.metrics import Figures  # noqa: PLC0415

        job, cfg, rec = self.job, self.cfg, self.rec
        boot = Boot(cfg, rec, Notifier(), time.monotonic())
        instance = secrets = None
        if job["meta"] is not None:
            meta = job["meta"]
            instance = Instance.known(Metadata(Identity(**meta["identity"]), meta["tags"],
                                               meta["target_state"]), job["earlier_boot"],
                                      aws=cfg.aws, imds=boot.imds)
            if job["secrets"] is not None:
                from agent.secrets.publish import Secrets  # noqa: PLC0415

                secrets = Secrets.resume(cfg.secrets, rec, job["secrets"], instance.context)
        if job["telemetry"] is not None:
            boot.telemetry.boot = Figures(**job["telemetry"])
        return boot, Booted(True, instance, secrets)

    @property
    def instance(self) -> Instance:
        """The instance the boot knew."""
        instance = self.booted.instance
        if instance is None:  # a boot that went ready knew it: a hand-off made otherwise
            raise AgentError("the hand-off names no instance")
        return instance

    @property
    def instance_id(self) -> str:
        """This instance's id."""
        return str(self.job["meta"]["identity"]["instance_id"])

    def clients(self) -> Aws:
        """The boot's AWS clients (made, and the SDK loaded, on first use)."""
        return self.instance.clients()

    def promote(self) -> Booted:
        """The boot completed for a warm pool's instance going InService."""
        boot, booted = self._rebuild()
        promoted = boot.promote(self.instance, booted.secrets)
        with self._lock:
            self._rebuilt = boot, promoted
        return promoted

    def save(self) -> None:
        """What later jobs need: the secrets' versions, the request counts, the instance."""
        job = self.job
        if self._rebuilt is not None:
            from agent.telemetry.metrics import counted  # noqa: PLC0415 - loaded with the boot

            booted = self._rebuilt[1]
            if booted.secrets is not None:
                job["secrets"] = booted.secrets.carried()
            job["requests"] = [[api, outcome, n] for (api, outcome), n in
                               counted(made(booted), self.earlier).items()]
            job["aws"] = job["aws"] or made(booted) is not None
            if booted.instance is not None and job["meta"] is not None:
                job["meta"]["target_state"] = booted.instance.meta.target_state
        write_handoff(self.path, self.doc)


# -- the jobs -------------------------------------------------------------------------------


def refresh(work: Work, arg: Any) -> dict[str, Any]:
    """The secrets' rotation: only DescribeSecret when nothing changed, only the changed ones
    fetched; a new generation, the hooks and reloads when a file changed. state.json's
    ``refresh`` counts them and says how the last one ended; the textfile follows. With
    ``[readiness]``, the (secret, unit) pairs reloaded are returned (``regate``): the
    resident runs the gate again for them in its own job."""
    boot, rec = work.boot, work.rec
    count = int((rec.doc.get("refresh") or {}).get("count", 0)) + 1
    failed = False
    reloaded: list[tuple[str, str]] = []
    secrets = work.booted.secrets
    if secrets is None:
        result = "nothing published"
    else:
        if work.cfg.readiness.enabled:
            secrets.on_reload = reloaded.extend
        try:
            publication = secrets.refresh(work.clients())
        except AgentError as exc:
            log.warning("secret refresh failed: %s", exc)
            rec.clear_warning(REFRESH_FAILED)
            rec.warn(f"{REFRESH_FAILED} at {utc_now()}: {exc}")
            failed, result = True, "failed"
        else:
            rec.clear_warning(REFRESH_FAILED)
            if publication is None:
                log.info("secrets unchanged")
                result = "unchanged"
            else:
                generation = publication.generation.lstrip(".")
                log.info("secrets rotated: %s published; changed files: %s", generation,
                         ", ".join(publication.changed) or "none")
                result = f"published {generation}"
    rec.update(refresh={"count": count, "at": utc_now(), "result": result})
    boot.telemetry.write(made(work.booted), work.earlier)  # the request counts, the condition
    work.save()
    return {"failed": failed, "regate": [list(pair) for pair in reloaded]}


def regate(work: Work, arg: Any) -> dict[str, Any]:
    """The readiness gate again for the units a rotation reloaded (ARG: [secret, unit]
    pairs): a failure degrades, naming them; the next passing gate clears it. The outcome
    is counted in state.json, and the textfile follows."""
    from agent.readiness.gate import Regate  # noqa: PLC0415

    passed = Regate(work.cfg.readiness, work.rec).run([(str(s), str(u)) for s, u in arg])
    work.boot.telemetry.write(None, work.earlier)  # the counter, the condition
    return {"passed": passed}


def drain(work: Work, arg: Any) -> dict[str, Any]:
    """A termination notice: the drain, by the deadline the resident took at the notice."""
    kind, detail, deadline = arg
    notice = termination.Notice(str(kind), str(detail), float(deadline))
    record = termination.drain(work.cfg.termination, notice,
                               work.clients if work.job["aws"] else None, work.instance_id,
                               work.job["meta"]["tags"], deadline=float(deadline),
                               heartbeat_seconds=work.cfg.lifecycle.heartbeat_seconds,
                               secrets_dir=work.cfg.secrets.dir)
    work.rec.update(termination=record)
    work.save()
    return {}


def promote(work: Work, arg: Any) -> dict[str, Any]:
    """A warm pool's instance put InService: the secrets and the launch hook, again."""
    booted = work.promote()
    work.save()
    return {"ready": booted.ready, "status": f"ready ({work.rec.doc['condition']}), InService"
            if booted.ready else "boot failed going InService",
            "refreshing": booted.secrets is not None and booted.secrets.published
            and bool(work.cfg.secrets.files)}


def health(work: Work, arg: Any) -> dict[str, Any]:
    """SetInstanceHealth Unhealthy (a scheduled event that stops the instance)."""
    marked = termination.set_unhealthy(work.clients(), work.instance_id)
    work.save()
    return {"marked": list(marked)}


def rebalance(work: Work, arg: Any) -> dict[str, Any]:
    """A rebalance recommendation: its command."""
    kind, detail = arg
    notice = termination.Notice(str(kind), str(detail))
    work.rec.update(rebalance=termination.rebalance(work.cfg.termination, notice))
    return {}


JOBS: dict[str, Callable[[Work, Any], dict[str, Any]]] = {
    "refresh": refresh, "regate": regate, "drain": drain, "promote": promote, "health": health,
    "rebalance": rebalance}


def main(argv: list[str]) -> int:
    """Run one job; 0 when it ran (its outcome is in the result), 1 when it could not."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the resident's mask is not ours
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    path, kind, result_path, arg = argv
    with open(path, "rb") as file:
        doc = json.load(file)
    setup_logging(bool(doc["resident"]["verbose"]))
    try:
        work = Work(path, doc, progress_path(result_path))
        outcome = JOBS[kind](work, json.loads(arg))
        atomic_write(result_path, json.dumps({**outcome, "changes": work.rec.changes}).encode(),
                     mode=0o600, sync=False)
    except Exception as exc:  # the resident records that the job ended without a result
        log.error("%s: internal error: %s: %s", kind, type(exc).__name__, exc)
        log.debug("%s", kind, exc_info=True)
        return 1
    return 0


def program() -> None:
    """The process: :func:`main`, then leave without the interpreter's teardown (botocore's
    objects: a tenth of a second); logs and streams flushed first."""
    code = main(sys.argv[1:])
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    program()

