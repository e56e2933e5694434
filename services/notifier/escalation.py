"""An unacknowledged critical alert escalates (pure, no I/O): the Communication of one step.

The registry gives each critical finding its chain (`escalation`: after how many minutes, to
whom). When a step's deadline comes (a delayed `alert.escalation-due` on the broker: a durable
timer) and the alert's CommunicationRequest is still active, a new Communication goes to the
step's recipient, in response to the first alert (identifier `<alert key>/escalation/<step>`,
a conditional create, so a repeated timer writes it once), saying how long the alert has gone
unacknowledged. An acknowledged or withdrawn alert never escalates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.ai_transparency import AI_ASSERTED
from shared.alerts import follow_up_entry

__all__ = ["escalation_entry", "escalation_text"]


def escalation_text(step: int, steps: int, minutes: float, original: dict[str, Any]) -> str:
    said = next(
        (p["contentString"] for p in original.get("payload", []) if p.get("contentString")), ""
    )
    return (
        f"ESCALATION {step} of {steps}: a critical AI finding alert has not been acknowledged "
        f"for {minutes:.0f} minutes. Review the linked report and acknowledge the alert. "
        f'The alert read: "{said}"'
    )


def escalation_entry(
    key: str,
    original: dict[str, Any],
    recipient: str | None,
    now: datetime,
    *,
    step: int,
    steps: int,
) -> dict[str, Any]:
    """The conditional-create entry of step `step`'s Communication (`recipient` None: none
    could be resolved; the Communication is still written, visible to the alert queue)."""
    sent = datetime.fromisoformat(str(original.get("sent") or now.isoformat()))
    minutes = max(0.0, (now - sent).total_seconds() / 60)
    return follow_up_entry(
        key,
        ("escalation", step),
        alert=original,
        communication_id=str(original["id"]),
        sender=original.get("sender"),
        text=escalation_text(step, steps, minutes, original),
        label=AI_ASSERTED,
        now=now,
        recipients=[{"reference": recipient}] if recipient else [],
        **(
            {"reasonReference": original["reasonReference"]}
            if original.get("reasonReference")
            else {}
        ),
    )
