"""Sentinel-2 Level-2A ``.SAFE`` products: band files and radiometric scaling.

Follows ESA's product specification (PSD 14.x, compact naming)::

    S2B_MSIL2A_20240824T103629_N0511_R008_T32ULA_20240824T123456.SAFE/
        MTD_MSIL2A.xml
        GRANULE/L2A_T32ULA_A038950_20240824T103629/IMG_DATA/R10m/T32ULA_20240824T103629_B04_10m.jp2
                                                          /R20m/..._B8A_20m.jp2
                                                          /R60m/..._B01_60m.jp2

Surface reflectance is ``(DN + BOA_ADD_OFFSET[band]) / BOA_QUANTIFICATION_VALUE``.
The offset (-1000 in practice) exists from processing baseline 04.00 on (products
from 25 January 2022); older products have none. A modern product whose offsets
cannot be read is refused: ignoring the offset shifts every reflectance by 0.1 and
silently corrupts indices such as NDVI.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tilewise.errors import InputError

# The 13 MSI bands in ESA's band_id order (band_id 0..12), as in Spectral_Information_List.
S2_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
RESOLUTIONS: tuple[int, ...] = (10, 20, 60)

# Processing baseline from which BOA_ADD_OFFSET is applied to L2A DNs (PSD 14.9, January 2022).
OFFSET_BASELINE: tuple[int, int] = (4, 0)

# "<tile>_<sensing>_B04_10m.jp2"; AOT, WVP, SCL and TCI files are not spectral bands and are skipped.
_BAND_FILE = re.compile(r"_(B(?:0[1-9]|1[0-2]|8A))_(10|20|60)m\.jp2$", re.IGNORECASE)
_BASELINE = re.compile(r"^(\d{2})\.(\d{2})$")
_NAME_BASELINE = re.compile(r"_N(\d{2})(\d{2})_")

_REDOWNLOAD = "the product is incomplete or damaged: download it again (and unzip the whole archive)"


@dataclass(frozen=True)
class SafeBand:
    """One band file of a SAFE product, with its scaling to surface reflectance.

    Attributes
    ----------
    path
        The band's JP2 file.
    name
        The band name, e.g. ``"B04"``.
    resolution
        Pixel size in metres: 10, 20 or 60.
    scale, offset
        ``reflectance = DN * scale + offset`` (GDAL convention); ``scale`` is
        ``1 / BOA_QUANTIFICATION_VALUE`` and ``offset`` is
        ``BOA_ADD_OFFSET / BOA_QUANTIFICATION_VALUE``.
    nodata
        The DN that marks pixels without data (the product's NODATA special value).
    """

    path: str
    name: str
    resolution: int
    scale: float
    offset: float
    nodata: float


@dataclass(frozen=True)
class SafeProduct:
    """A parsed Sentinel-2 L2A product: where its bands are and how to scale them.

    Attributes
    ----------
    path
        The ``.SAFE`` folder.
    name
        The folder name without ``.SAFE``.
    baseline
        The processing baseline, e.g. ``"05.11"``.
    quantification
        ``BOA_QUANTIFICATION_VALUE`` (10000 for every product so far).
    offsets
        Band name -> ``BOA_ADD_OFFSET`` in DN units; empty for baselines before 04.00.
    files
        Band name -> {resolution in metres: JP2 path}.
    nodata
        The NODATA special value (0 unless the metadata says otherwise).
    """

    path: str
    name: str
    baseline: str
    quantification: float
    offsets: Mapping[str, float] = field(hash=False)
    files: Mapping[str, Mapping[int, str]] = field(hash=False)
    nodata: float = 0.0

    @property
    def bands(self) -> tuple[str, ...]:
        """The band names that have at least one file, in ESA band order."""
        return tuple(b for b in S2_BANDS if b in self.files)

    def band(self, name: str, resolution: int | None = None) -> SafeBand:
        """Return one band with its scaling.

        Parameters
        ----------
        name
            A band name: ``"B04"``, ``"B4"``, ``"b8a"`` ...
        resolution
            10, 20 or 60; by default the finest resolution the product has for that band.

        Raises
        ------
        InputError
            When the product has no such band (or not at that resolution), or when
            a baseline >= 04.00 product lacks the band's BOA_ADD_OFFSET.
        """
        key = normalize_band_name(name)
        if key is None or key not in self.files:
            found = ", ".join(self.bands) or "none"
            raise InputError(
                f"SAFE folder {self.path!r} has no {name} band (found: {found})",
                "name one of the bands found; Sentinel-2 band names are B01..B12 and B8A",
            )
        by_res = self.files[key]
        if resolution is None:
            resolution = min(by_res)
        elif resolution not in by_res:
            have = ", ".join(f"{r} m" for r in sorted(by_res))
            raise InputError(
                f"SAFE folder {self.path!r} has no {key} band at {resolution} m (it has {have})", f"use one of: {have}"
            )
        if key in self.offsets:
            add = self.offsets[key]
        elif (baseline_tuple(self.baseline) or OFFSET_BASELINE) >= OFFSET_BASELINE:
            raise InputError(
                f"{str(Path(self.path) / 'MTD_MSIL2A.xml')!r} (processing baseline {self.baseline}) "
                f"has no BOA_ADD_OFFSET for {key}",
                "products from baseline 04.00 on need the per-band offset to give correct reflectance; "
                "download the product again",
            )
        else:
            add = 0.0
        q = self.quantification
        return SafeBand(
            path=by_res[resolution], name=key, resolution=resolution, scale=1.0 / q, offset=add / q, nodata=self.nodata
        )


def normalize_band_name(name: str) -> str | None:
    """Return the canonical Sentinel-2 band name (``"B4"`` -> ``"B04"``, ``"b8a"`` -> ``"B8A"``), or None."""
    s = name.strip().upper()
    m = re.fullmatch(r"B0?(\d{1,2})(A?)", s)
    if not m:
        return None
    num, a = int(m.group(1)), m.group(2)
    if a:
        return "B8A" if num == 8 else None
    return f"B{num:02d}" if 1 <= num <= 12 else None


def is_safe(path: str | Path) -> bool:
    """Tell whether ``path`` is a Sentinel-2 SAFE product folder.

    True for a directory whose name ends in ``.SAFE`` (any case) or that holds an
    ``MTD_MSIL2A.xml`` (or ``MTD_MSIL1C.xml``, so that :func:`read_safe` can say
    why a Level-1C product is refused).
    """
    p = Path(path)
    try:
        if not p.is_dir():
            return False
        return p.name.upper().endswith(".SAFE") or (p / "MTD_MSIL2A.xml").is_file() or (p / "MTD_MSIL1C.xml").is_file()
    except OSError:
        return False


def read_safe(path: str | Path) -> SafeProduct:
    """Read a Sentinel-2 L2A SAFE folder: its band files and ``MTD_MSIL2A.xml`` scaling.

    Parameters
    ----------
    path
        The product folder (``S2?_MSIL2A_*.SAFE``).

    Returns
    -------
    SafeProduct
        Band files by name and resolution, baseline, quantification, per-band offsets and nodata.

    Raises
    ------
    InputError
        When the folder is missing, is a Level-1C product, lacks its metadata,
        GRANULE folder or band images, when the metadata cannot be parsed or has
        no quantification value, or when a baseline >= 04.00 product has no
        BOA_ADD_OFFSET list. Each message names the path or value.
    """
    p = Path(path)
    shown = str(path)
    if not p.exists():
        raise InputError(
            f"SAFE folder {shown!r} does not exist", "check the path (relative paths are taken from the current directory)"
        )
    if not p.is_dir():
        hint = (
            "unzip it first and pass the .SAFE folder inside" if p.suffix.lower() == ".zip" else "pass the product's .SAFE folder"
        )
        raise InputError(f"{shown!r} is not a SAFE folder", hint)
    mtd = p / "MTD_MSIL2A.xml"
    if not mtd.is_file():
        if (p / "MTD_MSIL1C.xml").is_file() or "MSIL1C" in p.name.upper():
            raise InputError(
                f"{shown!r} is a Level-1C product (top-of-atmosphere); tilewise reads L2A (surface reflectance)",
                "process it with Sen2Cor first, or download the L2A product of the same scene",
            )
        raise InputError(
            f"SAFE folder {shown!r} has no MTD_MSIL2A.xml",
            f"name the product's top folder (the one ending in .SAFE); otherwise {_REDOWNLOAD}",
        )
    # Structure before metadata: an empty or partial download is the commonest fault.
    files = _find_band_files(p, shown)
    root = _parse(mtd)
    baseline = _read_baseline(root, p, mtd)
    quantification = _read_quantification(root, mtd)
    offsets = _read_offsets(root, mtd)
    if not offsets and (baseline_tuple(baseline) or OFFSET_BASELINE) >= OFFSET_BASELINE:
        raise InputError(
            f"{str(mtd)!r} is processing baseline {baseline} but has no BOA_ADD_OFFSET_VALUES_LIST",
            "from baseline 04.00 on, reflectance is (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE and without the offsets "
            f"reflectance and NDVI would be silently wrong; use the product's original metadata ({_REDOWNLOAD})",
        )
    name = p.name[:-5] if p.name.upper().endswith(".SAFE") else p.name
    return SafeProduct(
        path=shown,
        name=name,
        baseline=baseline,
        quantification=quantification,
        offsets=offsets,
        files=files,
        nodata=_read_nodata(root, mtd),
    )


def _find_band_files(p: Path, shown: str) -> dict[str, dict[int, str]]:
    granules = p / "GRANULE"
    if not granules.is_dir():
        raise InputError(f"SAFE folder {shown!r} has no GRANULE folder", _REDOWNLOAD)
    files: dict[str, dict[int, str]] = {}
    seen_granules: set[str] = set()
    for res in RESOLUTIONS:
        for f in sorted(granules.glob(f"*/IMG_DATA/R{res}m/*")):
            m = _BAND_FILE.search(f.name)
            if not m or int(m.group(2)) != res or not f.is_file():
                continue
            band = m.group(1).upper()
            seen_granules.add(f.parents[2].name)
            if res in files.get(band, {}):
                raise InputError(
                    f"SAFE folder {shown!r} has two {band} {res} m files: {files[band][res]!r} and {str(f)!r}",
                    "remove the stray copy",
                )
            files.setdefault(band, {})[res] = str(f)
    if len(seen_granules) > 1:
        raise InputError(
            f"SAFE folder {shown!r} holds {len(seen_granules)} granules ({', '.join(sorted(seen_granules))})",
            "tilewise reads single-tile (compact naming) products; pass one granule's band files as plain rasters instead",
        )
    if not files:
        raise InputError(
            f"SAFE folder {shown!r} has no band images "
            "(expected GRANULE/<granule>/IMG_DATA/R10m/<tile>_<time>_B04_10m.jp2 and the like)",
            _REDOWNLOAD,
        )
    return files


def _parse(mtd: Path) -> ET.Element:
    try:
        return ET.parse(mtd).getroot()
    except ET.ParseError as exc:
        raise InputError(
            f"cannot parse {str(mtd)!r} as XML ({exc})", f"the metadata file is damaged or truncated; {_REDOWNLOAD}"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {str(mtd)!r} ({exc.strerror or exc})", "check the file's permissions") from None


def _local(tag: object) -> str:
    # Real products prefix only the top levels (n1:General_Info); match local names so any prefix or none works.
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _elements(root: ET.Element, name: str) -> Iterator[ET.Element]:
    return (e for e in root.iter() if _local(e.tag) == name)


def _child_text(elem: ET.Element, name: str) -> str | None:
    for c in elem:
        if _local(c.tag) == name:
            return (c.text or "").strip()
    return None


def _first_text(root: ET.Element, *names: str) -> tuple[str, str] | None:
    for name in names:
        for e in _elements(root, name):
            return name, (e.text or "").strip()
    return None


def baseline_tuple(baseline: str) -> tuple[int, int] | None:
    """Parse a processing baseline ``"NN.NN"`` into ``(major, minor)``, or None when malformed."""
    m = _BASELINE.match(baseline)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _read_baseline(root: ET.Element, p: Path, mtd: Path) -> str:
    hit = _first_text(root, "PROCESSING_BASELINE")
    if hit is not None:
        if _BASELINE.match(hit[1]):
            return hit[1]
        raise InputError(f"{str(mtd)!r} has PROCESSING_BASELINE {hit[1]!r}, expected NN.NN (e.g. 05.11)", _REDOWNLOAD)
    m = _NAME_BASELINE.search(p.name)  # the _N0511_ part of the product name says the same
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    raise InputError(
        f"{str(mtd)!r} has no PROCESSING_BASELINE and the folder name has no _Nxxxx_ part",
        "without the baseline tilewise cannot tell whether BOA_ADD_OFFSET applies; "
        "use the product's original folder name and metadata",
    )


def _read_quantification(root: ET.Element, mtd: Path) -> float:
    # PSD 14.2+ names it BOA_QUANTIFICATION_VALUE; older Sen2Cor output L2A_BOA_QUANTIFICATION_VALUE.
    hit = _first_text(root, "BOA_QUANTIFICATION_VALUE", "L2A_BOA_QUANTIFICATION_VALUE")
    if hit is None:
        raise InputError(
            f"{str(mtd)!r} has no BOA_QUANTIFICATION_VALUE", f"this does not look like Level-2A metadata; {_REDOWNLOAD}"
        )
    tag, text = hit
    try:
        q = float(text)
    except ValueError:
        q = math.nan
    if not (math.isfinite(q) and q > 0):
        raise InputError(f"{str(mtd)!r} has {tag} {text!r}, expected a positive number (10000)", _REDOWNLOAD)
    return q


def _band_id_names(root: ET.Element) -> dict[int, str]:
    """bandId -> band name from Spectral_Information (whose physicalBand says "B4", "B8A")."""
    out: dict[int, str] = {}
    for e in _elements(root, "Spectral_Information"):
        bid, phys = e.get("bandId"), e.get("physicalBand")
        name = normalize_band_name(phys) if phys else None
        if bid is not None and bid.strip().isdigit() and name is not None:
            out[int(bid)] = name
    return out


def _read_offsets(root: ET.Element, mtd: Path) -> dict[str, float]:
    names = _band_id_names(root)
    offsets: dict[str, float] = {}
    for e in _elements(root, "BOA_ADD_OFFSET"):
        bid_text = (e.get("band_id") or "").strip()
        bid = int(bid_text) if bid_text.isdigit() else -1
        name = names.get(bid) or (S2_BANDS[bid] if 0 <= bid < len(S2_BANDS) else None)
        if name is None:
            raise InputError(f"{str(mtd)!r} has a BOA_ADD_OFFSET with band_id {bid_text!r}, expected 0..12", _REDOWNLOAD)
        try:
            value = float((e.text or "").strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise InputError(
                f"{str(mtd)!r} has BOA_ADD_OFFSET {e.text!r} for {name}, expected a number (e.g. -1000)", _REDOWNLOAD
            )
        offsets[name] = value
    return offsets


def _read_nodata(root: ET.Element, mtd: Path) -> float:
    for sv in _elements(root, "Special_Values"):
        if (_child_text(sv, "SPECIAL_VALUE_TEXT") or "").upper() == "NODATA":
            text = _child_text(sv, "SPECIAL_VALUE_INDEX") or ""
            try:
                return float(text)
            except ValueError:
                raise InputError(f"{str(mtd)!r} has NODATA special value {text!r}, expected a number", _REDOWNLOAD) from None
    return 0.0
