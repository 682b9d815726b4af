"""A small HEST cohort: two Visium samples of one patient and a legacy-ST sample of another, in HEST-1k layout.

The three are the Visium example (:func:`~hest_spatialdata.example.write_visium_sample`, each with its own texture
seed) with their metadata made into a cohort. The ST sample is the same tissue measured the way legacy ST is
reported: its metadata says ``Spatial Transcriptomics`` with 100 µm spots, another patient and disease state, and
its st h5ad holds a different gene panel (the first :data:`ST_DROPPED_GENES` genes absent, the rest in reverse
order), so cohort views must match genes by name. One gene of every sample carries a character spatialdata does
not accept in a name (:data:`SLASHED_GENE`), as HEST's own panels do, so its var name differs from its HEST name.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from hest_spatialdata.example.common import write_metadata
from hest_spatialdata.example.visium import EXAMPLE_PIXEL_SIZE_UM, write_visium_sample
from hest_spatialdata.source.layout import PARTS, Part
from hest_spatialdata.source.metadata import read_metadata

#: sample id -> (technology, patient, disease state, texture seed).
COHORT_SAMPLES = {
    "COHV1": ("Visium", "PATIENT_A", "Cancer", 0),
    "COHV2": ("Visium", "PATIENT_A", "Cancer", 1),
    "COHST": ("Spatial Transcriptomics", "PATIENT_B", "Healthy", 2),
}
#: Genes the ST sample's panel lacks (the first ones of the Visium samples).
ST_DROPPED_GENES = 40
#: Position of the gene renamed with a slash in every sample, and its HEST name.
SLASHED_GENE = (50, "Gene/50")
ST_SPOT_DIAMETER_UM = 100.0


def write_cohort_samples(hest_dir: str | Path, *, pixel_size_um: float = EXAMPLE_PIXEL_SIZE_UM) -> list[str]:
    """Write the cohort's three samples into ``hest_dir`` (HEST-1k layout).

    Parameters
    ----------
    hest_dir
        HEST root to write into.
    pixel_size_um
        µm per level-0 pixel of the slides.

    Returns
    -------
    The sample ids, see :data:`COHORT_SAMPLES`.
    """
    root = Path(hest_dir)
    for sample_id, (technology, patient, disease_state, seed) in COHORT_SAMPLES.items():
        write_visium_sample(root, sample_id, pixel_size_um=pixel_size_um, seed=seed)
        st_path = PARTS[Part.ST].path(root, sample_id)
        adata = ad.read_h5ad(st_path)
        names = adata.var_names.tolist()
        names[SLASHED_GENE[0]] = SLASHED_GENE[1]
        adata.var_names = names
        meta_path = PARTS[Part.METADATA].path(root, sample_id)
        meta = read_metadata(meta_path, sample_id)
        meta.update(st_technology=technology, patient=patient, disease_state=disease_state)
        if technology != "Visium":
            adata = adata[:, adata.var_names[ST_DROPPED_GENES:][::-1]].copy()
            meta.update(spot_diameter=ST_SPOT_DIAMETER_UM, inter_spot_dist=200.0, subseries="ST")
        meta.update(adata_nb_col=adata.n_vars, nb_genes=adata.n_vars)
        adata.write_h5ad(st_path)
        write_metadata(meta_path, meta)
    return list(COHORT_SAMPLES)
