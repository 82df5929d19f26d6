"""The boot: metadata; secrets, the hook's lookup and tuning while AWS answers; readiness;
lifecycle. This says what runs when, what each phase hands to the next, and how any failure
(an AgentError, an OSError, a bug) ends the boot: that phase failed, ``on_failure`` sent."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agent.boot.instance import Instance
from agent.boot.outgoing import Outgoing
from agent.cloud.imds import ImdsClient, Metadata
from agent.errors import AgentError, PhaseFailed, describe_failure
from agent.frozen import frozen
from agent.image import checks
from agent.service.notify import Keepalive, Notifier
from agent.state import history
from agent.state.recorder import Phase, PhaseState, Recorder, State
from agent.telemetry.metrics import Telemetry

if TYPE_CHECKING:
    from agent.config.loader import Config
    from agent.lifecycle.hook import Lookup
    from agent.secrets.publish import Secrets

log = logging.getLogger("agent.boot.sequence")
T = TypeVar("T")


@frozen()
class Ended(Generic[T]):
    """How a phase ended: what it produced, or its failure (one line)."""

    value: T | None = None
    failure: PhaseFailed | None = None


@frozen()
class Booted:
    """A boot's verdict, and what the resident daemon carries on with (None: not produced)."""

    ready: bool
    instance: Instance | None
    secrets: Secrets | None


