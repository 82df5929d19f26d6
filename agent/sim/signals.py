"""CloudFormation resource signals (what cfn-signal sends), which moto does not implement."""

from __future__ import annotations

import dataclasses
import threading

from agent.sim.wire import Call, Interceptor, SimAwsError


@dataclasses.dataclass(frozen=True)
class Signal:
    """One ``SignalResource`` call received for an expected stack resource."""

    stack: str
    resource: str
    unique_id: str
    status: str  # SUCCESS | FAILURE


class ResourceSignals:
    """``SignalResource`` (what cfn-signal sends), which moto does not implement.

    A test declares which stack resources wait for signals with :meth:`expect`; a signal to
    anything else is the ValidationError CloudFormation answers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expected: set[tuple[str, str]] = set()
        self.received: list[Signal] = []

    @property
    def interceptors(self) -> dict[tuple[str, str], Interceptor]:
        """The API calls this class answers instead of moto."""
        return {("cloudformation", "SignalResource"): self._signal_call}

    def expect(self, stack: str, resource: str) -> None:
        """Let ``resource`` of ``stack`` receive signals."""
        with self._lock:
            self._expected.add((stack, resource))

    def _signal_call(self, call: Call) -> None:
        stack = call.params.get("StackName", "")
        resource = call.params.get("LogicalResourceId", "")
        status = call.params.get("Status", "")
        if status not in ("SUCCESS", "FAILURE"):
            raise SimAwsError("ValidationError", "Status must be SUCCESS or FAILURE")
        with self._lock:
            if (stack, resource) not in self._expected:
                raise SimAwsError("ValidationError", f"Stack {stack} does not exist"
                                  if stack not in {s for s, _ in self._expected} else
                                  f"Resource {resource} does not exist for stack {stack}")
            self.received.append(Signal(stack, resource, call.params.get("UniqueId", ""),
                                        status))
