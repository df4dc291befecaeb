"""Writes for endorsement intake and validation, by concern:

- `submission`: one request at a time (API, admin) and the validation of stored requests;
- `batches`: a file, from upload through its partitions and chunks to every row decided,
  and the resumption of one whose worker died;
- `batch_progress`: a batch's counters, progress, row errors and failure (both paths);
- `sweeps`: the periodic sweeps (lost validation messages, orphaned uploads).

State and history are written only by `endorsements.transitions`; the rules are
`endorsements.validation` (one row) and `endorsements.assessment` (many, set-based).
The names below are the services' public surface: callers import them from here.
"""

from endorsements.services.batch_progress import batch_fail
from endorsements.services.batches import (
    StagedUpload,
    batch_create,
    batch_partition_process,
    batch_process,
    batch_stage,
    batch_submit,
    batches_stalled_resume,
)
from endorsements.services.submission import endorsement_submit, endorsement_supersede, endorsements_validate
from endorsements.services.sweeps import endorsements_received_sweep, uploads_orphaned_sweep

__all__ = [
    "StagedUpload",
    "batch_create",
    "batch_fail",
    "batch_partition_process",
    "batch_process",
    "batch_stage",
    "batch_submit",
    "batches_stalled_resume",
    "endorsement_submit",
    "endorsement_supersede",
    "endorsements_received_sweep",
    "endorsements_validate",
    "uploads_orphaned_sweep",
]
