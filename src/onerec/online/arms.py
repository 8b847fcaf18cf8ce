"""Which arm of the A/B test serves a user: a salted hash of the user id, so a user keeps the
arm every day, after a resume and whatever other users exist (a platform's new users do not
move anyone), and the arms share users evenly up to sampling noise."""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def arm_of(user: int | str, arms: tuple[str, ...], salt: str) -> str:
    """The arm of one user: the first 8 bytes of SHA-256(salt:user) modulo the arm count."""
    digest = hashlib.sha256(f"{salt}:{user}".encode()).digest()
    return arms[int.from_bytes(digest[:8], "big") % len(arms)]


def assign_arms(users: Iterable[int | str], arms: tuple[str, ...], salt: str) -> np.ndarray:
    """The arm index (into ``arms``) of every user, by :func:`arm_of`."""
    index = {a: i for i, a in enumerate(arms)}
    return np.array([index[arm_of(u, arms, salt)] for u in users], dtype=np.int64)
