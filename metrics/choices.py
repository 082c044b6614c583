"""The metrics a run can choose beyond the papers' (``camplus compare --metrics``): their names,
what each means and which way is better, the scores that leave them undefined, and one batch's
per-image values of every chosen one from every method's map.

The papers' metrics (average drop, increase in confidence, win %, relative performance; see
:mod:`metrics.result`) are always scored: their one forward per method and kind of map also
decides which images pass the threshold. The perturbation metrics of :mod:`metrics.perturbation`
add one value per image, method and kind of map:

- ``deletion``: deletion AUC with :data:`STEPS` steps, zeros as the substrate;
- ``insertion``: insertion AUC with :data:`STEPS` steps, a blurred copy as the substrate;
- ``road-morf`` / ``road-lerf``: ROAD's score averaged over its percentiles, most or least
  relevant pixels removed first;
- ``randomisation``: the sanity check of :mod:`metrics.sanity`, the Spearman rank correlation
  of the map with the map after every layer above the CAM layer is re-initialised
  (:func:`metrics.sanity.layers_above`); one randomised copy of the model per batch.

References:
- Petsiuk, Das & Saenko (2018), "RISE: Randomized Input Sampling for Explanation of Black-box
  Models", BMVC 2018, arXiv:1806.07421: deletion and insertion.
- Rong, Leemann, Borisov, Kasneci & Kasneci (2022), "A Consistent and Efficient Evaluation
  Strategy for Attribution Methods", ICML 2022, arXiv:2202.00449: ROAD.
- Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018), "Sanity Checks for Saliency Maps",
  NeurIPS 2018, arXiv:1810.03292: cascading model-parameter randomisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import Tensor

from .confidence import ScoreKind, score_kind
from .perturbation import Forward, Order, deletion_auc, insertion_auc, road_curve

#: The name of the papers' metrics, always scored (the default choice).
PAPERS = "papers"
#: ``--metrics all``: every metric.
ALL = "all"
#: The column of the randomisation check.
RANDOMISATION = "randomisation Spearman"
#: Deletion and insertion steps: each is one forward of every method's perturbed images.
STEPS = 20


@dataclass(frozen=True)
class Choice:
    """A metric a run can choose."""

    name: str  #: as ``--metrics`` takes it
    column: str  #: its column in the tables and its key in the records
    higher_is_better: bool
    meaning: str  #: one line for the report
    #: scored from the model's outputs on perturbed images, so that it needs probabilities
    #: (False: computed from the maps alone)
    perturbation: bool = True

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


#: The metrics a run can choose, in the order of their columns.
CHOICES: dict[str, Choice] = {
    choice.name: choice
    for choice in (
        Choice(
            "deletion",
            "deletion AUC",
            False,
            f"area under the score as the most relevant pixels are set to zero ({STEPS} steps; "
            "Petsiuk et al.)",
        ),
        Choice(
            "insertion",
            "insertion AUC",
            True,
            f"area under the score as the most relevant pixels are copied into a blurred copy "
            f"({STEPS} steps; Petsiuk et al.)",
        ),
        Choice(
            "road-morf",
            "ROAD MoRF",
            False,
            "mean score after removing 10 % to 90 % of the pixels, most relevant first, "
            "filled by noisy linear imputation (Rong et al.)",
        ),
        Choice(
            "road-lerf",
            "ROAD LeRF",
            True,
            "mean score after removing 10 % to 90 % of the pixels, least relevant first, "
            "filled by noisy linear imputation (Rong et al.)",
        ),
        Choice(
            "randomisation",
            RANDOMISATION,
            False,
            "Spearman rank correlation of the map with the map of a copy of the model whose "
            "layers above the CAM layer are re-initialised, on the layer's grid (Adebayo et al.'s "
            "sanity check; a map that ignores the weights keeps its order and scores near 1, "
            "a constant map 0)",
            perturbation=False,
        ),
    )
}
#: Every name ``--metrics`` takes, besides ``all``.
NAMES = (PAPERS, *CHOICES)

#: Per kind of scores, the perturbation metrics it leaves undefined, each with the reason.
_UNDEFINED: dict[str, str] = {
    "raw": "its scores are probabilities, so that the area is in [0, 1] and comparable across "
    "images; raw outputs have no fixed zero or scale",
}


def parse_metrics(text: str | Iterable[str] | None) -> list[str]:
    """The chosen metrics from ``"deletion,insertion"`` or ``"all"`` (None: the default):
    ``papers`` first, then the others in the order of :data:`CHOICES`, each once.

    Raises:
        ValueError: an unknown or empty name, naming those there are.
    """
    if text is None:
        return [PAPERS]
    words = text.split(",") if isinstance(text, str) else list(text)
    names = {word.strip().lower() for word in words}
    unknown = sorted(name for name in names if name not in (*NAMES, ALL))
    if unknown or not names:
        raise ValueError(
            f"unknown metric {', '.join(map(repr, unknown)) or 'name (empty)'}: choose "
            f"{ALL} or a comma-separated list of {', '.join(NAMES)}"
        )
    chosen = set(CHOICES) if ALL in names else names
    return [PAPERS, *(name for name in CHOICES if name in chosen)]


def chosen(metrics: Sequence[str]) -> list[Choice]:
    """The chosen metrics among ``metrics`` (the papers' aside), in column order."""
    return [CHOICES[name] for name in CHOICES if name in metrics]


def refused_metrics(metrics: Sequence[str], scores: ScoreKind) -> dict[str, str]:
    """The chosen perturbation metrics that scores of kind ``scores`` leave undefined, each
    with the reason (empty for probabilities; the randomisation check compares maps, so every
    kind defines it). Decided by the kind alone, before any image."""
    reason = _UNDEFINED.get(score_kind(scores))
    return {} if reason is None else {c.name: reason for c in chosen(metrics) if c.perturbation}


def choice_scores(
    forward: Forward,
    inputs: Tensor,
    maps: Tensor,
    target: Tensor,
    choices: Sequence[Choice],
    *,
    scores: ScoreKind = "softmax",
    seed: int = 0,
) -> dict[str, Tensor]:
    """Each choice's per-image values, ``(K, N)`` float64 by column, of the stacked maps
    ``(K, N, 1, H, W)`` at the inputs' size (every method and kind of map of a batch: one
    forward per step for all of them). ``seed``: ROAD's noise."""
    values: dict[str, Tensor] = {}
    for choice in choices:
        if not choice.perturbation:
            raise ValueError(f"{choice.name} is not a perturbation metric: it compares maps")
        if choice.name in ("deletion", "insertion"):
            auc = deletion_auc if choice.name == "deletion" else insertion_auc
            values[choice.column] = auc(forward, inputs, maps, target, steps=STEPS, scores=scores)
        else:
            order: Order = "most" if choice.name == "road-morf" else "least"
            curve = road_curve(forward, inputs, maps, target, order=order, seed=seed, scores=scores)
            values[choice.column] = curve.mean(dim=-1)
    return values


__all__ = [
    "ALL",
    "CHOICES",
    "NAMES",
    "PAPERS",
    "RANDOMISATION",
    "STEPS",
    "Choice",
    "choice_scores",
    "chosen",
    "parse_metrics",
    "refused_metrics",
]
