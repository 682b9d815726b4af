"""What every reader needs to know about the sample it reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hest_spatialdata._constants import CoordinateSystems, Technology

if TYPE_CHECKING:
    from spatialdata.transformations import BaseTransformation

    from hest_spatialdata.roots.samples import SampleFiles

#: Chunk side of the store's image arrays, a multiple of the TIFF's 256-px tiles. 1024 px: the patch loaders read
#: 2,650 patches/s from it (2,870 at 512 px, 2,200-2,300 at 2048) while the conversion stays at the plain
#: decode-and-encode limit of 2048-px chunks (512 px costs 1.4x it); docs/scaling.md section 2.4.
DEFAULT_CHUNK_SIZE = 1024


@dataclass(frozen=True)
class SampleContext:
    """The facts about one sample shared by its readers.

    Parameters
    ----------
    sample_id
        HEST sample id.
    pixel_size_um
        µm per level-0 pixel (``pixel_size_um_estimated``).
    technology
        Normalised ``st_technology``.
    slide_shape
        ``(height, width)`` of the slide's level 0 in pixels, used to check that coordinates fall on the slide.
    metadata
        The metadata JSON (NaN replaced by ``None``).
    files
        The sample's files, for readers that join another part (the Xenium cell table needs the cell boundaries).
    chunk_size
        Chunk side in pixels of the image arrays.
    shared
        What one reader computed that another may reuse within the same sample (e.g. boundaries read once).
    """

    sample_id: str
    pixel_size_um: float
    technology: Technology
    slide_shape: tuple[int, int]
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    files: SampleFiles | None = field(default=None, repr=False)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    shared: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def transformations(self) -> dict[str, BaseTransformation]:
        """Fresh transformations from level-0 pixels to the ``global`` and ``microns`` coordinate systems."""
        from spatialdata.transformations import Identity, Scale

        ps = self.pixel_size_um
        return {
            CoordinateSystems.GLOBAL.value: Identity(),
            CoordinateSystems.MICRONS.value: Scale([ps, ps], axes=("x", "y")),
        }
