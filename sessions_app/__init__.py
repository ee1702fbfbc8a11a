"""The HITL domain: users, sessions, tickets, the message log, the outbox and webhooks."""
