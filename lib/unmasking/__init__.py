"""Predicting the unmasked face from a masked face: the study's helper library.

Modules:
    paths     -- every path of the project, from one place
    params    -- reading and validating ``params.yaml``
    images    -- reading, converting and writing images
    masks     -- mask templates and pasting them on 68 face landmarks
    faces     -- face detection, landmarks and embeddings (dlib, offline)
    data      -- the three data sources, the seeded subset, split and manifest
    models    -- the paper's autoencoder and the mask-aware U-Net (Keras 3)
    train     -- seeded, resumable training
    metrics   -- every metric of the study, defined once
    evaluate  -- methods, baselines and the evaluation tables
    cli       -- the ``unmask`` command
"""

__version__ = "0.1.0"
