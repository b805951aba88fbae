"""Elstat's Streaming API: the sans-I/O protocol (:mod:`.protocol`, :mod:`.session`)."""

from .protocol import CloseCode, DataEvent, Incident, IncidentEvent, Op

__all__ = ["CloseCode", "DataEvent", "Incident", "IncidentEvent", "Op"]
