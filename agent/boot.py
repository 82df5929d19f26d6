"""The boot sequence: metadata, then secrets and tuning side by side, then lifecycle.

Network waits overlap with work: IMDS is read while botocore loads; the lifecycle target
is looked up while secrets are fetched and tuning is computed. Every phase change is
written to state.json. The first failure fails the boot, and the launch hook then gets
``lifecycle.on_failure``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import fsutil, handoff, tuning
from agent.config import Config
from agent.errors import AgentError, SecretsError
from agent.imds import Identity, ImdsClient
from agent.service import Notifier
from agent.state import PhaseState, Recorder, State, utc_now

if TYPE_CHECKING:
    from agent.aws import Aws
    from agent.lifecycle import Heartbeater, Target

log = logging.getLogger("agent.boot")
# aws, secrets and lifecycle import botocore: they are imported inside the methods, so that
# botocore loads while the metadata phase waits on IMDS (see make_aws).
RESULTS = {"abandon": "ABANDON", "continue": "CONTINUE", "none": ""}
EXTEND_STEP = 60.0  # seconds of EXTEND_TIMEOUT_USEC asked at a time


@dataclass(frozen=True)
class Metadata:
    """What the metadata phase learned."""

    identity: Identity
    tags: dict[str, str] | None
    target_state: str | None


class Boot:
    """One boot: the phases, the clients they share, and the state they record."""

    def __init__(self, cfg: Config, rec: Recorder, notify: Notifier) -> None:
        self.cfg = cfg
        self.rec = rec
        self.notify = notify
        self.imds = ImdsClient(cfg.imds.endpoint, token_ttl=cfg.imds.token_ttl_seconds,
                               timeout=cfg.imds.timeout_seconds,
                               max_wait=cfg.imds.max_wait_seconds)
        self.meta: Metadata | None = None
        self.aws: Aws | None = None
        self.target: Future[Target | None] | None = None
        self.heartbeats: Heartbeater | None = None
        self.versions: dict[Any, str] = {}  # secret ref -> version id published
        self.secrets_published = False
        self.done = threading.Event()  # the boot is over (keepalive stops)

    @property
    def warm(self) -> bool:
        """A warm-pool boot: the target lifecycle state is Warmed:*."""
        return bool(self.meta and (self.meta.target_state or "").startswith("Warmed:"))

    def run(self) -> bool:
        """The whole sequence; True when the boot is ready."""
        failure: AgentError | None = None
        jobs: list[Future[None]] = []
        if self.notify.enabled:
            threading.Thread(target=self.keepalive, name="keepalive", daemon=True).start()
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="boot") as pool:
            try:
                jobs.append(pool.submit(self.phase, "metadata", self.metadata))
                self.aws = self.make_aws(jobs[0])  # botocore loads while IMDS answers
                if self.cfg.lifecycle.enabled:
                    self.target = pool.submit(self.discover)
                jobs.append(pool.submit(self.phase, "secrets", self.secrets))
                self.phase("tuning", self.tuning)
            except AgentError as exc:
                failure = exc
            for job in jobs:  # every phase that started finishes before the verdict
                try:
                    job.result()
                except AgentError as exc:
                    failure = failure or exc
            try:
                self.phase("lifecycle", self.lifecycle, failure)
            except AgentError as exc:
                failure = failure or exc
            finally:
                self.done.set()
                self.stop_heartbeats()
        self.signal(failure is None)
        if failure is not None:
            log.error("boot failed: %s", failure)
            self.rec.finish(State.FAILED)
            self.notify.status(f"boot failed: {failure}")
            return False
        self.rec.finish(State.READY)
        self.notify.ready(f"ready ({self.rec.doc['condition']})")
        log.info("boot ready (%s)", self.rec.doc["condition"])
        return True

    # -- plumbing ----------------------------------------------------------------------

    def phase(self, name: str, body: Callable[..., tuple[PhaseState, str]], *args: Any) -> None:
        """Run one phase: record running, then done/skipped with its detail, or failed."""
        self.notify.status(f"{name}…")
        with self.rec.running(name) as outcome:
            outcome["state"], outcome["detail"] = body(*args)
        entry = self.rec.phase_entry(name)
        log.info("%s: %s in %s ms: %s", name, entry["state"], entry["duration_ms"],
                 entry["detail"], extra={"AGENT_PHASE": name})

    def make_aws(self, metadata_job: Future[None]) -> Aws:
        """The AWS clients' home, for the instance's region (or ``aws.region``)."""
        from agent.aws import Aws  # noqa: PLC0415 - imported while the IMDS reads run

        metadata_job.result()
        assert self.meta is not None
        return Aws(self.cfg.aws.region or self.meta.identity.region,
                   endpoint_url=self.cfg.aws.endpoint_url, max_wait=self.cfg.aws.max_wait_seconds,
                   imds=self.imds)

    def discover(self) -> Target | None:
        """The launch hook to signal, kept alive by heartbeats while the boot runs."""
        from agent import lifecycle  # noqa: PLC0415

        assert self.aws is not None and self.meta is not None
        target = lifecycle.discover(self.aws, self.meta.identity.instance_id, self.meta.tags,
                                    hook_name=self.cfg.lifecycle.hook_name)
        if target is not None:
            self.rec.update(instance={**self.rec.doc["instance"],
                                      "auto_scaling_group": target.group})
            if target.pending and not self.done.is_set():
                self.heartbeats = lifecycle.Heartbeater(
                    self.aws, target, self.meta.identity.instance_id,
                    self.cfg.lifecycle.heartbeat_seconds).start()
        return target

    def check_image(self) -> None:
        """The image's age (from its bake manifest) and user-data hygiene: warnings only."""
        from agent import image  # noqa: PLC0415

        cfg = self.cfg.image
        manifest = image.read_manifest(cfg.manifest)
        if manifest is not None:
            age = manifest.age_days()
            self.rec.update(image={"built_at": manifest.data.get("built_at", ""),
                                   "age_days": round(age, 1), "agent": manifest.data.get("agent")})
            if cfg.max_age_days and age > cfg.max_age_days:
                self.rec.warn(f"image: built {age:.0f} days ago, past image.max_age_days = "
                              f"{cfg.max_age_days:g}: rebuild it to take the latest updates")
        if cfg.check_user_data:
            data = self.imds.user_data()
            for finding in image.scan_user_data(data or b""):
                self.rec.warn(f"user-data: looks like it holds a credential: {finding}; "
                              "anyone who can describe the instance can read it: use "
                              "Secrets Manager")

    def keepalive(self) -> None:
        """Ask systemd for more start time while the boot is within its own budgets.

        The budgets bound every wait (IMDS, each AWS call), so a slow boot is legitimate
        until they are spent; a hung agent still meets TimeoutStartSec after that.
        """
        budget = (self.cfg.imds.max_wait_seconds + 3 * self.cfg.aws.max_wait_seconds
                  + EXTEND_STEP)
        deadline = time.monotonic() + budget
        while not self.done.wait(EXTEND_STEP / 2) and time.monotonic() < deadline:
            self.notify.extend_timeout(EXTEND_STEP)

    def signal(self, ready: bool) -> None:
        """The other readiness signals: CloudFormation SignalResource, a marker file."""
        sig = self.cfg.signal
        if sig.marker_file:
            marker = Path(sig.marker_file)
            try:
                if ready:
                    fsutil.atomic_write(marker, f"{utc_now()}\n".encode(), mode=0o644)
                else:
                    marker.unlink(missing_ok=True)
            except OSError as exc:
                self.rec.warn(f"signal: marker file {marker}: {exc.strerror}")
        if sig.cloudformation_stack and self.aws is not None and self.meta is not None:
            from agent.aws import describe  # noqa: PLC0415

            status = "SUCCESS" if ready else "FAILURE"
            try:
                self.aws.call("cloudformation", "signal_resource",
                              StackName=sig.cloudformation_stack,
                              LogicalResourceId=sig.cloudformation_resource,
                              UniqueId=self.meta.identity.instance_id, Status=status)
                log.info("signal: %s sent to %s/%s", status, sig.cloudformation_stack,
                         sig.cloudformation_resource)
            except Exception as exc:
                message = str(exc) if isinstance(exc, AgentError) else describe(exc)
                self.rec.warn(f"signal: SignalResource {sig.cloudformation_stack}/"
                              f"{sig.cloudformation_resource} failed: {message}")

    # -- the phases --------------------------------------------------------------------

    def metadata(self) -> tuple[PhaseState, str]:
        """Identity document, tags, Auto Scaling target state."""
        ident = self.imds.identity()
        tags = self.imds.tags()
        target_state = self.imds.target_lifecycle_state()
        self.meta = Metadata(ident, tags, target_state)
        self.rec.update(instance={
            "instance_id": ident.instance_id, "instance_type": ident.instance_type,
            "region": ident.region, "availability_zone": ident.availability_zone,
            "image_id": ident.image_id, "account_id": ident.account_id,
            "auto_scaling_group": (tags or {}).get("aws:autoscaling:groupName", ""),
            "target_lifecycle_state": target_state or "",
        })
        self.check_image()
        tag_note = "tags off" if tags is None else f"{len(tags)} tags"
        return PhaseState.DONE, (f"{ident.instance_id} {ident.instance_type} in "
                                 f"{ident.availability_zone}; {tag_note}")

    def secrets(self) -> tuple[PhaseState, str]:
        """Fetch every secret, render every file, publish the set in one switch."""
        from agent import secrets  # noqa: PLC0415

        cfg = self.cfg.secrets
        if not cfg.files:
            return PhaseState.SKIPPED, "no secrets configured"
        if self.warm and not self.cfg.lifecycle.warm_pool_secrets:
            return PhaseState.SKIPPED, ("warm pool: published when the instance goes "
                                        "InService (lifecycle.warm_pool_secrets = false)")
        root = Path(cfg.dir)
        if cfg.mount:
            self.mount_secrets(root)
        secrets.check_storage(root, cfg.require_tmpfs)
        assert self.aws is not None
        values = secrets.fetch_all(self.aws, cfg.files)
        rendered = secrets.render_all(cfg, values)
        publication = secrets.publish(root, rendered)
        self.secrets_published = True
        self.versions = {ref: value.version_id for ref, value in values.items()}
        by_path = {r.entry.path: r.value.version_id for r in rendered}
        now = utc_now()
        self.rec.update(secrets=secrets.records(cfg, by_path, dict.fromkeys(by_path, now)))
        try:
            skipped = handoff.write_credential_dropins(cfg)
        except OSError as exc:
            raise SecretsError(f"cannot write credential drop-ins in {cfg.unit_dir}: "
                               f"{exc.strerror or exc}") from None
        if skipped:
            self.rec.warn(f"secrets: {skipped}")
        for problem in handoff.after_change(cfg, publication.changed, by_path):
            self.rec.warn(f"secrets hook: {problem}")
        return PhaseState.DONE, (f"{len(rendered)} files from {len(values)} secrets "
                                 f"published ({publication.generation.lstrip('.')})")

    def mount_secrets(self, root: Path) -> None:
        """``secrets.mount``: a private tmpfs at secrets.dir, unless one is there already."""
        if root.exists() and fsutil.is_mount_point(root) and fsutil.is_memory_fs(root):
            return
        try:
            noswap = fsutil.mount_tmpfs(root, self.cfg.secrets.mount_size)
        except OSError as exc:
            raise SecretsError(f"cannot mount a tmpfs at {root}: {exc.strerror} (the agent "
                               "needs CAP_SYS_ADMIN for secrets.mount; or use the "
                               "run-agent-secrets.mount unit)") from None
        if not noswap:
            self.rec.warn("secrets: this kernel's tmpfs has no noswap (Linux < 6.4): "
                          "secret pages could reach swap")

    def tuning(self) -> tuple[PhaseState, str]:
        """A resize noted; facts of this machine and type, every value computed, then the
        outputs written (none of them when a value fails)."""
        cfg = self.cfg.tuning
        assert self.meta is not None
        ident = self.meta.identity
        resize, problem = tuning.track_instance(cfg.history_file, ident.instance_id,
                                                ident.instance_type)
        if problem:
            self.rec.warn(f"tuning: {problem}")
        if resize:
            self.rec.update(resize=resize)
        resized = f"; resized from {resize['from']}" if resize else ""
        if not cfg.has_outputs:
            return PhaseState.SKIPPED, f"no tuning configured{resized}"
        assert self.aws is not None
        facts = tuning.read_facts(ident.instance_type, describe=self.aws.describe_instance_type)
        applied = tuning.apply(tuning.plan(cfg, facts),
                               previous=(self.rec.previous or {}).get("tuning"))
        self.rec.update(tuning=applied.records)
        for warning in applied.warnings:
            self.rec.warn(f"tuning: {warning}")
        return PhaseState.DONE, (f"{tuning.summary(applied.records)} for {facts.memory_mib} "
                                 f"MiB, {facts.vcpus} vCPUs{resized}")

    def lifecycle(self, failure: AgentError | None) -> tuple[PhaseState, str]:
        """CONTINUE the launch hook, or ``on_failure`` when the boot failed."""
        from agent import lifecycle  # noqa: PLC0415

        if not self.cfg.lifecycle.enabled:
            return PhaseState.SKIPPED, "lifecycle.enabled = false"
        if self.target is None or self.aws is None or self.meta is None:
            return PhaseState.SKIPPED, "not run: the boot failed before the instance was known"
        target = self.target.result()
        if target is None:
            return PhaseState.SKIPPED, "not in an Auto Scaling group"
        if not target.hook:
            return PhaseState.SKIPPED, target.reason
        heartbeats = self.stop_heartbeats()
        result = RESULTS[self.cfg.lifecycle.on_failure] if failure else "CONTINUE"
        record = {"group": target.group, "hook": target.hook, "result": result or None,
                  "heartbeats": heartbeats}
        if not result:
            self.rec.update(lifecycle=record)
            return PhaseState.DONE, "boot failed; lifecycle.on_failure = none: left to time out"
        if not target.pending:
            previous = (self.rec.previous or {}).get("lifecycle") or {}
            earlier = previous.get("result") if previous.get("group") == target.group else None
            record["result"] = earlier
            self.rec.update(lifecycle=record)
            how = f"completed ({earlier}) by an earlier run" if earlier else "nothing pending"
            return PhaseState.DONE, f"instance is {target.instance_state or 'not waiting'}: {how}"
        sent = lifecycle.complete(self.aws, target, self.meta.identity.instance_id, result)
        if sent == "not-pending":
            record["result"] = None
            self.rec.update(lifecycle=record)
            self.rec.warn(f"lifecycle: the {target.hook} action was no longer pending "
                          "(timed out, or completed by someone else)")
            return PhaseState.DONE, "no active lifecycle action any more: not ours to complete"
        self.rec.update(lifecycle=record)
        warm = " (warm pool)" if self.warm else ""
        return PhaseState.DONE, f"{result} sent to {target.group}/{target.hook}{warm}"

    def promote(self) -> bool:
        """A ``Warmed:Running`` instance put InService without a restart: finish the boot.

        The secrets (skipped in the warm pool) are published and the launch hook, pending
        again, gets its result. A failure here fails the boot (state ``failed``).
        """
        assert self.meta is not None
        self.meta = dataclasses.replace(self.meta, target_state="InService")
        self.rec.update(instance={**self.rec.doc["instance"],
                                  "target_lifecycle_state": "InService"})
        failure: AgentError | None = None
        try:
            if not self.secrets_published:
                self.phase("secrets", self.secrets)
        except AgentError as exc:
            failure = exc
        found: Future[Target | None] = Future()
        try:
            found.set_result(self.discover())
        except AgentError as exc:
            found.set_exception(exc)
        self.target = found
        try:
            self.phase("lifecycle", self.lifecycle, failure)
        except AgentError as exc:
            failure = failure or exc
        if failure is not None:
            log.error("boot failed going InService: %s", failure)
            self.rec.finish(State.FAILED)
            return False
        self.notify.status(f"ready ({self.rec.doc['condition']}), InService")
        return True

    def stop_heartbeats(self) -> int:
        """Stop heartbeating (the action is about to be completed); how many were sent."""
        if self.heartbeats is None:
            return 0
        self.heartbeats.stop()
        return self.heartbeats.count
