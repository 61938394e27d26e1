"""The attacks scenario at a small scale: forged, stale and damaged tokens and a participant's access escapes
against a real `bridge serve`; nothing accepted, nothing served, nothing written."""

from __future__ import annotations

import pytest
from bridge_ops.reliability.attacks import attack_tokens, attempt_escapes, escapes, run
from bridge_ops.reliability.figures import Scale
from bridge_ops.reliability.hostile import Wire, serve

MEASURES = ["bad tokens accepted", "bad-token refusals outside the envelope", "unauthorized successes",
            "escape refusals outside their documented shape", "database rows changed by the refused calls",
            "valid tokens (minted, and forged with valid claims) served before and after"]


def test_the_ledger_sees_a_token_that_works_and_an_escape_that_is_served(tmp_path) -> None:
    """The judges can fail: a valid forged token counts as accepted, a coordinator's calls as escapes served."""
    from bridge_ops.reliability.attacks import World, _setup

    with serve(tmp_path / "control") as server:
        world = _setup(server)
        with Wire(server.port) as wire:
            accepted = attack_tokens(world, wire, {"valid": world.signed(world.claims())})
            assert (accepted.cases, accepted.through) == (3, 3)
            coordinator = World(**{**world.__dict__, "attacker": world.coordinator})
            served = attempt_escapes(coordinator, wire)
            assert served.through >= 10, served.examples
            assert len(escapes(world)) * 2 >= 45


@pytest.mark.slow
def test_attacks_scenario(tmp_path, figures_check) -> None:
    figures = run(Scale(n=1), tmp_path)
    figures_check(figures, MEASURES)
