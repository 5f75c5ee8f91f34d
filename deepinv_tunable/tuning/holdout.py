"""Hold-out masks for measurement splitting: which measured entries (whole sampled lines on
Cartesian MRI, whole views on CT, random entries elsewhere) a candidate's fit does not see, and
the physics restricted to the kept ones."""

from __future__ import annotations

import deepinv as dinv
import torch

from ..physics import real_image_physics

#: Fraction of the informative entries of ``y`` held out by the splitting rule.
HOLDOUT_FRACTION = 0.1


#: Fraction of the sampled lines held out by the splitting rule on Cartesian MRI.
LINE_HOLDOUT_FRACTION = 0.3


#: Fraction of the views held out by the splitting rule on parallel-beam CT: few-view CT misses
#: whole views, so the score is how well a fit predicts views it was not given. Smaller than
#: on MRI because every held-out view removes information the fit needs.
VIEW_HOLDOUT_FRACTION = 0.1


#: Sampled lines this close to DC are never held out (:func:`line_holdout_mask`).
CENTRE_LINES = 2


#: Entries of ``y`` above this multiple of the median magnitude are never held out (:func:`holdout_mask`).
PROTECT_FACTOR = 20.0


# ------------------------------------------------------------------------------------- splitting
def holdout_mask(
    y: torch.Tensor,
    holdout_fraction: float = HOLDOUT_FRACTION,
    generator: torch.Generator | None = None,
    protect_factor: float | None = None,
    split: int = 0,
) -> torch.Tensor:
    r"""Boolean mask shaped like ``y``: ``False`` on a random hold-out set of its non-zero entries.

    Exactly ``round(holdout_fraction * n)`` of the :math:`n` candidate entries are held out, drawn
    from ``generator`` so the same seed gives the same split. Candidates are the non-zero entries
    (zeros, e.g. unsampled k-space, carry no information and are always kept), except, with
    ``protect_factor``, those whose magnitude exceeds ``protect_factor`` times the median
    magnitude: the k-space centre holds most of an image's energy in a few entries, and a
    held-out DC coefficient would make the score measure the unknown mean intensity instead of
    the regularisation.

    ``split`` picks one of the disjoint hold-out sets of one random order of the candidates:
    generators with the same seed and ``split = 0, 1, ...`` hold out disjoint sets (K-fold
    cross-validation over ``1 / holdout_fraction`` folds at most).

    >>> keep = holdout_mask(torch.ones(1, 10), 0.3, torch.Generator().manual_seed(0))
    >>> int((~keep).sum())
    3
    >>> other = holdout_mask(torch.ones(1, 10), 0.3, torch.Generator().manual_seed(0), split=1)
    >>> bool((keep | other).all())  # the two hold-out sets are disjoint
    True
    """
    try:
        holdout_fraction = float(holdout_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"holdout_fraction must be a number in (0, 1), got {holdout_fraction!r}") from None
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction}")
    informative = _holdout_candidates(y, protect_factor)
    total = int(informative.sum())
    n_hold = round(holdout_fraction * total)
    if not 1 <= n_hold <= total - 1:
        raise ValueError(
            f"holdout_fraction={holdout_fraction} of the {total} non-zero entries of y holds out {n_hold}; "
            "at least one entry must be held out and one kept"
        )
    # An exact count (rather than an independent coin per entry) keeps m_H fixed, so the
    # constant m_H sigma^2 in the expected score is the same for every run with the same y.
    candidates = informative.nonzero().flatten()
    order = torch.randperm(total, generator=generator)
    keep_mask = torch.ones(y.numel(), dtype=torch.bool)
    keep_mask[candidates[_fold(order, n_hold, split, f"{total} non-zero entries")]] = False
    return keep_mask.reshape(y.shape).to(y.device)


def sampled_lines(physics) -> torch.Tensor | None:
    """Indices of the sampled k-space lines (last axis) of a Cartesian MRI ``physics`` whose mask
    is the same for every example and constant along the read-out axis; ``None`` otherwise."""
    mask = (
        getattr(physics, "mask", None) if isinstance(physics, (dinv.physics.MRI, dinv.physics.MultiCoilMRI)) else None
    )
    if not isinstance(mask, torch.Tensor) or mask.dim() < 2:
        return None
    plane = mask.reshape(-1, *mask.shape[-2:])
    if not bool((plane == plane[:1]).all()):
        return None
    columns = plane[0].abs().sum(0)
    if not bool(((columns == 0) | (columns == plane.shape[-2])).all()):
        return None
    return (columns > 0).nonzero().flatten()


