"""Numbers of the paper (Wu et al., 2020), for side-by-side tables.

They live in one data file shipped with the package, ``metavae/data/paper_readings.yaml``, each
reading with its source (figure or table, and panel); this module loads it once.

:data:`PAPER_PROBE_ACCURACY` (Fig. 6): mean linear-probe accuracy over the held-out values of each
MNIST and smallNORB panel; "≈" figures read off bar plots, about ±0.02. Keys: (family, split) →
{model: accuracy} (the family names of the two data sets differ).

:data:`PAPER_INVARIANCE` (Table 1): average L2 distance between the representation of a base test
image and of its transformed versions, for MNIST MetaVAEs trained on one family (outer key) and
measured on each family (inner key). The spec (PAPER.md §2) gives each row as "trained-family value
(the other two)"; the other two are read in the order rotate, scale, shear (skew).

:data:`PAPER_READINGS`: the file's entries as they are (lists of dicts with ``source``), including
smallNORB's Table 1 row (the trained-family value only), the physics claims (Fig. 1) and the
exponential-family readings (Figs. 2–3); :func:`reading` finds one entry.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from metavae.config.loading import parse_yaml

__all__ = ["PAPER_PROBE_ACCURACY", "PAPER_INVARIANCE", "PAPER_READINGS", "READINGS_FILE", "load_readings", "paper_probe_accuracy", "reading"]

#: the data file, relative to the package
READINGS_FILE = "data/paper_readings.yaml"

_KEYS = {"probe_accuracy": ("dataset", "family", "split", "source"), "invariance": ("dataset", "trained", "source"),
         "physics": ("quantity", "source"), "expfam": ("experiment", "family", "source")}


def load_readings(text: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The readings file (or ``text`` in its format) parsed and checked: every entry has its keys,
    a non-empty ``source`` and numbers for the rest."""
    source = f"metavae/{READINGS_FILE}"
    if text is None:
        text = (resources.files("metavae") / READINGS_FILE).read_text(encoding="utf-8")
    raw = parse_yaml(text, source)
    if not isinstance(raw, dict) or set(raw) != set(_KEYS):
        raise ValueError(f"{source}: expected the sections {', '.join(_KEYS)}")
    for section, keys in _KEYS.items():
        seen = set()
        for entry in raw[section]:
            identity = tuple(entry.get(k) for k in keys if k != "source")
            if identity in seen:
                raise ValueError(f"{source}: {section} has two entries for {identity}; keep one")
            seen.add(identity)
            missing = [k for k in keys if not entry.get(k)]
            values = {k: v for k, v in entry.items() if k not in keys}
            if missing or not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
                raise ValueError(f"{source}: {section} entry {entry} needs {', '.join(keys)} and numbers for the rest")
    return raw


PAPER_READINGS: dict[str, list[dict[str, Any]]] = load_readings()


def _numbers(entry: dict[str, Any], section: str) -> dict[str, float]:
    return {k: float(v) for k, v in entry.items() if k not in _KEYS[section]}


PAPER_PROBE_ACCURACY: dict[tuple[str, str], dict[str, float]] = {
    (e["family"], e["split"]): _numbers(e, "probe_accuracy") for e in PAPER_READINGS["probe_accuracy"]
}

PAPER_INVARIANCE: dict[str, dict[str, float]] = {
    e["trained"]: _numbers(e, "invariance") for e in PAPER_READINGS["invariance"] if e["dataset"] == "mnist"
}


def paper_probe_accuracy(dataset: str, family: str, split: str) -> dict[str, float]:
    """The paper's mean probe accuracies of the panel ``(family, split)`` of ``dataset`` (model →
    accuracy); empty for a data set the paper did not use (e.g. Fashion-MNIST)."""
    entry = reading("probe_accuracy", dataset=dataset, family=family, split=split)
    return {} if entry is None else _numbers(entry, "probe_accuracy")


def reading(section: str, **match: str) -> dict[str, Any] | None:
    """The entry of ``section`` whose keys equal ``match`` (e.g. ``reading("expfam", experiment="unseen",
    family="beta")``), or ``None``."""
    return next((e for e in PAPER_READINGS[section] if all(e.get(k) == v for k, v in match.items())), None)
