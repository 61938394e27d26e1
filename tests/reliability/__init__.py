"""The reliability suite's CI tier: every scenario at a small scale, every figure asserted (tests/reliability/)."""
