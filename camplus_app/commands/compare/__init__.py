"""``camplus compare``: the evaluation of Lerma & Lucas on a data set, streamed and resumable.

Lerma & Lucas (2022), "Grad-CAM++ is equivalent to Grad-CAM with positive gradients"
(arXiv:2205.10838), section 4: each method's explanation map ``E = L (.) I`` is scored on the
explained class, with maps from the gradients of the logits and of the softmax.

The images are listed first (nothing is decoded), then DataLoader workers decode and preprocess
them batch by batch. Batch ``b`` is always the same images (positions ``b*B`` to ``(b+1)*B - 1``
of the listing), and each batch's per-image results go to this process's part file in the run
folder, synced to disk before the next batch. ``--resume`` scores only the batches missing from
the part files, so the final tables equal those of an uninterrupted run. Under ``torchrun``
every process scores every K-th missing batch into its own part file and the first one merges
them: the same batches, hence the same tables, as one process.

- :mod:`.processes`: this process's rank, GPU and collectives under ``torchrun``;
- :mod:`.settings`: the settings that decide a run, and the checks ``--resume`` makes of them;
- :mod:`.data`: the identity of the run's data (``dataset.csv``), checked by ``--resume``;
- :mod:`.integrity`: the checks of the part files' records;
- :mod:`.scoring`: the scoring loop, one part-file record per batch;
- :mod:`.outputs`: the tables, figures and report of a finished run;
- :mod:`.job`: the command, from its arguments to its files.
"""

from .job import CompareJob, run
from .processes import Processes
from .settings import Settings

__all__ = ["CompareJob", "Processes", "Settings", "run"]
