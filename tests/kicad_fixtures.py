"""A small KiCad-like model library written by the tests (no kicad-packages3d needed): single-row pin
headers (a body box and one pin box per pin) and an IC package, as flat VRML 2.0 files."""
from pathlib import Path

import numpy as np

BOX_QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]


def box_shape(lo, hi, material: str) -> str:
    """One VRML Shape: an axis-aligned box (6 quads, outward winding) using material ``material``."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    corners = [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    idx = ",".join(",".join(map(str, q)) + ",-1" for q in BOX_QUADS)
    pts = ",".join(" ".join(f"{c:.3f}" for c in p) for p in corners)
    return (f"Shape {{ geometry IndexedFaceSet \n{{ creaseAngle 0.50 coordIndex [{idx}]\n"
            f"coord Coordinate {{ point [{pts}]\n}}}}\nappearance Appearance{{material USE {material} }}\n}}\n")


MATERIALS = """Shape {
	appearance Appearance {material DEF BODY Material {
		diffuseColor 0.15 0.15 0.15
		}
	}
}
Shape {
	appearance Appearance {material DEF PIN Material {
		diffuseColor 0.86 0.74 0.50
		}
	}
}
"""


def header_vrml(n: int, pitch: float, rows: int = 1) -> str:
    body = box_shape((-pitch / 2, -pitch / 2, 0), (rows * pitch - pitch / 2, n * pitch - pitch / 2, pitch), "BODY")
    pins = "".join(box_shape((r * pitch - 0.3, k * pitch - 0.3, -1.5 * pitch), (r * pitch + 0.3, k * pitch + 0.3,
                                                                                   2.5 * pitch), "PIN")
                   for r in range(rows) for k in range(n))
    return "#VRML V2.0 utf8\n" + MATERIALS + body + pins


def package_vrml(n_side: int, size: float) -> str:
    body = box_shape((-size / 2, -size / 2, 0), (size / 2, size / 2, size / 4), "BODY")
    legs = "".join(box_shape((s * size / 2, -size / 2 + (k + 0.5) * size / n_side - 0.1, 0),
                             (s * size / 2 + s * 0.4, -size / 2 + (k + 0.5) * size / n_side + 0.1, 0.1), "PIN")
                   for s in (-1, 1) for k in range(n_side))
    return "#VRML V2.0 utf8\n" + MATERIALS + body + legs


def write_library(root: Path, packages: bool = True) -> Path:
    """``root/<Library>.3dshapes/*.wrl``: headers 1x02 and 1x03 at three pitches, one byte-identical
    duplicate, one file with a Transform node, headers out of every class set (1x40, 3x05), and with
    ``packages`` double-row headers 2x04 at three pitches and an SOIC-like package library (no class)."""
    hdr = root / "Connector_PinHeader_2.54mm.3dshapes"
    hdr.mkdir(parents=True, exist_ok=True)
    for n in (2, 3):
        for pitch, variant in ((1.0, "Vertical"), (2.0, "Horizontal"), (2.54, "Vertical_SMD_Pin1Left")):
            (hdr / f"PinHeader_1x{n:02d}_P{pitch:.2f}mm_{variant}.wrl").write_text(header_vrml(n, pitch))
    (hdr / "PinHeader_1x03_P2.54mm_Copy.wrl").write_text(header_vrml(3, 2.54))          # the same bytes twice
    (hdr / "PinHeader_1x02_P2.54mm_Transformed.wrl").write_text(
        "#VRML V2.0 utf8\nTransform { children [\n" + header_vrml(2, 1.5).split("\n", 1)[1] + "] }\n")
    (hdr / "PinHeader_1x40_P2.54mm_Vertical.wrl").write_text(header_vrml(40, 2.54))    # past 1x20: no class
    if packages:
        for pitch, variant in ((1.0, "Vertical"), (2.0, "Horizontal"), (2.54, "Vertical_SMD")):
            (hdr / f"PinHeader_2x04_P{pitch:.2f}mm_{variant}.wrl").write_text(header_vrml(4, pitch, rows=2))
        so = root / "Package_SO.3dshapes"
        so.mkdir(parents=True, exist_ok=True)
        for k, size in enumerate((3.0, 4.0, 5.0)):
            (so / f"SOIC-{2 * (k + 3)}_{size}mm.wrl").write_text(package_vrml(k + 3, size))
    (root / "Resistor_SMD.3dshapes").mkdir(exist_ok=True)                                  # not in a class set
    (root / "Resistor_SMD.3dshapes" / "R_0402.wrl").write_text(package_vrml(1, 1.0))
    return root
