"""Small helpers shared by the notebooks: where runs live, and the CI switch for tiny parameters.

Every notebook starts with a ``parameters`` cell (papermill). When the environment variable
``MINIVGPT_CI=1`` is set (``make test`` sets it), :func:`ci_overrides` shrinks the parameters to tiny
values so that CI executes the whole notebook in seconds; full-size runs are the same notebook with
other parameters (``papermill NB.ipynb out.ipynb -p steps 5000``), never a second copy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def is_ci() -> bool:
    """True when notebooks should run with tiny parameters (``MINIVGPT_CI=1``)."""
    return os.environ.get("MINIVGPT_CI", "0") == "1"


def runs_dir(name: str = "") -> Path:
    """``<repo>/runs/<name>`` (git-ignored), created if needed; the same folder from any working directory.

    In CI mode it is ``<repo>/runs/ci/<name>``, so the tiny CI runs never overwrite a real run that a
    later notebook would load.
    """
    path = ROOT / "runs" / ("ci" if is_ci() else "") / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def ci_overrides(namespace: dict[str, Any], **tiny: Any) -> dict[str, Any]:
    """In CI mode, overwrite the given parameters in ``namespace`` (``globals()`` or a params dict) with tiny values.

    Returns the parameters that were changed (empty outside CI). Unknown names are an error, so a
    renamed parameter cannot silently escape the CI shrink.
    """
    missing = [k for k in tiny if k not in namespace]
    if missing:
        raise KeyError(f"ci_overrides names parameters the notebook does not define: {missing}")
    if not is_ci():
        return {}
    namespace.update(tiny)
    return dict(tiny)


def snapshot_names(namespace: dict[str, Any]) -> set[str]:
    """Names defined before a notebook's ``parameters`` cell (pass ``globals()``)."""
    return set(namespace)


def collect_params(namespace: dict[str, Any], before: set[str]) -> dict[str, Any]:
    """The parameters a notebook defined or papermill injected since ``before``, checked against the config.

    Every new public name must be a training config key (:func:`minivgpt.config.valid_keys`); an unknown
    one (a typo in ``papermill -p stepz 10``) raises with the closest valid name.
    """
    from .config import unknown_key_message, valid_keys

    valid = valid_keys()
    names = [n for n in namespace if n not in before and not n.startswith("_")]
    for n in names:
        if n not in valid:
            raise ValueError(unknown_key_message(n, list(valid)))
    return {n: namespace[n] for n in names}


def resolve_out(path: str) -> str:
    """A relative ``out=`` folder is taken from the repository root, wherever the notebook runs."""
    p = Path(path)
    return str(p if p.is_absolute() else ROOT / p)
