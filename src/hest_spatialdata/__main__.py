from __future__ import annotations

from hest_spatialdata.cli import main

if __name__ == "__main__":
    main()
