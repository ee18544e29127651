"""Shared aliases."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

JSON = dict[str, Any]
Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
