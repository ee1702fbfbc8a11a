"""Every state change of the gateway: one function per use case, ``<entity>_<action>``."""
