"""Topic templates (``gridtoken/meters/{serial}/readings``): subscription filters and the meter a topic names."""

from __future__ import annotations

from dataclasses import dataclass, field

SERIAL = "{serial}"


@dataclass(frozen=True, slots=True)
class Layout:
    """One configured topic layout: the format its messages are in and its template."""

    format: str
    template: str
    # The template's text before and after its {serial} level (every message's topic is matched against them).
    prefix: str = field(init=False)
    suffix: str = field(init=False)

    def __post_init__(self) -> None:
        prefix, _, suffix = self.template.partition(SERIAL)
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "suffix", suffix)

    @property
    def filter(self) -> str:
        """The subscription filter: the template with ``+`` for the serial level."""
        return self.template.replace(SERIAL, "+")

    def topic(self, serial: str) -> str:
        return self.template.replace(SERIAL, serial)

    def serial(self, topic: str) -> str | None:
        """The serial ``topic`` names when it has this layout, else None."""
        end = len(topic) - len(self.suffix)
        if end <= len(self.prefix) or not topic.startswith(self.prefix) or not topic.endswith(self.suffix):
            return None
        serial = topic[len(self.prefix) : end]
        return None if "/" in serial else serial


def layouts(topics: tuple[tuple[str, str], ...]) -> list[Layout]:
    return [Layout(name, template) for name, template in topics]


def match(layouts_: list[Layout], topic: str) -> tuple[Layout, str] | None:
    """The first layout ``topic`` has, with the serial it names."""
    for layout in layouts_:
        serial = layout.serial(topic)
        if serial is not None:
            return layout, serial
    return None


def shared(filter_: str, group: str) -> str:
    """``$share/<group>/<filter>``: the broker hands each message to one ingester of the group."""
    return f"$share/{group}/{filter_}" if group else filter_


def usable_serial(serial: str) -> bool:
    """Whether a serial can be a topic level and a broker user name (no / + # : or whitespace, not $...)."""
    return (
        bool(serial)
        and serial.isprintable()
        and not any(char in serial for char in "/+#:")
        and not any(char.isspace() for char in serial)
        and not serial.startswith("$")
    )
