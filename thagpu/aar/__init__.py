"""AAR: active-learning annotation refinement of the pseudo labels with MONAI networks.

Rounds over a built dataset, recorded in its ledger (docs/aar.md):

* :func:`train_round` (``thagpu refine train``): K-fold training on the current labels;
* :func:`score_round` (``thagpu refine score``): out-of-fold prediction and uncertainty per case;
* :func:`make_queue` (``thagpu refine queue``): the most uncertain cases exported for correction;
* :func:`import_labels` (``thagpu refine import``): corrected labels recorded as manual;
* :func:`simulate` (``thagpu refine simulate``): disagreement-ranked against random selection.
"""

from .rounds import import_labels, make_queue, score_round, train_round, uncertainty
from .simulate import simulate
from .store import RefineStore

__all__ = ["train_round", "score_round", "make_queue", "import_labels", "uncertainty", "simulate", "RefineStore"]
