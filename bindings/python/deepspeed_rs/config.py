"""ds_config helpers under short names: :func:`check`, :func:`auto_paths` and
:func:`fill_auto` are :func:`deepspeed_rs.config_check`, :func:`deepspeed_rs.config_auto_paths`
and :func:`deepspeed_rs.config_fill_auto` (see :mod:`deepspeed_rs.engine`).

>>> import deepspeed_rs as ds
>>> cfg = {"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}
>>> ds.config.auto_paths(cfg)
['optimizer.params.lr']
>>> ds.config.check(ds.config.fill_auto(cfg, "optimizer.params.lr", 1e-3))["train_batch_size"]
8
"""

from __future__ import annotations

from .engine import config_auto_paths as auto_paths
from .engine import config_check as check
from .engine import config_fill_auto as fill_auto

__all__ = ["auto_paths", "check", "fill_auto"]
