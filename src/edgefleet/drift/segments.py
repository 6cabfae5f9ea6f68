"""Segments of a fleet: which slices of the devices a look scores on their own.

Every look scores the whole fleet (segment ``all``). Each attribute a monitor segments
by adds one segment per value its devices have (``site=plant-3``, named
``<attribute>=<value>``), at most ``MAX_VALUES`` per attribute: the values with the
most devices keep their own segment and the rest are pooled in ``<attribute>=other``,
so a look's work and the report's size stay bounded whatever the attribute. A device
without the attribute is in ``all`` only. A cohort given by a targeting query is one
segment under the query segment's name (the store tells which devices it selects).
Pure: the caller reads the devices and the query members::

    plan = plan_segments(devices, ["site", "hw"], queries={"eu-rev2": {3, 7}})
    plan.segments[0].name        # "all"
    plan.members[device.pk]      # indexes into plan.segments
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from edgefleet.drift.monitor import FLEET_SEGMENT
from edgefleet.drift.ports import WindowDevice

#: Values of one attribute that get a segment of their own in one look.
MAX_VALUES: Final = 50
#: The value under which an attribute's remaining values are pooled.
OTHER: Final = "other"
#: ``attribute`` of a query segment (the metrics' ``segment_attribute`` label too).
QUERY: Final = "query"


@dataclass(frozen=True)
class Segment:
    """One segment: ``all``, an attribute's value, or a named query's cohort."""

    name: str
    attribute: str | None  # None for "all", QUERY for a query segment
    value: str | None  # the attribute's value, the query's text, None for "all"

    @property
    def kind(self) -> str:
        """``all``, the attribute's name, or ``query``: a bounded label for metrics."""
        return self.attribute if self.attribute is not None else FLEET_SEGMENT


FLEET: Final = Segment(FLEET_SEGMENT, None, None)


@dataclass(frozen=True)
class SegmentPlan:
    """The segments of one look, and each device's segments (indexes into ``segments``)."""

    segments: tuple[Segment, ...]
    members: Mapping[int, tuple[int, ...]]

    def names(self) -> list[str]:
        return [segment.name for segment in self.segments]

    def assign(
        self,
        devices: Sequence[WindowDevice],
        queries: Mapping[str, tuple[str, Collection[int]]] | None = None,
    ) -> dict[int, tuple[int, ...]]:
        """Other devices (a reference window's) in these segments: each in ``all``, in
        its value's segment of each attribute (the pooled ``other`` for a value without
        one here), and in the query segments that select it."""
        index = {segment.name: i for i, segment in enumerate(self.segments)}
        attributes = list(
            dict.fromkeys(s.attribute for s in self.segments if s.attribute not in (None, QUERY))
        )
        members: dict[int, list[int]] = {device.pk: [0] for device in devices}
        for device in devices:
            for attribute in attributes:
                value = device.attribute(attribute)
                if value is None:
                    continue
                found = index.get(f"{attribute}={value}", index.get(f"{attribute}={OTHER}"))
                if found is not None:
                    members[device.pk].append(found)
        for name, (_, selected) in (queries or {}).items():
            position = index.get(name)
            if position is None:
                continue
            for pk in selected:
                if pk in members:
                    members[pk].append(position)
        return {pk: tuple(found) for pk, found in members.items()}


def plan_segments(
    devices: Sequence[WindowDevice],
    attributes: Sequence[str],
    queries: Mapping[str, tuple[str, Collection[int]]] | None = None,
    max_values: int = MAX_VALUES,
) -> SegmentPlan:
    """The segments of ``devices``: ``all``, then per attribute (in the order given) its
    values by number of devices (most first, then by value) with the pooled ``other``
    last, then the query segments (name -> (query text, member primary keys)).

    Raises:
        ValueError: ``max_values`` is below 1.
    """
    if max_values < 1:
        raise ValueError(f"max_values must be at least 1, got {max_values}")
    segments: list[Segment] = [FLEET]
    members: dict[int, list[int]] = {device.pk: [0] for device in devices}
    for attribute in dict.fromkeys(attributes):
        values = {device.pk: device.attribute(attribute) for device in devices}
        counts = Counter(value for value in values.values() if value is not None)
        ranked = sorted(counts, key=lambda value: (-counts[value], value))
        kept = ranked[:max_values]
        index: dict[str, int] = {}
        for value in kept:
            index[value] = len(segments)
            segments.append(Segment(f"{attribute}={value}", attribute, value))
        if len(ranked) > len(kept):
            pooled = index.get(OTHER)
            if pooled is None:
                pooled = len(segments)
                segments.append(Segment(f"{attribute}={OTHER}", attribute, OTHER))
            for value in ranked[max_values:]:
                index[value] = pooled
        for pk, held in values.items():
            if held is not None:
                members[pk].append(index[held])
    for name, (query, selected) in (queries or {}).items():
        position = len(segments)
        segments.append(Segment(name, QUERY, query))
        for pk in selected:
            if pk in members:
                members[pk].append(position)
    return SegmentPlan(tuple(segments), {pk: tuple(found) for pk, found in members.items()})
