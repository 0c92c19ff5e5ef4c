"""Rolling-element bearing kinematics (pure).

Characteristic defect frequencies of a bearing with a stationary outer race
and an inner race turning at the shaft frequency ``f_r``, for ``n`` rolling
elements of diameter ``d`` on a pitch circle of diameter ``D`` with contact
angle ``phi`` (standard kinematic formulas, no slip; see T. A. Harris &
M. N. Kotzalas, *Rolling Bearing Analysis*, and R. B. Randall & J. Antoni,
"Rolling element bearing diagnostics - A tutorial", *Mech. Syst. Signal
Process.* 25 (2011) 485-520)::

    FTF  = f_r / 2 * (1 - d/D cos phi)                  cage (fundamental train)
    BPFO = n f_r / 2 * (1 - d/D cos phi)                ball pass, outer race
    BPFI = n f_r / 2 * (1 + d/D cos phi)                ball pass, inner race
    BSF  = D f_r / (2 d) * (1 - (d/D cos phi)^2)        ball spin

A ball defect strikes both races once per spin revolution, so its impacts
repeat at ``2 * BSF`` (tables such as Case Western Reserve University's list
that value under the name "BSF"; here ``BSF`` is the spin frequency itself).
Real bearings slip 1-2 %, so measured peaks sit slightly below these values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.datasets.errors import DatasetError


@dataclass(frozen=True, slots=True, kw_only=True)
class BearingGeometry:
    """Geometry of a rolling-element bearing. Default: SKF 6205 deep-groove ball bearing."""

    n_balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.n_balls < 3:
            raise DatasetError(f"n_balls must be >= 3, got {self.n_balls}")
        if not 0 < self.ball_diameter_mm < self.pitch_diameter_mm:
            raise DatasetError("need 0 < ball_diameter_mm < pitch_diameter_mm")
        if not 0 <= self.contact_angle_deg < 90:
            raise DatasetError("contact_angle_deg must be in [0, 90)")


#: SKF 6205-2RS JEM (CWRU drive end) and 6203-2RS JEM (CWRU fan end).
BEARING_6205 = BearingGeometry()
BEARING_6203 = BearingGeometry(n_balls=8, ball_diameter_mm=6.746, pitch_diameter_mm=28.5)


def defect_frequencies(geom: BearingGeometry, *, shaft_hz: float) -> dict[str, float]:
    """``{"BPFO", "BPFI", "BSF", "FTF"}`` in Hz for a shaft turning at ``shaft_hz``.

    Formulas in the module docstring. For the 6205 at 29.95 Hz (1797 rpm):
    BPFO 107.4, BPFI 162.2, BSF 70.6, FTF 11.9 Hz.
    """
    if not shaft_hz > 0:
        raise DatasetError(f"shaft_hz must be > 0, got {shaft_hz}")
    ratio = geom.ball_diameter_mm / geom.pitch_diameter_mm
    ratio *= math.cos(math.radians(geom.contact_angle_deg))
    return {
        "BPFO": geom.n_balls * shaft_hz / 2.0 * (1.0 - ratio),
        "BPFI": geom.n_balls * shaft_hz / 2.0 * (1.0 + ratio),
        "BSF": geom.pitch_diameter_mm * shaft_hz / (2.0 * geom.ball_diameter_mm)
        * (1.0 - ratio * ratio),
        "FTF": shaft_hz / 2.0 * (1.0 - ratio),
    }
