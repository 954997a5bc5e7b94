"""stagewatch: stage-change history for applications sent through Kombo's unified ATS API."""

__version__ = "0.1.0"
