"""The patch benchmarks' sample: the package's example written at a pixel size, and its store (built once).

Shared by ``bench_patches.py`` (and its ``--cohort`` mode, ``_bench_patch_cohort.py``) and ``bench_cohort.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
SAMPLE_ID = "BENCHPATCH"
#: Bump when the sample changes, so cached inputs are rebuilt (3: the h5 patches resized with cv2, as HEST).
INPUT_VERSION = 3


def sample_dir(pixel_size: float, chunk_size: int = 0) -> Path:
    suffix = f"_chunk{chunk_size}" if chunk_size else ""
    return WORK / f"patches_ps{pixel_size}_v{INPUT_VERSION}{suffix}"


def ensure_sample(pixel_size: float, chunk_size: int = 0) -> None:
    """Build (once) the HEST root and its store (image chunks of ``chunk_size`` px; 0: the converter's default)."""
    folder = sample_dir(pixel_size, chunk_size)
    if (folder / "done").is_file():
        return
    from hest_spatialdata.example import write_visium_sample
    from hest_spatialdata.storage.store import convert_sample

    print(f"building {folder} ...", flush=True)
    t0 = time.perf_counter()
    write_visium_sample(folder / "hest", SAMPLE_ID, pixel_size_um=pixel_size)
    convert_sample(folder / "hest", SAMPLE_ID, folder / "stores", overwrite=True, chunk_size=chunk_size or None)
    (folder / "done").write_text(f"{time.perf_counter() - t0:.1f} s\n")
