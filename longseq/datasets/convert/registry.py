"""The converters, registered once: data set name -> the module that converts it.

Read by the config (`longseq.datasets.convert.config`: one options section per data set, the
``dataset=`` choices and their validation), the pipeline (`converter_for`, the ``config`` entry
of ``meta.json``) and the CLI.

How to add one: write ``longseq/datasets/convert/<name>.py`` with ``Options`` (a subclass of
`longseq.datasets.convert.options.DatasetOptions`: the data set's defaults and extra fields,
overriding ``checks`` for them) and ``Converter`` (a subclass of
`longseq.datasets.convert.base.Converter`), then add one line ``"<name>": "<module>"`` to
`CONVERTERS`. ``dataset=<name>`` and the ``<name>.*`` options then exist on the command line.
Document the data set in ``docs/datasets.md``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: data set name -> module defining ``Options`` and ``Converter`` (imported on first use)
CONVERTERS: dict[str, str] = {
    "kuairand": "longseq.datasets.convert.kuairand",
    "taobao": "longseq.datasets.convert.taobao",
    "movielens": "longseq.datasets.convert.movielens",
    "recbole": "longseq.datasets.convert.recbole",
}


def dataset_names() -> tuple[str, ...]:
    """The registered data set names, in registration order."""
    return tuple(CONVERTERS)


def converter_module(name: str) -> ModuleType:
    """The module registered for ``name``; ``ValueError`` naming ``dataset=`` if unknown."""
    if name not in CONVERTERS:
        raise ValueError(f"convert config: dataset={name!r} must be {'|'.join(CONVERTERS)}")
    return importlib.import_module(CONVERTERS[name])
