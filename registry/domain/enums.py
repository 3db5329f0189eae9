"""The vocabulary of the registry: categories, statuses and file roles."""

from __future__ import annotations

from enum import Enum

__all__ = ["Category", "FileRole", "Status"]


class Category(str, Enum):
    CHARACTER = "character"
    STYLE = "style"
    MOTION = "motion"
    DOMAIN = "domain"


class Status(str, Enum):
    TESTING = "testing"
    CURRENT = "current"
    DEPRECATED = "deprecated"


class FileRole(str, Enum):
    SINGLE = "single"
    HIGH_NOISE = "high_noise"
    LOW_NOISE = "low_noise"
