"""Selection strategies: which cases without a manual label go to a person next.

* ``disagreement`` (thagpu's own): the score of :func:`thagpu.aar.rounds.uncertainty`, comparing the
  case's current label with its out-of-fold prediction; the most uncertain first.
* ``epistemic`` (MONAI Label's Monte-Carlo dropout strategy): the networks train with dropout
  (``aar.dropout`` > 0); scoring runs ``aar.mc_samples`` sliding-window passes of the case's own
  (out-of-fold) model with dropout left on, averages the softmax, and takes the mean over the hip
  region of the predictive entropy of that average, divided by ``log(6)`` so it lies in [0, 1]
  (:func:`mc_dropout_entropy`). It uses no label: it asks where the model itself is unsure.
* ``random`` (MONAI Label's ``random``): a seeded draw, no model. Published comparisons find it a
  strong baseline (see docs/aar.md).

Ties rank by case id, so every strategy's choice is reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = ["STRATEGIES", "MODEL_STRATEGIES", "strategy_value", "choose", "mc_dropout_entropy"]

#: Every selection strategy, and those that rank by a trained model's scores.
STRATEGIES = ("disagreement", "epistemic", "random")
MODEL_STRATEGIES = ("disagreement", "epistemic")


def strategy_value(strategy: str, record: dict) -> float:
    """The value ``strategy`` ranks a case by (higher: corrected first) from its score record.

    Parameters
    ----------
    strategy : {"disagreement", "epistemic"}
    record : dict
        A case's entry of :meth:`thagpu.aar.RefineStore.scores`: ``{"fold", "score", "parts"}``.

    Raises
    ------
    InputError
        ``epistemic`` on a round scored without Monte-Carlo dropout (trained with ``aar.dropout`` 0).
    """
    if strategy == "disagreement":
        return float(record["score"])
    if strategy == "epistemic":
        value = record["parts"].get("epistemic")
        if value is None:
            raise InputError("epistemic", "this round was scored without Monte-Carlo dropout; train it with "
                                          "--dropout above 0 (aar.dropout) and score it again")
        return float(value)
    raise InputError(strategy, f"unknown strategy; choose from {', '.join(MODEL_STRATEGIES)} (or random)")


def choose(strategy: str, candidates, budget: int, *, scores: dict | None = None, seed: int = 0,
           round_: int = 0) -> list:
    """The ``budget`` cases of ``candidates`` that ``strategy`` sends for correction.

    Parameters
    ----------
    strategy : one of :data:`STRATEGIES`
    candidates : iterable of str
        Case ids without a manual label.
    budget : int
    scores : dict, optional
        case id -> score record (:meth:`thagpu.aar.RefineStore.scores`); needed by the model strategies.
    seed, round_ : int
        The random strategy draws with ``numpy.random.default_rng(1000 x seed + round_)``.

    Returns
    -------
    list of str
        Model strategies: highest value first (ties by case id); random: sorted case ids.
    """
    candidates = sorted(candidates)
    if strategy == "random":
        rng = np.random.default_rng(seed * 1000 + round_)
        return sorted(rng.choice(candidates, size=min(budget, len(candidates)), replace=False).tolist())
    if strategy not in MODEL_STRATEGIES:
        raise InputError(strategy, f"unknown strategy; choose from {', '.join(STRATEGIES)}")
    if scores is None:
        raise ValueError(f"the {strategy} strategy ranks by scores; none given")
    return sorted(candidates, key=lambda c: (-strategy_value(strategy, scores[c]), c))[:budget]


def mc_dropout_entropy(model, image: np.ndarray, patch_size: int, device: str, overlap: float, *,
                       samples: int = 8, seed: int = 0) -> float:
    """Mean normalised predictive entropy of ``samples`` Monte-Carlo dropout passes over ``image``.

    Parameters
    ----------
    model : torch.nn.Module
        A network with dropout (:func:`thagpu.aar.networks.make_network` with ``dropout`` > 0) in
        eval mode; only its dropout layers are switched on, and back off afterwards (normalisation
        layers stay in eval mode).
    image : (X, Y, Z) ndarray
        Normalised CT on the network's grid (:class:`thagpu.aar.train.Sample`).
    patch_size : int
        Sliding-window size.
    device : {"cpu", "gpu"}
    overlap : float
        Sliding-window overlap.
    samples : int
        Forward passes (MONAI Label's default is a handful to a few tens).
    seed : int
        Seeds the dropout masks; the global torch random state is left as it was.

    Returns
    -------
    float
        Mean over the voxels of ``H(p) / log(C)``, ``p`` the mean softmax over the passes and ``C``
        the number of classes: 0 where every pass is certain of one class, 1 at a uniform guess.

    Raises
    ------
    ValueError
        The model has no dropout layer with a probability above 0.
    """
    import torch
    from monai.inferers import sliding_window_inference

    from .train import _autocast, _torch_device

    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]
    if not dropouts:
        raise ValueError("the model has no dropout; train it with aar.dropout above 0 for Monte-Carlo dropout")
    torch_device = _torch_device(device)
    tensor = torch.from_numpy(np.ascontiguousarray(image)[None, None]).to(torch_device)
    states = [m.training for m in dropouts]
    devices = [torch_device.index or 0] if torch_device.type == "cuda" else []
    mean = None
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            for m in dropouts:
                m.train()
            with torch.no_grad(), _autocast(torch_device):
                for _ in range(samples):
                    logits = sliding_window_inference(tensor, roi_size=(patch_size,) * 3, sw_batch_size=2,
                                                      predictor=model, overlap=overlap, mode="gaussian")
                    probabilities = torch.softmax(logits.float(), dim=1)
                    mean = probabilities if mean is None else mean + probabilities
        finally:
            for m, state in zip(dropouts, states):
                m.train(state)
    mean = mean / samples
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum(dim=1) / math.log(mean.shape[1])
    return float(entropy.mean())
