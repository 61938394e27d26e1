"""The exact environment an agent's command runs under (its argv is rendered by `bridge.domain.templates`).

One rule for every way an agent is started: `bridge agent up` / `runtime launch` (services) and the worker's resume
and spawn steps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

# What an agent's command keeps of the worker's environment; everything else of the bridge's own (its tokens,
# CODEX_HOME, API keys, BRIDGE_* settings) stays out: the agent's identity comes from its runtime registration.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ")


def command_env(own: Mapping[str, str], context: Mapping[str, str]) -> dict[str, str]:
    """The complete environment of an agent's command: the minimal base, the trigger's context, the agent's own."""
    base = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
    return {**base, **context, **own}


def isolated(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`argv` under exactly `env` (`env -i`), for commands started by a tmux server whose own environment is not
    the agent's."""
    return ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
