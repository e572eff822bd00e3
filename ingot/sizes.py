"""Integer size arithmetic shared by every layer (blocks per sequence, padded widths, bucket ladders)."""

from __future__ import annotations


def ceil_div(numerator: int, denominator: int) -> int:
    """How many ``denominator``-sized pieces hold ``numerator`` (blocks for a sequence, panels for a width)."""
    return -(-numerator // denominator)


def powers_of_two(low: int, high: int) -> list[int]:
    """``low``, ``2 * low``, ... below ``high``, then ``high``: the default bucket ladder."""
    values, value = [], low
    while value < high:
        values.append(value)
        value *= 2
    return values + [high]
