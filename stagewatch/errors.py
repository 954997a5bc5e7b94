"""The base of every error stagewatch raises on purpose, whatever layer raises it."""

from __future__ import annotations


class StagewatchError(Exception):
    """Base of every error stagewatch raises on purpose."""
