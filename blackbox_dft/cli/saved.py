"""A run's ``config.json`` read back, typed: its command, its kind, its options (checked as a
config file's) and its tuner parameters; and the saved model URL made usable again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blackbox_dft.adapters import spec_secrets
from blackbox_dft.cli.demo import demo_fit_options, demo_job
from blackbox_dft.cli.kinds import Job, RunKind, kind_named
from blackbox_dft.cli.options import DemoOptions, FitOptions, saved_demo_options, saved_fit_options
from blackbox_dft.cli.runs import RunError, RunFolder

__all__ = ["SavedRun", "read_saved", "use_model_url"]


@dataclass
class SavedRun:
    """What ``config.json`` says about a run.

    command: ``"fit"`` or ``"demo"``; options: the fit options (a demo's mapped to its
    stand-in model: :func:`~blackbox_dft.cli.demo.demo_fit_options`); demo: a demo's own
    options (None for a fit); params: the tuner's ``get_config()`` as saved.
    """

    command: str
    kind: RunKind[Any]
    options: FitOptions
    demo: DemoOptions | None
    params: dict[str, Any]

    def build_job(self) -> Job:
        """The job again (data loaded, model built) from the saved options."""
        if self.demo is not None:
            return demo_job(self.demo)
        return self.kind.build_job(self.options)

    def set_cache(self, cache: bool) -> None:
        """Use the query cache or not (``resume --cache / --no-cache``)."""
        self.options.run.cache = cache
        if self.demo is not None:
            self.demo.cache = cache


def read_saved(run: RunFolder) -> SavedRun:
    """The run's ``config.json``, checked (RunError / ConfigError naming the file)."""
    cfg = run.read_config()
    kind = kind_named(cfg.get("kind"), run.config)
    values = cfg.get("options", {})
    params = cfg.get("params", {})
    if cfg.get("command") == "demo":
        demo = saved_demo_options(values, run.config)
        return SavedRun("demo", kind, demo_fit_options(demo), demo, params)
    return SavedRun("fit", kind, saved_fit_options(values, run.config), None, params)


def use_model_url(saved: SavedRun, model_url: str | None, run: RunFolder) -> None:
    """Check the run's saved model URL can be used, with ``--model-url`` if given: a URL
    saved with literal secrets masked (``***``) needs it, equal to the saved one once every
    secret is masked; the model is then built from it (options keep the saved form)."""
    spec = saved.options.model.spec
    if saved.demo is not None:
        if model_url is not None:
            raise RunError(f"run {run.path} is a demo run: it has no model URL")
        return
    if model_url is None:
        if spec_secrets.is_url(spec) and spec_secrets.MASK in str(spec):
            raise RunError(f"run {run.path} was fitted with literal secrets in its model URL "
                           f"({spec}), which were not saved; give the URL again with "
                           "--model-url URL (better: its secrets as ${VAR}, environment "
                           "variables)")
        return
    if not spec_secrets.is_url(spec):
        raise RunError(f"run {run.path} has no model URL (its model is {spec}); "
                       "--model-url does not apply")
    if not spec_secrets.same_url(model_url, str(spec)):
        raise RunError(f"--model-url {spec_secrets.stored_spec(model_url)} is not the URL run "
                       f"{run.path} was fitted with ({spec}), secrets aside")
    spec_secrets.register_spec(model_url, as_spec=str(spec))
