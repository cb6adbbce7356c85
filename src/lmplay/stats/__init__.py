"""Training statistics: records in stats.json and TensorBoard scalars."""

from lmplay.stats.writer import StatsWriter

__all__ = ["StatsWriter"]
