"""Saving and loading fitted estimators (placeholder, filled in below)."""
from __future__ import annotations
from typing import Any


def load(path: Any) -> Any:
    raise NotImplementedError


def save(est: Any, path: Any) -> None:
    raise NotImplementedError


def to_sklearn(est: Any) -> Any:
    raise NotImplementedError
