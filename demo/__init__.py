"""`python -m demo` (`make demo`): a whole HITL session on this machine, with no external service.

See `demo.orchestrator` for what runs where.
"""
