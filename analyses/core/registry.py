"""The registry: analysis names to their modules, found through the ``iwb.analyses`` entry points.

Every analysis, built-in or from a package outside this repository, is an entry point of the group
``iwb.analyses``: its name is the analysis name, its value ``"package.module:Class"``, a subclass of
``analyses.core.contract.Analysis`` (or an instance of one). iwb's own pyproject.toml declares the
built-ins there; a plugin package declares its own (docs/plugins.md).

Listing names reads the installed packages' metadata only: no analysis module is imported (and no
torch). A bare source checkout, where the iwb distribution is not installed, uses BUILTIN instead
of iwb's entry points. A plugin name that a built-in already has is ignored (``ignored_plugins``
says which and why); a plugin whose module cannot be imported, or that does not follow the
contract, is a BadInput naming the plugin and the cause, raised only when that analysis is used.

``REGISTRY`` is a mutable mapping over all of this: names set on it (a test's analysis, the extra
analyses handed to a worker process) come first; the discovered ones are read again whenever
sys.path changes.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Analysis
from analyses.core.errors import BadInput

GROUP = "iwb.analyses"
DISTRIBUTION = "iwb"

# The built-in analyses, as pyproject.toml's [project.entry-points."iwb.analyses"] declares them
# (tests/test_plugins.py checks the two agree); used as they are only where iwb is not installed.
BUILTIN: dict[str, str] = {
    "logit-lens": "analyses.logit_lens:LogitLens",
    "layer-interventions": "analyses.layer_interventions:LayerInterventions",
    "attention-locality": "analyses.attention_locality:AttentionLocality",
    "component-norms": "analyses.component_norms:ComponentNorms",
    "neuron-classes": "analyses.neuron_classes:NeuronClasses",
    "truncation": "analyses.truncation:Truncation",
    "causal-trace": "analyses.causal_trace:CausalTrace",
    "first-layer-heads": "analyses.first_layer_heads:FirstLayerHeads",
    "contextual-neurons": "analyses.contextual_neurons:ContextualNeurons",
    "fact-lookup": "analyses.fact_lookup:FactLookup",
    "attribution-patching": "analyses.attribution_patching:AttributionPatching",
    "generate": "analyses.generation:Generate",
    "attention-pattern": "analyses.attention_pattern:AttentionPattern",
    "neuron-contexts": "analyses.neuron_contexts:NeuronContexts",
}


@dataclass(frozen=True)
class Plugin:
    """An analysis another distribution registers: its entry point value and where it comes from."""

    name: str
    value: str
    distribution: str


@dataclass(frozen=True)
class Discovered:
    """What the entry points of one sys.path give: built-ins, plugins, and the plugin names ignored."""

    builtins: dict[str, str]
    plugins: dict[str, Plugin]
    ignored: tuple[str, ...]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def discover() -> Discovered:
    """Read the ``iwb.analyses`` entry points of every installed distribution (no module imported)."""
    builtins: dict[str, str] = {}
    plugins: dict[str, Plugin] = {}
    others: list[Plugin] = []
    for entry in importlib.metadata.entry_points(group=GROUP):
        dist = getattr(entry, "dist", None)
        dist_name = dist.name if dist is not None and dist.name else "an unknown distribution"
        if _normalized(dist_name) == DISTRIBUTION:
            builtins[entry.name] = entry.value
        else:
            others.append(Plugin(entry.name, entry.value, dist_name))
    if not builtins:
        builtins = dict(BUILTIN)  # a bare source checkout (or an install older than the entry points)
    ignored = []
    for plugin in others:
        if plugin.name in builtins:
            ignored.append(f"{plugin.name!r} from {plugin.distribution} ({plugin.value}): a built-in analysis has that name")
        elif plugin.name in plugins:
            first = plugins[plugin.name]
            ignored.append(f"{plugin.name!r} from {plugin.distribution} ({plugin.value}): {first.distribution} registers that name first")
        else:
            plugins[plugin.name] = plugin
    return Discovered(builtins, plugins, tuple(ignored))


class Registry(MutableMapping[str, str]):
    """Analysis name -> entry point value ("module:Class"). Names set here win over discovered ones."""

    def __init__(self) -> None:
        self.added: dict[str, str] = {}
        self.removed: set[str] = set()
        self._seen: tuple[tuple[str, ...], Discovered] | None = None

    def discovered(self) -> Discovered:
        """The entry points, read again when sys.path has changed since the last look."""
        key = tuple(sys.path)
        if self._seen is None or self._seen[0] != key:
            self._seen = (key, discover())
        return self._seen[1]

    def _table(self) -> dict[str, str]:
        found = self.discovered()
        table = {name: plugin.value for name, plugin in found.plugins.items()}
        table.update(found.builtins)
        table.update(self.added)
        for name in self.removed:
            table.pop(name, None)
        return table

    def plugin(self, name: str) -> Plugin | None:
        """The plugin behind a name, or None for a built-in or a name set on the registry."""
        if name in self.added:
            return None
        return self.discovered().plugins.get(name)

    def __getitem__(self, name: str) -> str:
        return self._table()[name]

    def __setitem__(self, name: str, value: str) -> None:
        self.added[name] = value
        self.removed.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.added.pop(name, None)
        if name in self._table():
            self.removed.add(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._table()


REGISTRY = Registry()


def analysis_names() -> list[str]:
    return sorted(REGISTRY)


def ignored_plugins() -> tuple[str, ...]:
    """One line per plugin entry point left out (its name is taken), for a notice or a test."""
    return REGISTRY.discovered().ignored


def _load(value: str) -> Any:
    """The object an entry point value names: ``module:attribute`` (or a bare module)."""
    module_path, _, attribute = value.partition(":")
    loaded: Any = importlib.import_module(module_path.strip())
    for part in filter(None, attribute.strip().split(".")):
        loaded = getattr(loaded, part)
    return loaded


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _analysis(name: str, value: str, loaded: Any, where: str) -> Analysis:
    """The Analysis an entry point's object is (an instance, or a subclass to instantiate)."""
    if isinstance(loaded, type) and issubclass(loaded, Analysis):
        loaded = loaded()
    if not isinstance(loaded, Analysis):
        raise BadInput(f"{where} does not follow the analysis contract: {value} is not a subclass of "
                       "analyses.core.contract.Analysis (see docs/plugins.md)")
    if loaded.spec.name != name:
        raise BadInput(f"{where} has spec.name {loaded.spec.name!r}; it must be the entry point's name {name!r}")
    return loaded


_LOADED: dict[tuple[str, str], Analysis] = {}


def get_analysis(name: str) -> Analysis:
    """The registered analysis of that name; BadInput naming the known ones otherwise."""
    if name not in REGISTRY:
        known = ", ".join(analysis_names())
        raise BadInput(f"unknown analysis {name!r}; known analyses: {known}")
    value = REGISTRY[name]
    cached = _LOADED.get((name, value))
    if cached is not None:
        return cached
    plugin = REGISTRY.plugin(name)
    if plugin is None:
        where = f"analysis {name!r} ({value})"
        analysis = _analysis(name, value, _load(value), where)
    else:
        where = f"analysis plugin {name!r} ({plugin.value}, from {plugin.distribution})"
        try:
            loaded = _load(plugin.value)
        except Exception as error:
            cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise BadInput(_one_line(f"{where} failed to import: {cause}")) from error
        analysis = _analysis(name, value, loaded, where)
    _LOADED[(name, value)] = analysis
    return analysis
