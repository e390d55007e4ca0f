"""usp-feast: a real-time user signals platform built as a Feast plugin.

The query API is importable without Feast's start-up cost::

    from usp_feast import SignalClient
"""

from usp_feast.query import QueryError, SignalClient, SignalEvent, UnknownSignalError

__all__ = ["QueryError", "SignalClient", "SignalEvent", "UnknownSignalError", "__version__"]

__version__ = "0.1.0"
