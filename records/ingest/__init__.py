"""Dataset ingestion: an uploaded zip or tar of labelled images becomes a validated,
content-addressed directory ``<store_root>/<dataset_id>/{train,test}/<class>/<image>``.

Accepted layouts (a single top-level wrapper folder is stripped first):
- ``<class>/<image>``: a seeded, per-class stratified train/test split is drawn;
- ``train/<class>/<image>`` + ``test/<class>/<image>``: the split is kept;
- ``test/<class>/<image>`` alone: an explicit split with no train images, usable only as a
  zero-shot evaluation suite (a lone ``train/`` is refused: it could never be evaluated);
- ``manifest.csv`` (columns ``path,label[,split]``) or ``manifest.jsonl`` (``{"path", "label",
  "split"?}``) with the images at the listed relative paths.

Threat model: the archive is hostile. Every member is checked (no absolute path, no ``..``, no
link, device or FIFO) and streamed into a private ``.tmp-<uuid>`` directory under byte, file-count
and compression-ratio budgets counted on the bytes actually decompressed, not on header claims.
Member bytes land in files named by a counter, never by their archive path. Every image is decoded
by Pillow (a fixed list of formats, a pixel cap checked on the header before any pixel is decoded).
The finished directory appears with one ``os.rename``; on any error the temp directory is removed,
so a failed upload leaves nothing behind.

No web, queue or database code here: the API and the worker call these functions.
"""

from ..errors import DatasetTooLarge, UnsafeArchive, UnsupportedUpload
from .archive import ARCHIVE_CONTENT_TYPES, IngestLimits
from .store import (
                    IngestedDataset,
                    delete_dataset,
                    evaluation_images,
                    ingest_dataset,
                    load_dataset_dir,
                    read_dataset,
                    remove_stale_temp_dirs,
                    upload_spool,
)

__all__ = ["IngestLimits", "IngestedDataset", "DatasetTooLarge", "UnsafeArchive", "UnsupportedUpload",
           "ingest_dataset", "read_dataset", "load_dataset_dir", "evaluation_images", "delete_dataset",
           "remove_stale_temp_dirs", "upload_spool", "ARCHIVE_CONTENT_TYPES"]
