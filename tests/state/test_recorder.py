"""state.json's writer: the Recorder (atomic, escaped, written when it matters) and the
Journal a job of the resident keeps instead."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest
from agentproc import booted

from agent.state import reader as statefile
from agent.state.recorder import Journal, PhaseState, Recorder, State


def test_document_has_the_designed_shape(tmp_path: Path) -> None:
    booted(tmp_path)
    doc = json.loads((tmp_path / "state.json").read_text())
    assert doc["version"] == 1
    assert doc["state"] == "ready"
    assert doc["condition"] == "healthy"
    assert [p["name"] for p in doc["phases"]] == ["metadata", "secrets", "tuning", "readiness",
                                            "lifecycle"]
    meta = doc["phases"][0]
    assert meta["state"] == "done"
    assert set(meta) == {"name", "state", "started_at", "finished_at", "duration_ms", "detail",
                         "error"}
    assert isinstance(meta["duration_ms"], int)
    assert meta["started_at"].endswith("Z")
    assert doc["instance"]["auto_scaling_group"] == "web-asg"
    assert doc["lifecycle"] == {"group": "web-asg", "hook": "agent-ready", "result": "CONTINUE"}
    assert doc["updated_at"].endswith("Z")


def test_failed_phase_records_error_and_skips_the_rest(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    rec.start()
    rec.phase("metadata", PhaseState.RUNNING)
    rec.phase("metadata", PhaseState.FAILED, error="IMDS unavailable")
    rec.finish(State.FAILED)
    doc = statefile.read(str(tmp_path))
    assert doc is not None
    assert doc["state"] == "failed" and doc["condition"] == "error"
    assert doc["phases"][0]["state"] == "failed"
    assert doc["phases"][0]["error"] == "IMDS unavailable"
    assert all(p["state"] == "skipped" for p in doc["phases"][1:])
    assert doc["errors"] == ["metadata: IMDS unavailable"]


def test_warning_degrades_and_clears(tmp_path: Path) -> None:
    rec = booted(tmp_path)
    rec.warn("secrets: refresh failed")
    assert statefile.read(str(tmp_path))["condition"] == "degraded"  # type: ignore[index]
    rec.clear_warning("secrets:")
    assert statefile.read(str(tmp_path))["condition"] == "healthy"  # type: ignore[index]


def test_writes_are_atomic_under_concurrent_readers(tmp_path: Path) -> None:
    """A reader never sees a partial document, with reads proven to overlap the writes:
    the writer goes on until enough reads began or ended while a write was under way."""
    rec = booted(tmp_path, final=None)
    stop = threading.Event()
    bad: list[str] = []
    writes = {"started": 0, "finished": 0}
    overlapped = [0]
    seen: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            finished = writes["finished"]
            try:
                doc = statefile.read(str(tmp_path))
            except ValueError as exc:
                bad.append(str(exc))
                continue
            if writes["started"] > finished:  # a write under way when the read began or ended
                overlapped[0] += 1
            if doc and doc.get("secrets"):
                seen.add(doc["secrets"][0]["secret_id"])

    thread = threading.Thread(target=reader)
    thread.start()
    count = 0
    try:
        while count < 300 or (overlapped[0] < 20 and count < 20000):
            rec.update(secrets=[{"secret_id": f"s{count}", "path": "/x" * (count % 50)}])
            writes["started"] += 1
            rec.write()  # during a boot an update waits for the next write: this one
            writes["finished"] += 1
            count += 1
    finally:
        stop.set()
        thread.join()
    assert bad == []
    assert overlapped[0] >= 20, f"only {overlapped[0]} of the reads overlapped {count} writes"
    assert len(seen) > 1  # the reads saw the document change
    assert statefile.read(str(tmp_path))["secrets"][0]["secret_id"] == f"s{count - 1}"  # type: ignore[index]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_jobs_changes_replayed_make_the_same_document(tmp_path: Path) -> None:
    """What a job records (a Journal, which writes nothing) applied by the resident gives
    the document the job saw."""
    rec = Recorder(str(tmp_path))
    rec.start()
    rec.finish(State.READY)
    journal = Journal(str(tmp_path))
    journal.warn("secrets: refresh failed at now: boom")
    journal.update(refresh={"count": 1, "result": "failed"})
    journal.clear_warning("secrets: refresh failed")
    journal.phase("lifecycle", PhaseState.RUNNING)
    journal.phase("lifecycle", PhaseState.DONE, detail="CONTINUE")
    journal.skipped("secrets", [{"entry": "secrets.files[1]", "reason": "when"}])
    on_disk = json.loads((tmp_path / "state.json").read_text())
    assert "refresh" not in on_disk  # the journal wrote nothing
    resident = Recorder.resume(str(tmp_path))
    resident.apply(json.loads(json.dumps(journal.changes)))  # as the result file carries it
    written = json.loads((tmp_path / "state.json").read_text())
    for key in ("refresh", "warnings", "condition", "phases", "skipped", "state"):
        assert written[key] == journal.doc[key], key
    lifecycle = next(p for p in written["phases"] if p["name"] == "lifecycle")
    assert lifecycle["detail"] == "CONTINUE"


def test_a_running_jobs_changes_so_far_are_in_its_progress_file(tmp_path: Path) -> None:
    """Each change a job's Journal keeps is also written at once to its progress file, for
    the resident to apply while the job still runs."""
    rec = Recorder(str(tmp_path))
    rec.start()
    rec.finish(State.READY)
    progress = tmp_path / "resident-job.json.progress"
    journal = Journal(str(tmp_path), str(progress))
    journal.update(readiness={"seen": [{"name": "app.service", "ready": False}]})
    so_far = json.loads(progress.read_text())
    assert so_far == [["update", {"readiness": {"seen": [{"name": "app.service",
                                                          "ready": False}]}}]]
    resident = Recorder.resume(str(tmp_path))
    resident.apply(so_far)
    assert json.loads((tmp_path / "state.json").read_text())["readiness"]["seen"][0][
        "name"] == "app.service"
    journal.warn("readiness after rotation: prod/db -> app.service: boom")
    assert json.loads(progress.read_text())[len(so_far):] == [
        ["warn", "readiness after rotation: prod/db -> app.service: boom"]]


# -- when it writes, and what ----------------------------------------------------------------


def writes_of(rec: Recorder) -> list[dict[str, object]]:
    """Every document ``rec`` writes from now on, as written."""
    seen: list[dict[str, object]] = []
    write = rec.write

    def counted(*, durable: bool = False) -> None:
        write(durable=durable)
        seen.append(json.loads(Path(rec.path).read_text()))
    rec.write = counted  # type: ignore[method-assign]
    return seen


def test_during_the_boot_updates_ride_on_the_next_write(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    rec.start()
    seen = writes_of(rec)
    rec.update(instance={"instance_id": "i-1"})
    rec.skipped("tuning", [{"entry": "tuning.files[0]"}])
    assert seen == []  # nothing written for a field alone
    rec.phase("metadata", PhaseState.RUNNING)
    assert len(seen) == 1 and seen[0]["instance"] == {"instance_id": "i-1"}
    rec.warn("tuning: noswap")  # a warning is written at once
    assert len(seen) == 2
    rec.finish(State.READY)
    rec.update(refresh={"count": 1})  # after the boot, every update is written
    assert len(seen) == 4 and seen[-1]["refresh"] == {"count": 1}


def test_outside_text_is_recorded_escaped(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    rec.start()
    rec.phase("metadata", PhaseState.RUNNING)
    rec.note("metadata", "tag \x1b[2J")
    rec.phase("metadata", PhaseState.FAILED, detail="line\nforged", error="bad\rname")
    rec.warn("warn\x07ing")
    doc = json.loads((tmp_path / "state.json").read_text())
    said = [doc["phases"][0]["detail"], doc["phases"][0]["error"], *doc["warnings"]]
    assert said == ["line\\nforged", "bad\\rname", "warn\\x07ing"]
    assert doc["errors"] == [f"metadata: {doc['phases'][0]['error']}"]


def test_a_skipped_phase_replaces_only_its_own_entries(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    rec.skipped("tuning", [{"entry": "a"}])
    rec.skipped("secrets", [{"entry": "b"}])
    rec.skipped("tuning", [{"entry": "c"}])
    assert rec.doc["skipped"] == [{"entry": "b", "phase": "secrets"},
                                  {"entry": "c", "phase": "tuning"}]


def test_the_launch_hook_record_is_carried_within_the_same_boot_only(tmp_path: Path) -> None:
    first = Recorder(str(tmp_path))
    first.start()
    first.update(lifecycle={"group": "g", "hook": "h", "sending": "CONTINUE"})
    first.finish(State.FAILED)
    again = Recorder(str(tmp_path))
    assert again.doc["lifecycle"] == {"group": "g", "hook": "h", "sending": "CONTINUE"}
    assert again.previous is not None and again.previous["state"] == "failed"
    doc = json.loads((tmp_path / "state.json").read_text())
    doc["boot_id"] = "another-boot"
    (tmp_path / "state.json").write_text(json.dumps(doc))
    assert Recorder(str(tmp_path)).doc["lifecycle"] == {}  # an earlier boot's: forgotten


def test_a_garbled_previous_document_is_no_previous(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"state": ')
    rec = Recorder(str(tmp_path))
    assert rec.previous is None
    rec.start()
    assert statefile.read(str(tmp_path))["state"] == "running"  # type: ignore[index]


def test_the_first_write_fails_loudly_later_ones_once_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(OSError):
        Recorder(str(blocked / "state")).start()  # a file where the directory should be
    rec = Recorder(str(tmp_path / "state"))
    rec.start()
    rec.doc["unserialisable"] = object()
    with caplog.at_level(logging.ERROR, logger="agent.state.recorder"):
        rec.warn("one")
        rec.warn("two")
    assert [r.getMessage().startswith(f"cannot update {rec.path}: ") for r in caplog.records] \
        == [True]
    del rec.doc["unserialisable"]
    rec.warn("three")
    assert statefile.read(str(tmp_path / "state"))["warnings"] == [  # type: ignore[index]
        "one", "two", "three"]


def test_a_commit_is_durable_and_immediate(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(str(tmp_path))
    rec.start()
    synced: list[int] = []
    fsync = os.fsync

    def counted(fd: int) -> None:
        synced.append(fd)
        fsync(fd)
    monkeypatch.setattr(os, "fsync", counted)
    rec.update(lifecycle={"sending": "CONTINUE"})
    assert synced == []
    rec.commit(lifecycle={"sending": "CONTINUE"})
    assert len(synced) == 2  # the file, then its directory
    assert statefile.read(str(tmp_path))["lifecycle"] == {  # type: ignore[index]
        "sending": "CONTINUE"}


def test_a_journal_writes_nothing_and_survives_a_lost_progress_file(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    rec.start()
    rec.finish(State.READY)
    before = (tmp_path / "state.json").read_bytes()
    journal = Journal(str(tmp_path), str(tmp_path / "gone" / "x" / "result.progress"))
    (tmp_path / "gone").write_text("")  # the progress file cannot be written
    journal.update(refresh={"count": 1})
    journal.finish(State.READY)
    assert journal.progress is None
    assert journal.changes == [["update", {"refresh": {"count": 1}}], ["finish", "ready"]]
    assert (tmp_path / "state.json").read_bytes() == before


def test_phases_run_concurrently_without_losing_a_change(tmp_path: Path) -> None:
    rec = Recorder(str(tmp_path))
    rec.start()

    def phase(name: str) -> None:
        for i in range(30):
            rec.phase(name, PhaseState.RUNNING)
            rec.note(name, f"{name} {i}")
            rec.warn(f"{name} {i}")
    threads = [threading.Thread(target=phase, args=(n,)) for n in ("secrets", "tuning")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    doc = statefile.read(str(tmp_path))
    assert doc is not None and len(doc["warnings"]) == 60
    assert {p["detail"] for p in doc["phases"] if p["state"] == "running"} == {
        "secrets 29", "tuning 29"}
