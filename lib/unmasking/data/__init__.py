"""The data stage: three sources, one seeded subset of masked/unmasked pairs, its split and manifest.

Sources (``download.source``), one module each:

* ``kaggle`` (``data.kaggle``) -- Face Mask Lite through the Kaggle API, only the chosen pairs, file by file.
* ``local``  (``data.fml``)    -- a folder or the downloaded zip in Face Mask Lite layout, checked before extraction.
* ``faces``  (``data.folder``) -- any folder of unmasked faces, masked here the way Face Mask Lite was made.

``data.pairs`` holds what every source produces (pairs, rejections, the pair checks), ``data.subset`` the seeded
subset, its identity-disjoint split, manifest and summary, and reading them back, ``data.photos`` the full-size test
photos and the reference photos for verification, and ``data.inputs`` the fingerprint of the external inputs. The
names the notebooks and tests use are re-exported here.
"""

from unmasking.data.fml import (
    FML_MASKED,
    FML_PREFIX,
    FML_UNMASKED,
    FmlIndex,
    check_zip,
    collect_local,
    index_fml,
    safe_extract,
)
from unmasking.data.folder import (
    FoundFaces,
    choose_templates,
    find_faces,
    find_landmarks,
    list_faces,
    mask_faces,
    order_faces,
    synthesize,
    template_library,
)
from unmasking.data.kaggle import (
    KaggleClient,
    collect_kaggle,
    download_kaggle,
    fml_names,
    kaggle_credentials_present,
    real_kaggle_client,
    scrub,
)
from unmasking.data.pairs import (
    MANIFEST_COLUMNS,
    SPLITS,
    Collected,
    CredentialsError,
    DataError,
    Pair,
    check_pair,
    coverage,
)
from unmasking.data.photos import build_photos, choose_references, mask_photos, masked_photos, read_photos
from unmasking.data.subset import (
    build_robustness,
    build_subset,
    data_metrics,
    load_pairs,
    read_manifest,
    read_summary,
    split_groups,
    write_subset,
)

__all__ = [
    "FML_MASKED", "FML_PREFIX", "FML_UNMASKED", "FmlIndex", "check_zip", "collect_local", "index_fml", "safe_extract",
    "FoundFaces", "choose_templates", "find_faces", "find_landmarks", "list_faces", "mask_faces", "order_faces",
    "synthesize", "template_library", "KaggleClient", "collect_kaggle", "download_kaggle", "fml_names",
    "kaggle_credentials_present", "real_kaggle_client", "scrub", "MANIFEST_COLUMNS", "SPLITS", "Collected",
    "CredentialsError", "DataError", "Pair", "check_pair", "coverage", "build_robustness", "build_subset",
    "data_metrics", "load_pairs", "read_manifest", "read_summary", "split_groups", "write_subset", "build_photos",
    "choose_references", "mask_photos", "masked_photos", "read_photos",
]