def measured_views(physics) -> torch.Tensor | None:
    """Indices of the views (last axis of the sinogram) of a :class:`deepinv.physics.Tomography`
    ``physics``; ``None`` for any other physics."""
    if not isinstance(physics, dinv.physics.Tomography):
        return None
    return torch.arange(len(physics.radon.theta))


def whole_line_holdout(
    physics,
    line_holdout_fraction: float = LINE_HOLDOUT_FRACTION,
    view_holdout_fraction: float = VIEW_HOLDOUT_FRACTION,
) -> tuple[torch.Tensor, float, int | None] | None:
    """``(lines, fraction, centre)`` of the whole-line hold-out that fits ``physics`` (sampled
    k-space lines of Cartesian MRI, the lines near DC protected; views of CT, none protected), or
    ``None`` where single entries are held out.

    >>> from deepinv_tunable.physics import build_physics
    >>> lines, fraction, centre = whole_line_holdout(build_physics({"kind": "ct", "n_views": 30}, (32, 32)))
    >>> len(lines), fraction, centre
    (30, 0.1, None)
    """
    lines = sampled_lines(physics)
    if lines is not None:
        return lines, line_holdout_fraction, CENTRE_LINES
    views = measured_views(physics)
    if views is not None:
        return views, view_holdout_fraction, None
    return None


def line_holdout_mask(
    y: torch.Tensor,
    lines: torch.Tensor,
    holdout_fraction: float = LINE_HOLDOUT_FRACTION,
    generator: torch.Generator | None = None,
    centre: int | None = CENTRE_LINES,
    split: int = 0,
) -> torch.Tensor:
    r"""Boolean mask shaped like ``y`` (k-space or sinogram ``(..., H, W)``): ``False`` on whole
    lines (last axis), a random ``holdout_fraction`` of ``lines`` outside the ``centre`` lines
    nearest to DC (``None``: any line may be held out). Cartesian MRI misses whole k-space lines
    and few-view CT whole views, so a score on held-out lines measures what the reconstruction
    must do (fill the missing ones); a held-out point of a measured line is predicted by its
    neighbours on the same line whatever the regularisation. ``split`` picks one of the disjoint
    hold-outs of one random order, as in :func:`holdout_mask`.

    >>> keep = line_holdout_mask(torch.ones(1, 2, 4, 16), torch.arange(0, 16, 2), 0.25, torch.Generator().manual_seed(0))
    >>> sorted(set(int(i) for i in (~keep).nonzero()[:, -1]))  # two of the eight lines, none next to DC
    [0, 14]
    """
    candidates = _line_candidates(lines, y.shape[-1], centre)
    n_hold = round(float(holdout_fraction) * len(lines))
    if not 0 < holdout_fraction < 1 or not 1 <= n_hold <= len(candidates):
        raise ValueError(
            f"holdout_fraction={holdout_fraction} of {len(lines)} sampled lines holds out {n_hold}; "
            f"it must hold out between 1 and the {len(candidates)} lines away from the centre"
        )
    order = torch.randperm(len(candidates), generator=generator)
    held = candidates[_fold(order, n_hold, split, f"{len(candidates)} lines away from the centre")]
    keep = torch.ones(y.shape, dtype=torch.bool, device=y.device)
    keep[..., held.to(y.device)] = False
    return keep


def _fold(order: torch.Tensor, n_hold: int, split: int, what: str) -> torch.Tensor:
    """The ``split``-th block of ``n_hold`` entries of a random ``order`` (disjoint hold-outs)."""
    if not 0 <= split < len(order) // n_hold:
        raise ValueError(
            f"split {split} of hold-outs of {n_hold} needs {(split + 1) * n_hold} of the {what}; "
            f"only {len(order) // n_hold} disjoint hold-outs fit"
        )
    return order[split * n_hold : (split + 1) * n_hold]


def _holdout_candidates(y: torch.Tensor, protect_factor: float | None) -> torch.Tensor:
    """Flat boolean mask of the entries :func:`holdout_mask` may hold out."""
    informative = (y != 0).flatten().cpu()
    if protect_factor is not None:
        magnitude = y.detach().abs().flatten().cpu()
        informative &= magnitude <= protect_factor * magnitude[informative].median()
    return informative


