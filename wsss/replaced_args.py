"""The model arguments that the data sets (``num_classes``, ``in_channels``): a recipe's value it replaces is
logged, never dropped silently."""

import logging
from typing import Any

import yaml

from wsss.resume import config_value

#: data attributes that the command line links into every model's ``init_args``
LINKED = ("num_classes", "in_channels")
log = logging.getLogger(__name__)


def linked_values(argv: Any) -> dict[str, Any]:
    """What the ``--config`` recipes and overrides of ``argv`` give to each linked model argument (None when
    nothing does, or when they cannot be read)."""
    values = dict.fromkeys(LINKED)
    for key in LINKED if isinstance(argv, list) else ():
        try:
            values[key] = config_value(argv, f"model.init_args.{key}")
        except (OSError, ValueError, yaml.YAMLError):
            pass  # an unreadable recipe: the command line reports it
    return values


def log_replaced(given: dict[str, Any], datamodule: Any) -> None:
    """Log each ``given`` linked value that differs from the data's."""
    for key, value in given.items():
        actual = getattr(datamodule, key, None)
        if value is not None and actual is not None and value != actual:
            log.warning(
                "model.init_args.%s: %s from the recipe is replaced by the data's %s (data.%s is linked into "
                "the model)", key, value, actual, key,
            )
