"""The daemon's large metric families, written as text in a microsecond a line.

A thousand endpoints make about 114,000 samples: latency histograms, error classes, alert
kinds. prometheus_client builds a `Sample` with a label dict for each, copies them all to add
the `node` label, then formats each label set anew: about 17 µs a line, two seconds a scrape
on the event loop. These families keep their rows as they are (label values, value) and write
the text format straight from them, each series' label text made once for all its lines.
prometheus_client still sees ordinary families: their `samples` are built when it asks, which
only tests and the OpenMetrics format do, and `tests/test_event_loop.py` holds both texts
equal byte for byte.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Key = tuple[str, ...]


def _escape(value: str) -> str:
    """A label value as the text format quotes it."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


class Fast(Metric):
    """A family whose text is written from its rows; its `samples` are made on demand."""

    labelnames: tuple[str, ...]
    node: str | None = None  # the `node` label every sample gains at exposition
    _made: list[Sample] | None = None

    @property
    def samples(self) -> list[Sample]:
        if self._made is None:
            self._made = list(self.make_samples())
        return self._made

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._made = value or None  # Metric.__init__ sets []: made on demand instead

    def labelled(self, node: str) -> Fast:
        """This family as the listener shows it, every series with `node`."""
        out = copy.copy(self)
        out.node, out._made = node, None
        return out

    def _labels(self, key: Key) -> dict[str, str]:
        labels = dict(zip(self.labelnames, key, strict=True))
        return {"node": self.node, **labels} if self.node is not None else labels

    @staticmethod
    def _braced(labels: str) -> str:
        return f"{{{labels}}}" if labels else ""

    def _label_text(self, key: Key, extra: str = "") -> tuple[str, str]:
        """The series' labels as text, sorted by name as prometheus_client writes them, split
        where the label named `extra` goes (a histogram's `le`)."""
        pairs = list(zip(self.labelnames, key, strict=True))
        if self.node is not None:
            pairs.append(("node", self.node))
        pairs.sort()
        before = [f'{n}="{_escape(v)}"' for n, v in pairs if not extra or n < extra]
        after = [f'{n}="{_escape(v)}"' for n, v in pairs if extra and n > extra]
        return ",".join(before), ",".join(after)

    def header(self) -> str:
        name = self.name + "_total" if self.type == "counter" else self.name
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {doc}\n# TYPE {name} {self.type}\n"

    def text(self) -> str:
        """The family in the text format (version 0.0.4), as prometheus_client writes it."""
        raise NotImplementedError

    def make_samples(self) -> Iterator[Sample]:
        raise NotImplementedError


class Keyed(Fast):
    """A gauge or counter of one value per label set."""

    def __init__(
        self, name: str, doc: str, typ: str, labels: Sequence[str], values: Mapping[Any, float]
    ):
        super().__init__(name, doc, typ)
        self.labelnames = tuple(labels)
        self.rows = sorted(values.items())

    def _sample_name(self) -> str:
        return self.name + "_total" if self.type == "counter" else self.name

    def make_samples(self) -> Iterator[Sample]:
        name = self._sample_name()
        for key, value in self.rows:
            yield Sample(name, self._labels(key), float(value))

    def text(self) -> str:
        name = self._sample_name()
        lines = [self.header()]
        for key, value in self.rows:
            labels = self._braced(self._label_text(key)[0])
            lines.append(f"{name}{labels} {floatToGoString(value)}\n")
        return "".join(lines)


class Histograms(Fast):
    """Histograms of one label set: per series, its cumulative buckets ((bound, count), the
    last "+Inf") and its sum."""

    def __init__(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        series: Iterable[tuple[Key, list[tuple[str, float]], float]],
    ):
        super().__init__(name, doc, "histogram")
        self.labelnames = tuple(labels)
        self.rows = list(series)

    def make_samples(self) -> Iterator[Sample]:
        for key, buckets, total in self.rows:
            labels = self._labels(key)
            for bound, count in buckets:
                yield Sample(self.name + "_bucket", {**labels, "le": bound}, count)
            yield Sample(self.name + "_count", labels, buckets[-1][1])
            yield Sample(self.name + "_sum", labels, total)

    def text(self) -> str:
        lines = [self.header()]
        bucket, name = self.name + "_bucket", self.name
        for key, buckets, total in self.rows:
            before, after = self._label_text(key, "le")
            head = f"{bucket}{{{before}," if before else f"{bucket}{{"
            tail = f",{after}}} " if after else "} "
            for bound, count in buckets:
                lines.append(f'{head}le="{bound}"{tail}{floatToGoString(count)}\n')
            labels = self._braced(",".join(p for p in (before, after) if p))
            lines.append(f"{name}_count{labels} {floatToGoString(buckets[-1][1])}\n")
            lines.append(f"{name}_sum{labels} {floatToGoString(total)}\n")
        return "".join(lines)
