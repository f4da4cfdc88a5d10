"""Datasets of many cases: build on Dask with a run ledger, report, export.

* :func:`build_dataset` (``thagpu dataset build``): one Dask task per case,
  results recorded by the client in ``DIR/ledger.sqlite``, outputs under
  ``DIR/cases/<case_id>/``, a QC page ``DIR/report.html``; ``resume``
  continues a stopped build.
* :func:`export_dataset` (``thagpu dataset export``): nnU-Net v2 or MSD
  layout, de-identified.
* :class:`Ledger` (``thagpu dataset status``): the run ledger.
"""

from .engine import BuildSummary, TLSFiles, build_dataset
from .export import ExportSummary, export_dataset
from .inputs import discover_inputs
from .ledger import STATUSES, Ledger
from .report import write_report

__all__ = ["BuildSummary", "TLSFiles", "build_dataset", "ExportSummary", "export_dataset",
           "discover_inputs", "STATUSES", "Ledger", "write_report"]
