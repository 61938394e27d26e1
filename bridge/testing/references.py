"""Reference implementations that optimised code is checked (tests) and measured (benchmarks) against.

`FULL_WAKE_SCAN` is the automatic-wake candidate query the incremental fold (`bridge/store/triggers.py`) replaced:
every unread message of every participant, each tick. Parameter `:ws`, the workspace; `{agents}` is filled in by
`full_wake_scan` with the engine's way of listing `to_agents`.
"""

FULL_WAKE_SCAN = """
    SELECT u.thread_id, u.agent_id, u.seq FROM (
        SELECT p.thread_id, p.agent_id, MAX(m.seq) AS seq
        FROM participants p
        JOIN threads t ON t.thread_id = p.thread_id AND t.workspace_id = :ws AND t.status != 'closed'
        JOIN sessions s ON s.workspace_id = :ws AND s.agent_id = p.agent_id AND s.status != 'active'
        LEFT JOIN read_cursors c ON c.thread_id = p.thread_id AND c.agent_id = p.agent_id
        JOIN messages m ON m.thread_id = p.thread_id AND m.seq > COALESCE(c.last_read_seq, 0)
             AND m.sender_agent_id != p.agent_id
             AND (m.to_agents IS NULL AND m.to_role IS NULL
                  OR EXISTS (SELECT 1 FROM {agents} WHERE j.value = p.agent_id)
                  OR m.to_role = p.thread_role)
        WHERE t.latest_seq > COALESCE(c.last_read_seq, 0)
        GROUP BY p.thread_id, p.agent_id
    ) u
    WHERE NOT EXISTS (SELECT 1 FROM wake_marks w WHERE w.thread_id = u.thread_id AND w.agent_id = u.agent_id
                      AND w.seq = u.seq)
"""
_ADDRESSED_AGENTS = {"sqlite": "json_each(m.to_agents) j",
                     "postgresql": "json_array_elements_text(CASE WHEN json_typeof(m.to_agents::json) = 'array'"
                                   " THEN m.to_agents::json END) j(value)"}


def full_wake_scan(dialect: str) -> str:
    """FULL_WAKE_SCAN in an engine's SQL ("sqlite" or "postgresql")."""
    return FULL_WAKE_SCAN.format(agents=_ADDRESSED_AGENTS[dialect])
