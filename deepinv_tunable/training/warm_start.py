r"""Starting a training run from saved weights instead of random ones (``init``), and the
learning-rate ramp such a run needs (``warmup_steps``).

A run whose Lightning checkpoint is gone (a new machine) can continue from the last exported
model: the weights come back, the optimiser's moments do not. Adam-type optimisers normalise
each coordinate's step by its second moment, so their first updates from fresh moments move
every weight by about the full learning rate whatever its gradient -- enough to undo a
converged model's fine structure in a few steps (HVAE: validation loss 0.56 -> 3.2 at lr 5e-4
without a ramp). A linear ramp from 0 over a few hundred updates lets the moments settle first.
"""

from __future__ import annotations

from typing import Any

import torch


def _comparable(value: Any) -> Any:
    """JSON and YAML give lists where a constructor may have kept tuples."""
    return list(value) if isinstance(value, tuple) else value


def load_initial_weights(
    init: str,
    expected: type[torch.nn.Module],
    settings: dict | None,
    what: str,
    free: tuple[str, ...] = (),
):
    """The model saved at ``init`` (a shipped name or a ``save_pretrained`` folder), in training mode.

    :param str init: shipped checkpoint name or folder.
    :param type expected: the network class the module trains.
    :param dict settings: the recipe's network keyword arguments; each key it sets must equal the
        saved configuration's (the saved weights fix the architecture), except the keys in ``free``.
    :param str what: the recipe key of those settings, for error messages (e.g. ``"hvae"``).
    :param tuple free: settings no weight depends on (the HVAE's decoder std ``gamma``): the
        recipe's value replaces the saved one, in the model's attribute and its configuration, so
        fine-tuning can change them. Default none.
    :raises ValueError: ``init`` holds another class, or a setting differs from the saved one.
    """
    from .. import pretrained

    model = pretrained.load(init).train()
    if not isinstance(model, expected):
        raise ValueError(f"init '{init}' holds a {type(model).__name__}, not a {expected.__name__}")
    for key in free:
        if settings and key in settings:
            setattr(model, key, settings[key])
            model.config[key] = settings[key]
    differ = {
        k: (v, model.config.get(k))
        for k, v in (settings or {}).items()
        if _comparable(model.config.get(k)) != _comparable(v)
    }
    if differ:
        raise ValueError(
            f"{what} settings differ from the initial weights' "
            f"('{init}'): {', '.join(f'{k}={a!r} vs {b!r}' for k, (a, b) in differ.items())}"
        )
    return model


def with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int):
    """``optimizer`` as Lightning's ``configure_optimizers`` returns it, with a linear
    learning-rate ramp from 0 over ``warmup_steps`` updates when that is positive.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> with_warmup(opt, 0) is opt, with_warmup(opt, 4)["optimizer"].param_groups[0]["lr"]
    (True, 0.25)
    """
    warmup_steps = int(warmup_steps)
    if warmup_steps <= 0:
        return optimizer
    ramp = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": ramp, "interval": "step"}}
