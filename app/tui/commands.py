"""Command palette entries built from what exists: one per analysis, model, screen and common action."""
from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from analyses.core.registry import analysis_names, get_analysis


class WorkbenchCommands(Provider):
    def entries(self) -> list[tuple[str, object, str]]:
        app = self.app
        found: list[tuple[str, object, str]] = []
        for name in analysis_names():
            spec = get_analysis(name).spec
            found.append((f"Analysis: {spec.title} ({name})", partial(app.choose_analysis, name), spec.description))
        for label, screen in (("Probe", "probe"), ("Results", "results"), ("History", "history"), ("SQL console", "sql"), ("Corpus browser", "corpus"), ("Compare runs", "compare"), ("Jobs (the queue)", "jobs")):
            found.append((f"Go to: {label}", partial(app.action_show, screen), f"Switch to the {label.lower()} screen"))
        from analyses.model.loading import EMBEDDED

        for model in EMBEDDED:
            found.append((f"Model: {model}", partial(app.switch_model, model), "Load this model in the worker"))
        found.extend([
            ("Run the analysis", app.action_run_job, "Submit the probe screen's analysis to the worker"),
            ("Cancel the running job", app.cancel_job, "Ask the worker to stop the job"),
            ("Toggle dark / light theme", app.action_toggle_dark, "Switch between the dark and the light theme"),
            ("Show keys (help)", app.action_toggle_help, "Show every key binding of this screen"),
        ])
        return found

    async def discover(self) -> Hits:
        for title, callback, help_text in self.entries():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self.entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
