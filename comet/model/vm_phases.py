"""
A VM's phase and the actions valid in it, as data.

L{VM_ACTIONS} drives both the 409 for an action that is not valid now
(L{conflict}) and the C{actions} field of the representation, so the two
cannot disagree.  Kept apart from L{comet.model.vms} (the lifecycle that reads
phases and runs actions) so the state machine can be read on its own.
"""

from __future__ import annotations

import attrs

from comet.errors import CometError, Conflict, Unavailable
from comet.model.disk_modes import LOCAL
from comet.store import VMRecord

STOPPED = "stopped"
UNKNOWN = "unknown"

#: Action -> the phases it is valid in.
VM_ACTIONS: dict[str, frozenset[str]] = {
    "start": frozenset({STOPPED, "shutoff"}),
    "poweroff": frozenset({"running", "paused", "other"}),
    "shutdown": frozenset({"running"}),
    "reset": frozenset({"running"}),
    "suspend": frozenset({"running"}),
    "resume": frozenset({"paused"}),
    "stop": frozenset({"running", "paused", "shutoff", "other"}),
    #: (Also only while another usable host exists: L{VM.movable}.)
    "migrate": frozenset({"running", "paused"}),
}


@attrs.frozen
class VM:
    record: VMRecord
    #: C{stopped}, C{shutoff}, C{running}, C{paused}, C{other} or C{unknown}.
    phase: str
    #: Whether another host it could migrate to is connected now.
    movable: bool = False
    host_bridges: tuple[tuple[str, str], ...] = ()  # its host's, by network (none: unplaced)

    @property
    def state(self) -> str:
        """The state the API shows: a stopped VM is C{shutoff}."""
        return "shutoff" if self.phase == STOPPED else self.phase

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def actions(self) -> list[str]:
        return [a for a, phases in VM_ACTIONS.items()
                if self.phase in phases
                and (a != "migrate" or (self.movable and self.record.disk_mode != LOCAL))]


def conflict(vm: VM, action: str) -> CometError:
    """
    The 409 for C{action} on C{vm} in its current phase; a 503 naming the
    host when the phase is unknown because the host does not answer (the
    action may well be possible once it is back).
    """
    if vm.phase == UNKNOWN:
        return Unavailable(
            f"VM {vm.name!r} is on host {vm.record.host!r}, which does not answer;"
            f" {action} is not possible now"
        )
    where = f" on {vm.record.host}" if vm.record.host else ""
    return Conflict(f"VM {vm.name!r} is {vm.state}{where}; {action} is not possible")
