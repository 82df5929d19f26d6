"""The boot: metadata; secrets, the hook's lookup and tuning while AWS answers; readiness;
lifecycle. Rules live with their subjects; this says what runs when, and how any failure
(an AgentError, an OSError, a bug) ends the boot: that phase failed, ``on_failure`` sent."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from agent import history, image, telemetry
from agent.context import LaunchContext
from agent.errors import AgentError, PhaseFailed, describe_failure
from agent.imds import ImdsClient, Metadata
from agent.service import Keepalive, Notifier
from agent.state import Phase, PhaseState, Recorder, State

if TYPE_CHECKING:
    from agent.aws import Aws
    from agent.config import Config
    from agent.facts import Facts
    from agent.lifecycle import LaunchHook, Target
    from agent.secrets import Secrets

log = logging.getLogger("agent.boot")


class Boot:
    """One boot: the phases, the clients they share, and the state they record."""

    def __init__(self, cfg: Config, rec: Recorder, notify: Notifier, started: float) -> None:
        self.cfg, self.rec, self.notify = cfg, rec, notify
        self.started = started  # time.monotonic() when agent run began
        self.telemetry = telemetry.Telemetry(cfg.telemetry, rec)
        self.imds = ImdsClient.from_config(cfg.imds)
        self.imds.on_notice = lambda text: rec.note(Phase.METADATA, text)
        self.meta: Metadata | None = None
        self.context: LaunchContext | None = None
        self.aws: Aws | None = None
        self.published: Secrets | None = None  # the secrets, for the resident daemon
        self.hook: LaunchHook | None = None
        self.earlier_boot: dict[str, Any] | None = None  # this instance's boot before this one
        self._lock = threading.RLock()  # the clients and the facts: made once
        self._facts: Facts | None = None
        self._asked = threading.Event()  # a first request is out to AWS, or secrets are done
        self.ended = threading.Event()  # every phase has ended

    def run(self) -> bool:
        """The whole sequence; True when the boot is ready."""
        found: Future[Target | None] | None = None
        with contextlib.suppress(Exception):  # more start time from systemd: a nicety
            Keepalive(self.notify, self.ended, self.cfg.imds.max_wait_seconds
                      + 3 * self.cfg.aws.max_wait_seconds).start()
        with ThreadPoolExecutor(2, "boot") as pool:
            failure = self.attempt(Phase.METADATA, self.read_metadata)
            if failure is None:
                publishing = pool.submit(self.attempt, Phase.SECRETS, self.publish_secrets)
                publishing.add_done_callback(lambda _: self._asked.set())
                self._asked.wait()  # one core: what asks AWS first, what computes meanwhile
                if self.cfg.lifecycle.enabled:
                    looking = threading.Event()
                    found = pool.submit(self.find_hook, looking)
                    looking.wait()  # the hook's lookup is out (or over)
                tuned = self.attempt(Phase.TUNING, self.tune)
                failure = publishing.result() or tuned  # every phase that started ends first
            failure = failure or self.attempt(Phase.READINESS, self.await_ready)
            hooked = self.attempt(Phase.LIFECYCLE, self.finish_hook, found, failure is not None)
        self.ended.set()
        return self.announce(failure or hooked)

    def promote(self) -> bool:
        """A ``Warmed:Running`` instance put InService: the secrets and the hook, again."""
        assert self.meta is not None
        self.meta = self.meta.in_service()
        self.rec.update(instance=self.meta.record())
        unpublished = self.published is None or not self.published.published
        failure = self.attempt(Phase.SECRETS, self.publish_secrets) if unpublished else None
        with ThreadPoolExecutor(1, "promote") as pool:  # its failure: the lifecycle phase's
            found = pool.submit(self.find_hook, threading.Event())
            failure = failure or self.attempt(Phase.READINESS, self.await_ready)
        hooked = self.attempt(Phase.LIFECYCLE, self.finish_hook, found, failure is not None)
        if failure or hooked:
            log.error("boot failed going InService: %s", failure or hooked)
            self.rec.finish(State.FAILED)
            return False
        self.notify.status(f"ready ({self.rec.doc['condition']}), InService")
        return True

    def attempt(self, name: Phase, body: Callable[..., tuple[PhaseState, str]],
                *args: Any) -> PhaseFailed | None:
        """Run one phase: done/skipped with its detail, or failed with one line (returned)."""
        try:
            self.notify.status(f"{name}…")
            self.rec.phase(name, PhaseState.RUNNING)
            state, detail = body(*args)
            self.rec.phase(name, state, detail=detail)
        except Exception as exc:
            line = describe_failure(f"the {name} phase", exc)
            log.debug("%s: traceback", name, exc_info=not isinstance(exc, AgentError))
            with contextlib.suppress(Exception):  # the state file may be what failed
                self.rec.phase(name, PhaseState.FAILED, error=line)
            log.info("%s: failed in %s ms", name, self.rec.phase_entry(name)["duration_ms"],
                     extra={"AGENT_PHASE": str(name)})
            return PhaseFailed(name, line)
        log.info("%s: %s in %s ms: %s", name, state, self.rec.phase_entry(name)["duration_ms"],
                 detail, extra={"AGENT_PHASE": str(name)})
        return None

    def announce(self, failure: PhaseFailed | None) -> bool:
        """The verdict: the other readiness signals, state.json, systemd (READY only if ok)."""
        from agent import lifecycle  # noqa: PLC0415 - botocore, loaded by now
        lifecycle.signal(self.cfg.signal, self.aws, self.meta, failure is None, self.rec)
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
        self.telemetry.report(ready=failure is None, started=self.started, aws=self.aws,
                              make_aws=self.clients if self.meta is not None else None)
        return failure is None

    def clients(self) -> Aws:
        """The AWS clients' home, made (and botocore loaded) on first use: by the secrets."""
        with self._lock:
            if self.aws is None:
                assert self.meta is not None
                from agent.aws import Aws  # noqa: PLC0415  (botocore: loaded on first use)
                self.aws = Aws.from_config(
                    self.cfg.aws, self.meta.identity.region, imds=self.imds, sent=self._asked)
            return self.aws

    def read_metadata(self) -> tuple[PhaseState, str]:
        """Identity, tags, target state, this instance's earlier boot; the image's checks."""
        self.meta = Metadata.read(self.imds)
        self.context = LaunchContext.at_boot(self.meta, self.clients)
        self.rec.update(instance=self.meta.record())
        self.earlier_boot = history.before(self.cfg.tuning.history_file, self.meta.identity)
        image.check(self.cfg.image, self.imds, self.rec)
        return PhaseState.DONE, self.meta.summary()

    def publish_secrets(self) -> tuple[PhaseState, str]:
        """Every secret fetched, rendered and published in one switch."""
        aws = self.clients()
        from agent.secrets import Secrets  # noqa: PLC0415 - botocore, loaded by clients()
        assert self.meta is not None and self.context is not None
        self.published = self.published or Secrets(self.cfg.secrets, self.rec)
        return self.published.publish(aws, self.context, lambda: self.machine().as_dict(),
                                      warm=self.meta.warm,
                                      warm_pool_secrets=self.cfg.lifecycle.warm_pool_secrets)

    def machine(self) -> Facts:
        """This machine's facts (for tuning, and for conditions that read them)."""
        from agent.facts import read_facts  # noqa: PLC0415
        assert self.meta is not None
        with self._lock:  # read once, by whichever phase asks first
            if self._facts is None:
                self._facts = read_facts(self.meta.identity.instance_type, describe=lambda name: (
                    self.clients().describe_instance_type(name)))
            return self._facts

    def tune(self) -> tuple[PhaseState, str]:
        """Every tuned value computed for this machine, then written."""
        from agent import tuning  # noqa: PLC0415
        assert self.meta is not None and self.context is not None
        return tuning.phase(self.cfg.tuning, self.meta, self.rec, self.machine, self.context)

    def await_ready(self) -> tuple[PhaseState, str]:
        """``READY=1`` (the applications start), then the wait until they serve."""
        from agent import readiness  # noqa: PLC0415
        assert self.meta is not None
        return readiness.phase(self.cfg.readiness, self.rec, self.notify, warm=self.meta.warm)

    def find_hook(self, looking: threading.Event) -> Target | None:
        """The launch hook, heartbeated until completed; ``looking``: set once asked."""
        try:
            from agent.lifecycle import LaunchHook  # noqa: PLC0415
            assert self.meta is not None
            aws = self.clients()
            self.hook = LaunchHook.at_boot(self.cfg, aws, self.meta, self.rec, self.earlier_boot)
            with aws.telling(looking):
                return self.hook.find()
        finally:
            looking.set()

    def finish_hook(self, found: Future[Target | None] | None,
                    failed: bool) -> tuple[PhaseState, str]:
        """CONTINUE the launch hook, or ``lifecycle.on_failure`` when the boot failed."""
        from agent import lifecycle  # noqa: PLC0415
        return lifecycle.phase(self.cfg.lifecycle, self.hook, found, self.meta, self.rec,
                               failed=failed)
