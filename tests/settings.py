"""The test suite's settings: the gateway's own, with an encryption key made for this run.

The suite sets ``DATABASE_URL`` with ``DEBUG`` off, which production settings refuse without
``HITL_ENCRYPTION_KEYS``. The key is made here, before the settings are read (pytest-django
reads them before any conftest), and kept in the environment, which the processes the tests
start (the Celery worker, chaos, the demo) inherit.
"""

import os

from cryptography.fernet import Fernet

os.environ.setdefault("HITL_ENCRYPTION_KEYS", Fernet.generate_key().decode())

from hitl_gateway.settings import *  # noqa: F403

# In-process tests see an outbox row's ring at its commit, on the test's own thread and
# connection (inside its transaction); the processes they start ring as deployed.
HITL = HITL | {"OUTBOX_RING_SECONDS": 0.0}  # noqa: F405
