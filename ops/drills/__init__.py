"""Runbook drills: one module per runbook in `runbooks/`, each a real fault on a real stack (`bridge ops drill`).

Modules are imported only when a drill is listed or run, so `bridge --help` stays fast.
"""

from __future__ import annotations

import importlib

from bridge_ops.drills.framework import DRILLS, Drill

# drill name (= runbook file name without .md) -> module in this package
DRILL_MODULES: dict[str, str] = {
    "service-unavailable": "service_unavailable",
    "storage-contention": "storage_contention",
    "disk-full": "disk_full",
    "delivery-delay": "delivery_delay",
    "authz-misconfiguration": "authz_misconfiguration",
    "token-failure": "token_failure",
    "escalation-flood": "escalation_flood",
    "wake-trigger-failure": "wake_trigger_failure",
    "unmanaged-runtime": "unmanaged_runtime",
    "human-input-collision": "human_input_collision",
    "rollback": "rollback",
    "backup-restore": "backup_restore",
    "store-move": "store_move",
}


def get_drill(name: str) -> Drill:
    """The drill called `name` (KeyError when there is none)."""
    importlib.import_module(f"bridge_ops.drills.{DRILL_MODULES[name]}")
    return DRILLS[name]


def all_drills() -> list[Drill]:
    """Every drill, in the order of DRILL_MODULES."""
    return [get_drill(name) for name in DRILL_MODULES]
