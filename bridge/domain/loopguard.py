"""Loop guard (docs/api.md): block a thread whose conversation goes round in circles."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from bridge.domain.vocabulary import PROGRESS_EVENTS, EventType, Role


@dataclass(frozen=True)
class LoopVerdict:
    """The new no-progress count and, when tripped, the escalation reason."""

    no_progress: int
    trip_reason: str | None = None
    kind: str | None = None  # "no_progress" | "repeated_finding"


def is_progress(*, kind: str, event_type: str | None, sender_role: str) -> bool:
    """True for a message that counts as progress: a progress event or a human/operator message."""
    return (kind == "event" and event_type in PROGRESS_EVENTS) or sender_role == Role.OPERATOR


def finding_key(*, event_type: str | None, metadata: dict[str, object], body: str) -> str | None:
    """The identity of a reported finding: `metadata.finding_id`, else a hash of the normalised body."""
    if event_type != EventType.FINDING_REPORTED:
        return None
    finding_id = metadata.get("finding_id")
    if isinstance(finding_id, str | int) and not isinstance(finding_id, bool) and str(finding_id):
        return f"id:{finding_id}"
    normalised = re.sub(r"\s+", " ", body).strip().lower()
    return "body:" + hashlib.sha256(normalised.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def judge(*, previous_no_progress: int, progress: bool, finding_reports: int | None, finding: str | None,
          max_turns: int, max_repeats: int) -> LoopVerdict:
    """Decide the new counter and whether this message trips the guard (0 limits switch a check off)."""
    count = 0 if progress else previous_no_progress + 1
    if finding is not None and finding_reports is not None and max_repeats and finding_reports >= max_repeats:
        label = finding.split(":", 1)[1]
        return LoopVerdict(count, f"loop_guard:repeated_finding:{label}", "repeated_finding")
    if max_turns and count >= max_turns:
        return LoopVerdict(count, f"loop_guard:no_progress:{count}", "no_progress")
    return LoopVerdict(count)
