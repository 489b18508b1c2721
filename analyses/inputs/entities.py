"""Entity tables: entities with one attribute each (e.g. athletes and their sport), read from CSV
or JSONL, turned into prompts, and recombined into made-up names for controls.

A table has the fields ``entity`` and ``attribute`` and optionally ``template`` (a prompt with
``{entity}`` once; the default is a one-shot sport prompt). Malformed rows and attributes with
fewer than two values are refused with BadInput; the per-value minimum is checked by the analysis.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from analyses.core.contract import Input
from analyses.core.errors import BadInput
from analyses.inputs.tables import table_rows

DATA = Path(__file__).resolve().parent.parent / "data"
ALL_ATHLETES = DATA / "athletes.csv"
KNOWN_ATHLETES = DATA / "athletes_known.csv"
DEFAULT_TEMPLATE = "Fact: Tiger Woods plays the sport of golf\nFact: {entity} plays the sport of"
SLOT = "{entity}"
MAX_ROWS = 100_000


@dataclass(frozen=True)
class Entity:
    name: str
    value: str
    template: str = DEFAULT_TEMPLATE

    @property
    def prompt(self) -> str:
        return self.template.replace(SLOT, self.name)

    @property
    def name_span(self) -> tuple[int, int]:
        """Character span of the name inside the prompt."""
        start = self.template.index(SLOT)
        return start, start + len(self.name)


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"entity table {str(path)!r} cannot be read ({type(error).__name__})") from None
    return table_rows(path, text, whole_rows=True)


def _field(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{where}: the row has no {key}")
    return " ".join(value.split())


def load_entities(path_text: str | None = None) -> list[Entity]:
    """The entities of a table; the shipped table of athletes the embedded model knows when None."""
    path = KNOWN_ATHLETES if not path_text else Path(path_text).expanduser()
    if not path.is_file():
        raise BadInput(f"entity table {path_text!r} is not a readable file")
    entities: list[Entity] = []
    seen: set[str] = set()
    for line_no, row in _rows(path):
        where = f"{path}:{line_no}"
        name, value = _field(row, "entity", where), _field(row, "attribute", where)
        template = row.get("template") or DEFAULT_TEMPLATE
        if not isinstance(template, str) or template.count(SLOT) != 1:
            raise BadInput(f"{where}: the template must contain {SLOT} exactly once")
        if name in seen:
            raise BadInput(f"{where}: entity {name!r} appears twice")
        seen.add(name)
        entities.append(Entity(name, value, template))
        if len(entities) > MAX_ROWS:
            raise BadInput(f"entity table {str(path)!r} has more than {MAX_ROWS} rows")
    values = sorted({entity.value for entity in entities})
    if len(values) < 2:
        raise BadInput(f"entity table {str(path)!r} has {len(values)} attribute value(s) ({', '.join(values) or 'none'}); a probe needs at least 2")
    return entities


def check_counts(values: list[str], min_per_value: int) -> None:
    """BadInput when the attribute has fewer than 2 values or a value has fewer than min_per_value entities."""
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    if len(counts) < 2:
        raise BadInput(f"the attribute has {len(counts)} value(s); a probe needs at least 2")
    scarce = {value: n for value, n in counts.items() if n < min_per_value}
    if scarce:
        listed = ", ".join(f"{value} ({n})" for value, n in sorted(scarce.items()))
        raise BadInput(f"every attribute value needs at least {min_per_value} entities (one per fold); too few: {listed}")


def entity_inputs(entities: list[Entity]) -> list[Input]:
    """One Input per entity: the filled prompt, with the name, value, template and name span in meta."""
    inputs = []
    for index, entity in enumerate(entities):
        start, end = entity.name_span
        meta = {"entity": entity.name, "attribute": entity.value, "template": entity.template, "name_start": start, "name_end": end}
        inputs.append(Input(index, "entities", entity.prompt, meta))
    return inputs


def entities_of_inputs(inputs: list[Input]) -> list[Entity]:
    """Back from inputs to entities (the worker and the store see Inputs)."""
    entities = []
    for item in inputs:
        if item.source != "entities" or "entity" not in item.meta or "attribute" not in item.meta:
            raise BadInput(f"input {item.input_id} is not a row of an entity table (use --entities FILE)")
        entities.append(Entity(item.meta["entity"], item.meta["attribute"], item.meta.get("template", DEFAULT_TEMPLATE)))
    return entities


def split_name(name: str) -> tuple[str, str] | None:
    """(first, last) at the first space; None for a one-word name."""
    first, _, last = name.partition(" ")
    return (first, last) if last else None


@dataclass(frozen=True)
class Recombined:
    """A made-up name: the first name of entity ``first_of`` with the last name of ``last_of``."""

    name: str
    first_of: int
    last_of: int


def recombine(names: list[str], known: set[str] | None = None) -> list[Recombined]:
    """One made-up name per two-part name i: its first name with the last name of the next
    two-part name (cyclically) such that the result is no known name, no (first, last) pair of the
    table and not made up already. ``known`` defaults to the names themselves."""
    known = set(names) if known is None else known
    parts = [(index, split_name(name)) for index, name in enumerate(names)]
    usable = [(index, split) for index, split in parts if split is not None]
    firsts_lasts = {(split[0], split[1]) for _, split in usable}
    made: list[Recombined] = []
    taken: set[str] = set()
    n = len(usable)
    for slot, (index, (first, _)) in enumerate(usable):
        for shift in range(1, n):
            other_index, (_, last) = usable[(slot + shift) % n]
            name = f"{first} {last}"
            if name not in known and (first, last) not in firsts_lasts and name not in taken:
                made.append(Recombined(name, index, other_index))
                taken.add(name)
                break
    return made