class Boot:
    """One boot: its phases in order, each given what the ones before it produced."""

    def __init__(self, cfg: Config, rec: Recorder, notify: Notifier, started: float) -> None:
        self.cfg, self.rec, self.notify = cfg, rec, notify
        self.started = started  # time.monotonic() when agent run began
        self.telemetry = Telemetry(cfg.telemetry, rec)
        self.imds = ImdsClient.from_config(cfg.imds)
        self.imds.on_notice = lambda text: rec.note(Phase.METADATA, text)
        self.outgoing = Outgoing()  # tells when a phase's first request is out to AWS
        self.ended = threading.Event()  # every phase has ended

    def run(self) -> Booted:
        """The whole sequence; ready when the boot is."""
        lookup: Future[Lookup] | None = None
        secrets: Ended[Secrets] = Ended()
        with contextlib.suppress(Exception):  # more start time from systemd: a nicety
            Keepalive(self.notify, self.ended, self.cfg.imds.max_wait_seconds
                      + 3 * self.cfg.aws.max_wait_seconds).start()
        with ThreadPoolExecutor(2, "boot") as pool:
            read = self.attempt(Phase.METADATA, self.read_metadata)
            instance, failure = read.value, read.failure
            if instance is not None:
                asked = self.outgoing.first  # a secret is asked for (or their phase ended)
                publishing = pool.submit(self.attempt, Phase.SECRETS, self.publish_secrets,
                                         instance, None)
                publishing.add_done_callback(lambda _: asked.set())
                asked.wait()  # one core: what asks AWS first, what computes meanwhile
                if self.cfg.lifecycle.enabled:
                    looking = threading.Event()
                    lookup = pool.submit(self.find_hook, instance, looking)
                    looking.wait()  # the hook's lookup is out (or over)
                tuned = self.attempt(Phase.TUNING, self.tune, instance)
                secrets = publishing.result()  # every phase that started ends first
                failure = secrets.failure or tuned.failure or self.attempt(
                    Phase.READINESS, self.await_ready, instance).failure
            hooked = self.attempt(Phase.LIFECYCLE, self.finish_hook, lookup, failure is not None)
        self.ended.set()
        return Booted(self.announce(failure or hooked.failure, instance), instance, secrets.value)

    def promote(self, instance: Instance, secrets: Secrets | None) -> Booted:
        """A ``Warmed:Running`` instance put InService: the secrets and the hook, again."""
        instance = instance.in_service()
        self.rec.update(instance=instance.meta.record())
        failure = None
        if secrets is None or not secrets.published:
            published = self.attempt(Phase.SECRETS, self.publish_secrets, instance, secrets)
            secrets, failure = published.value or secrets, published.failure
        with ThreadPoolExecutor(1, "promote") as pool:  # its failure: the lifecycle phase's
            lookup = pool.submit(self.find_hook, instance, threading.Event())
            failure = failure or self.attempt(Phase.READINESS, self.await_ready, instance).failure
        hooked = self.attempt(Phase.LIFECYCLE, self.finish_hook, lookup, failure is not None)
        if failure or hooked.failure:
            log.error("boot failed going InService: %s", failure or hooked.failure)
            self.rec.finish(State.FAILED)
            return Booted(False, instance, secrets)
        self.notify.status(f"ready ({self.rec.doc['condition']}), InService")
        return Booted(True, instance, secrets)

    def attempt(self, name: Phase, body: Callable[..., tuple[PhaseState, str, T]],
                *args: Any) -> Ended[T]:
        """Run one phase: done/skipped with its detail and product, or failed with one line."""
        try:
            self.notify.status(f"{name}…")
            self.rec.phase(name, PhaseState.RUNNING)
            state, detail, value = body(*args)
            self.rec.phase(name, state, detail=detail)
        except Exception as exc:
            line = describe_failure(f"the {name} phase", exc)
            log.debug("%s: traceback", name, exc_info=not isinstance(exc, AgentError))
            with contextlib.suppress(Exception):  # the state file may be what failed
                self.rec.phase(name, PhaseState.FAILED, error=line)
            log.info("%s: failed in %s ms", name, self.rec.phase_entry(name)["duration_ms"],
                     extra={"AGENT_PHASE": str(name)})
            return Ended(failure=PhaseFailed(name, line))
        log.info("%s: %s in %s ms: %s", name, state, self.rec.phase_entry(name)["duration_ms"],
                 detail, extra={"AGENT_PHASE": str(name)})
        return Ended(value)

    def announce(self, failure: PhaseFailed | None, instance: Instance | None) -> bool:
        """The verdict: the other readiness signals, state.json, systemd (READY only if ok)."""
        from agent.lifecycle import hook as lifecycle  # noqa: PLC0415 - botocore, loaded by now
        aws, meta, clients = (None, None, None) if instance is None else (
            instance.clients.value, instance.meta, instance.clients)
        lifecycle.signal(self.cfg.signal, aws, meta, failure is None, self.rec)
        if failure is not None:
            log.error("boot failed: %s", failure)
            with contextlib.suppress(Exception):
                self.rec.finish(State.FAILED)
                self.notify.status(f"boot failed: {failure}")
        else:
            self.rec.finish(State.READY)
            try:
                self.notify.ready(f"ready ({self.rec.doc['condition']})")
            except Exception as exc:  # the hook has its CONTINUE: the boot stays ready
                self.rec.warn(f"systemd: READY=1 not sent: {describe_failure('notify', exc)}")
            log.info("boot ready (%s)", self.rec.doc["condition"])
        self.telemetry.report(ready=failure is None, started=self.started, aws=aws,
                              make_aws=clients)
        return failure is None

    def read_metadata(self) -> tuple[PhaseState, str, Instance]:
        """Identity, tags, target state, this instance's earlier boot; the image's checks."""
        meta = Metadata.read(self.imds)
        self.rec.update(instance=meta.record())
        instance = Instance.known(meta, history.before(self.cfg.tuning.history_file,
                                                       meta.identity),
                                  aws=self.cfg.aws, imds=self.imds, events=self.outgoing.handlers())
        checks.check(self.cfg.image, self.imds, self.rec)
        return PhaseState.DONE, meta.summary(), instance

    def publish_secrets(self, instance: Instance,
                        secrets: Secrets | None) -> tuple[PhaseState, str, Secrets]:
        """Every secret fetched, rendered, published in one switch: to ``secrets``, or a new set."""
        aws = instance.clients()
        from agent.secrets.publish import Secrets  # noqa: PLC0415 - botocore, loaded by clients()
        secrets = secrets or Secrets(self.cfg.secrets, self.rec)
        state, detail = secrets.publish(
            aws, instance.context, lambda: instance.facts().as_dict(), warm=instance.meta.warm,
            warm_pool_secrets=self.cfg.lifecycle.warm_pool_secrets)
        return state, detail, secrets

    def tune(self, instance: Instance) -> tuple[PhaseState, str, None]:
        """Every tuned value computed for this machine, then written."""
        from agent.tuning import tuner  # noqa: PLC0415
        return (*tuner.phase(self.cfg.tuning, instance.meta, self.rec, instance.facts,
                              instance.context), None)

    def await_ready(self, instance: Instance) -> tuple[PhaseState, str, None]:
        """``READY=1`` (the applications start), then the wait until they serve."""
        from agent.readiness import gate  # noqa: PLC0415
        return (*gate.phase(self.cfg.readiness, self.rec, self.notify,
                                 warm=instance.meta.warm), None)

    def find_hook(self, instance: Instance, looking: threading.Event) -> Lookup:
        """The launch hook and its target (heartbeated); ``looking``: set once asked."""
        try:
            from agent.lifecycle.hook import LaunchHook  # noqa: PLC0415
            hook = LaunchHook.at_boot(self.cfg.lifecycle, instance.clients(), instance.meta,
                                      self.rec, instance.earlier_boot, self.cfg.tuning.history_file)
            with self.outgoing.watch(looking):
                return hook, hook.find()
        finally:
            looking.set()

    def finish_hook(self, lookup: Future[Lookup] | None,
                    failed: bool) -> tuple[PhaseState, str, None]:
        """CONTINUE the launch hook, or ``lifecycle.on_failure`` when the boot failed."""
        from agent.lifecycle import hook as lifecycle  # noqa: PLC0415
        return (*lifecycle.phase(self.cfg.lifecycle, lookup, self.rec, failed=failed), None)
