"""Blood cells drawn as stain densities, the way light passes through a stained smear.

A field is two density maps: eosin (pink: red cells, plasma, a little in nuclei) and
azure (blue-purple: nuclei and leukocyte cytoplasm). The renderer turns them into
colour with Beer-Lambert, so overlapping cells darken naturally and a change of stain
hue changes every structure consistently. Each cell is a slightly irregular polygon
stamped into its bounding box only, which keeps a 224 px field at a few milliseconds.

Class morphology lives in `LEUKOCYTE_TYPES`; sizes are in units of the red-cell radius,
so the classes differ in shape and proportions a CNN must learn, not in colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel precision for cv2.fillPoly (coordinates * 16)


@dataclass(frozen=True)
class LeukocyteType:
    """Ranges a leukocyte of one class is drawn from (radii in red-cell radii)."""

    cell_r: tuple[float, float]        # cell radius
    nc: tuple[float, float]            # nucleus radius / cell radius
    wobble: float                      # irregularity of the nuclear outline
    cleft_p: float                     # probability of a cleaved (notched) nucleus
    nucleus_azure: float               # stain density of the nucleus
    chromatin_amp: float               # texture contrast: coarse clumps vs fine chromatin
    chromatin_cells: float             # texture grain: clumps across the nucleus diameter
    nucleoli: tuple[int, int]          # visible nucleoli (inclusive range)
    vacuole_p: float                   # probability of cytoplasmic vacuoles
    vacuoles: tuple[int, int]
    eccentric: float                   # nucleus offset from the cell centre (fraction of cell radius)
    cyto_azure: float                  # cytoplasm basophilia


LEUKOCYTE_TYPES: dict[str, LeukocyteType] = {
    # small mature lymphocytes / hematogones: dense dark round nucleus, thin rim
    "Benign": LeukocyteType((0.95, 1.2), (0.80, 0.88), 0.03, 0.0, 1.3, 0.40, 4.0, (0, 0), 0.0, (0, 0), 0.06, 0.60),
    # early pre-B blasts: larger, very high N:C ratio, fine chromatin
    "Early": LeukocyteType((1.35, 1.75), (0.87, 0.93), 0.05, 0.0, 0.95, 0.14, 13.0, (0, 1), 0.0, (0, 0), 0.04, 0.40),
    # pre-B blasts: more cytoplasm, eccentric nucleus, some vacuoles
    "Pre": LeukocyteType((1.4, 1.8), (0.60, 0.72), 0.06, 0.0, 1.05, 0.22, 9.0, (0, 1), 0.85, (2, 6), 0.20, 0.38),
    # pro-B blasts: large irregular or cleaved nuclei with visible nucleoli
    "Pro": LeukocyteType((1.6, 2.1), (0.74, 0.84), 0.15, 0.6, 1.0, 0.22, 9.0, (1, 3), 0.2, (1, 2), 0.10, 0.32),
}


@lru_cache(maxsize=8)
def _angles(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return t, np.arange(2, 6)[:, None] * t  # harmonics 2..5


def blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float,
         wobble: float = 0.03, cleft: float = 0.0, n: int = 32) -> np.ndarray:
    """Outline (n, 2) of a rotated ellipse with random low-order harmonics and an optional notch."""
    t, kt = _angles(n)
    amp = wobble * rng.normal(size=4) / np.arange(2, 6)
    r = 1.0 + amp @ np.cos(kt + rng.uniform(0, 2 * np.pi, (4, 1)))
    if cleft > 0:
        d = np.angle(np.exp(1j * (t - rng.uniform(0, 2 * np.pi))))
        r *= 1.0 - cleft * np.exp(-(d / 0.32) ** 2)
    a = rng.uniform(0, np.pi)
    ca, sa = np.cos(a), np.sin(a)
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    return np.column_stack([cx + x * ca - y * sa, cy + x * sa + y * ca])


def polygon_mask(shape: tuple[int, int], pts: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Anti-aliased coverage (0..1 float32) of a polygon within its clipped bounding box."""
    h, w = shape
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = np.round((pts - (x0, y0)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(m, [local], 255, cv2.LINE_AA, _SHIFT)
    return (slice(y0, y1), slice(x0, x1)), m.astype(np.float32) * (1.0 / 255.0)


def _stamp(layer: np.ndarray, pts: np.ndarray, value: float | np.ndarray = 1.0) -> None:
    got = polygon_mask(layer.shape, pts)
    if got is not None:
        sl, m = got
        layer[sl] += m * value


def draw_rbcs(layer: np.ndarray, rng: np.random.Generator, cells: list[tuple[float, float, float]],
              density: float) -> None:
    """Biconcave red cells (x, y, r) into their density layer: tilted elliptic discs with a soft central pallor.

    All cells at once on equal boxes with a one-pixel anti-aliased rim, not as polygons:
    a crowded field has 150 of them.
    """
    if not cells:
        return
    c = np.asarray(cells, np.float32)
    n = len(c)
    cx, cy, r = c[:, 0, None, None], c[:, 1, None, None], c[:, 2, None, None]
    ry = r * rng.uniform(0.86, 1.0, (n, 1, 1)).astype(np.float32)
    a = rng.uniform(0, np.pi, (n, 1, 1)).astype(np.float32)
    ox, oy = rng.normal(0, 0.06, (2, n, 1, 1)).astype(np.float32)
    dens = (density * rng.uniform(0.9, 1.1, (n, 1, 1))).astype(np.float32)
    dip = rng.uniform(0.5, 0.7, (n, 1, 1)).astype(np.float32)
    box = int(np.ceil(2 * c[:, 2].max())) + 4
    x0 = np.floor(c[:, 0] - box / 2).astype(int)
    y0 = np.floor(c[:, 1] - box / 2).astype(int)
    grid = np.arange(box, dtype=np.float32)
    dx = (x0[:, None, None] + grid[None, None, :]) - cx
    dy = (y0[:, None, None] + grid[None, :, None]) - cy
    ca, sa = np.cos(a), np.sin(a)
    u, v = (dx * ca + dy * sa) / r, (dy * ca - dx * sa) / ry
    rim = np.clip((1 - np.sqrt(u * u + v * v)) * ry + 0.5, 0, 1)
    pallor = np.clip(1 - ((u - ox) ** 2 + (v - oy) ** 2) / 0.42, 0, 1)  # parabolic dip
    stamps = rim * dens * (1 - dip * pallor)
    h, w = layer.shape
    pad = np.zeros((h + 2 * box, w + 2 * box), np.float32)
    for stamp, x, y in zip(stamps, x0 + box, y0 + box):
        if 0 <= x <= w + box and 0 <= y <= h + box:
            pad[y:y + box, x:x + box] += stamp
    layer += pad[box:box + h, box:box + w]


def _texture(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """Smooth zero-mean noise with about `cells` blobs across, for chromatin."""
    h, w = shape
    g = max(2, int(round(cells)))
    low = rng.standard_normal((g + 1, g + 1)).astype(np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)


def draw_leukocyte(eosin: np.ndarray, azure: np.ndarray, rng: np.random.Generator,
                   cx: float, cy: float, unit: float, kind: LeukocyteType, cell_r: float) -> None:
    """One leukocyte of `kind` with radius `cell_r` px: cytoplasm, textured nucleus, nucleoli, vacuoles."""
    cell = blob(rng, cx, cy, cell_r, cell_r * rng.uniform(0.88, 1.0), wobble=0.04)
    cyto = kind.cyto_azure * rng.uniform(0.8, 1.2)
    _stamp(azure, cell, cyto)
    _stamp(eosin, cell, 0.10)

    nr = cell_r * rng.uniform(*kind.nc)
    ang = rng.uniform(0, 2 * np.pi)
    off = kind.eccentric * cell_r * rng.uniform(0.5, 1.0)
    nx, ny = cx + off * np.cos(ang), cy + off * np.sin(ang)
    cleft = rng.uniform(0.25, 0.45) if rng.random() < kind.cleft_p else 0.0
    nucleus = blob(rng, nx, ny, nr, nr * rng.uniform(0.85, 1.0), wobble=kind.wobble, cleft=cleft, n=56)
    got = polygon_mask(azure.shape, nucleus)
    if got is None:
        return
    sl, m = got
    tex = 1.0 + kind.chromatin_amp * _texture(rng, m.shape, kind.chromatin_cells * m.shape[1] / (2 * nr + 3))
    dens = kind.nucleus_azure * rng.uniform(0.85, 1.15) - cyto
    azure[sl] += m * dens * tex
    eosin[sl] += m * 0.45 * dens * tex

    for _ in range(rng.integers(kind.nucleoli[0], kind.nucleoli[1] + 1)):
        d, a = rng.uniform(0, 0.5 * nr), rng.uniform(0, 2 * np.pi)
        rr = nr * rng.uniform(0.11, 0.17)
        spot = blob(rng, nx + d * np.cos(a), ny + d * np.sin(a), rr, rr * 0.85, wobble=0.1)
        _stamp(azure, spot, -0.55 * dens)
        _stamp(eosin, spot, -0.35 * dens)

    if rng.random() < kind.vacuole_p:
        for _ in range(rng.integers(kind.vacuoles[0], kind.vacuoles[1] + 1)):
            rr = cell_r * rng.uniform(0.05, 0.09)
            inner, outer = nr - off + rr, 0.92 * cell_r - rr  # cytoplasm is widest opposite the nucleus
            d = rng.uniform(inner, outer) if inner < outer else outer
            a = ang + np.pi + rng.normal(0, 0.5)
            _stamp(azure, blob(rng, cx + d * np.cos(a), cy + d * np.sin(a), rr, rr, wobble=0.05), -0.8 * cyto)


def place_leukocytes(rng: np.random.Generator, size: int, unit: float, kind: LeukocyteType,
                     n: int, spread: float = 1.0, scale: float = 1.0) -> list[tuple[float, float, float]]:
    """Centres and radii (x, y, r) of up to n non-overlapping leukocytes; the first near the centre.

    `scale` multiplies the class's radii (in red-cell radii): the looks differ in it.
    """
    cells: list[tuple[float, float, float]] = []
    for i in range(n):
        r = unit * scale * rng.uniform(*kind.cell_r)
        for _ in range(30):
            if i == 0:
                x, y = size / 2 + rng.normal(0, 0.08 * size * spread, 2)
            else:
                half = size / 2 * spread
                x, y = size / 2 + rng.uniform(-half, half, 2)
            if all((x - a) ** 2 + (y - b) ** 2 > (r + c + 0.3 * unit) ** 2 for a, b, c in cells):
                cells.append((float(x), float(y), float(r)))
                break
    return cells


def place_rbcs(rng: np.random.Generator, size: int, unit: float, count: int, avoid: list[tuple[float, float, float]],
               radius: tuple[float, float] = (0.9, 1.1), gap: float = 1.55) -> list[tuple[float, float, float]]:
    """Up to `count` red-cell centres and radii, centres no closer than `gap` radii, off the leukocytes.

    A gap under 2 lets neighbours overlap, as in a crowded smear; red cells may lie
    over a leukocyte's rim but not over its middle.
    """
    cand = rng.uniform(-0.5 * unit, size + 0.5 * unit, (max(4 * count, 8), 2))
    radii = unit * rng.uniform(*radius, len(cand))
    wbc = np.array(avoid, np.float64).reshape(-1, 3)
    if len(wbc):
        d = np.hypot(cand[:, None, 0] - wbc[None, :, 0], cand[:, None, 1] - wbc[None, :, 1])
        free = np.all(d >= wbc[None, :, 2] + 0.75 * radii[:, None], axis=1)
        cand, radii = cand[free], radii[free]
    pts = np.empty((count, 2))
    n = 0
    for (x, y), r in zip(cand, radii):
        if n >= count:
            break
        if n and np.min(np.hypot(pts[:n, 0] - x, pts[:n, 1] - y)) < gap * r:
            continue
        pts[n] = x, y
        radii[n] = r  # n <= this candidate's index: overwrites only what was read
        n += 1
    return [(float(x), float(y), float(r)) for (x, y), r in zip(pts[:n], radii[:n])]