def _line_candidates(lines: torch.Tensor, width: int, centre: int | None) -> torch.Tensor:
    """The lines :func:`line_holdout_mask` may hold out: those away from DC (all if ``centre`` is ``None``)."""
    return lines if centre is None else lines[(lines - width // 2).abs() > centre]


def max_splits(
    y: torch.Tensor,
    physics,
    holdout_fraction: float,
    line_holdout_fraction: float,
    view_holdout_fraction: float = VIEW_HOLDOUT_FRACTION,
) -> int:
    """How many disjoint hold-outs the splitting rule can draw from ``y`` (at least 1), counted
    from the same candidates :func:`line_holdout_mask` / :func:`holdout_mask` draw from."""
    whole_lines = whole_line_holdout(physics, line_holdout_fraction, view_holdout_fraction)
    if whole_lines is not None:
        lines, fraction, centre = whole_lines
        n_candidates, n_hold = len(_line_candidates(lines, y.shape[-1], centre)), round(fraction * len(lines))
    else:
        n_candidates = int(_holdout_candidates(y, PROTECT_FACTOR).sum())
        n_hold = round(holdout_fraction * n_candidates)
    return max(1, n_candidates // max(1, n_hold))


def split_keeps(
    y: torch.Tensor,
    physics,
    seed: int,
    n_splits: int = 1,
    holdout_fraction: float = HOLDOUT_FRACTION,
    line_holdout_fraction: float = LINE_HOLDOUT_FRACTION,
    view_holdout_fraction: float = VIEW_HOLDOUT_FRACTION,
) -> list[torch.Tensor]:
    """The keep masks of the splitting rule: up to ``n_splits`` disjoint hold-outs (as many as fit,
    :func:`max_splits`) cut from one random order drawn from ``seed``; whole sampled lines on
    Cartesian MRI and whole views on CT (:func:`line_holdout_mask`), random entries elsewhere
    (:func:`holdout_mask`). On MRI and CT they depend on the acquisition alone, not on the values
    of ``y``."""
    whole_lines = whole_line_holdout(physics, line_holdout_fraction, view_holdout_fraction)
    n_fit = max_splits(y, physics, holdout_fraction, line_holdout_fraction, view_holdout_fraction)
    keeps = []
    for split in range(min(n_splits, n_fit)):
        generator = torch.Generator().manual_seed(seed)
        if whole_lines is not None:
            lines, fraction, centre = whole_lines
            keeps.append(line_holdout_mask(y, lines, fraction, generator, centre=centre, split=split))
        else:
            keeps.append(holdout_mask(y, holdout_fraction, generator, protect_factor=PROTECT_FACTOR, split=split))
    return keeps


def kept_fraction(y: torch.Tensor, keep: torch.Tensor) -> float:
    r"""The fraction :math:`\rho` of the informative (non-zero) entries of ``y`` that ``keep`` keeps:
    how much of the data term a fit on the kept entries sums over.

    >>> kept_fraction(torch.tensor([1.0, 2.0, 0.0, 3.0]), torch.tensor([True, False, True, True]))
    0.6666666666666666
    """
    informative = y != 0
    return float((keep & informative).sum()) / float(informative.sum())


def masked_physics(physics, keep_mask: torch.Tensor):
    r"""``physics`` on real single-channel images, observed through a mask on its measurements:
    :math:`A_\text{keep}(x) = m \odot A(\iota x)`, with :math:`\iota` the embedding
    :func:`~deepinv_tunable.physics.domain.to_physics_domain` (so MRI's 2-channel convention is handled
    once, by :func:`~deepinv_tunable.physics.domain.real_image_physics`). A deepinv ``LinearPhysics`` (adjoint :math:`\iota^\top A^\top(m \odot v)`) for
    linear ``physics``; its noise model is kept. Any solver can then fit the kept entries only."""
    keep = keep_mask.to(torch.float32)
    real = real_image_physics(physics)

    def forward(x, **kwargs):
        return keep * real.A(x)

    if isinstance(physics, dinv.physics.LinearPhysics):
        return dinv.physics.LinearPhysics(
            A=forward, A_adjoint=lambda v, **kw: real.A_adjoint(keep * v), noise_model=physics.noise_model
        )
    return dinv.physics.Physics(A=forward, noise_model=physics.noise_model)
