"""Topic templates (``gridtoken/meters/{serial}/readings``): subscription filters and the meter a topic names."""

from __future__ import annotations

from dataclasses import dataclass

SERIAL = "{serial}"


@dataclass(frozen=True, slots=True)
class Layout:
    """One configured topic layout: the format its messages are in and its template."""

    format: str
    template: str

    @property
    def levels(self) -> list[str]:
        return self.template.split("/")

    @property
    def filter(self) -> str:
        """The subscription filter: the template with ``+`` for the serial level."""
        return self.template.replace(SERIAL, "+")

    def topic(self, serial: str) -> str:
        return self.template.replace(SERIAL, serial)

    def serial(self, topic: str) -> str | None:
        """The serial ``topic`` names when it has this layout, else None."""
        levels = topic.split("/")
        if len(levels) != len(self.levels):
            return None
        serial = None
        for pattern, level in zip(self.levels, levels, strict=True):
            if pattern == SERIAL:
                serial = level
            elif pattern != level:
                return None
        return serial or None


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
