"""Realistic generated inputs: smooth fields, Sentinel-2 red/NIR scenes, SAFE products, GeoTIFFs.

Used by ``make demo``, the tests and the benchmarks. Everything is deterministic
for a seed; the generators use plain numpy (no scipy) and are fast enough for
4096 x 4096 scenes.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from affine import Affine

from tilewise.grid import Grid
from tilewise.rasterfile import open_write
from tilewise.sources.safe import OFFSET_BASELINE, S2_BANDS, baseline_tuple, normalize_band_name

# ESA's namespaces of the L2A product and tile metadata (PSD 14.x).
PSD_PRODUCT_NS = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"
PSD_TILE_NS = "https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd"
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

# Native resolution (m) and central wavelength (nm, Sentinel-2B) per band, in band_id order.
_BAND_RES = (60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 60, 20, 20)
_BAND_NM = (442.2, 492.1, 559.0, 664.9, 703.8, 739.1, 779.7, 832.9, 864.0, 943.2, 1376.9, 1610.4, 2185.7)

DEFAULT_ORIGIN = (300000.0, 5600000.0)  # UTM 32N, EPSG:32632
DEFAULT_CRS = "EPSG:32632"


def default_grid(height: int, width: int, res: float = 10.0) -> Grid:
    """The grid generated data lies on by default: UTM zone 32N, ``res`` m pixels, origin (300000, 5600000)."""
    return Grid(DEFAULT_CRS, Affine(res, 0.0, DEFAULT_ORIGIN[0], 0.0, -res, DEFAULT_ORIGIN[1]), height, width)


# --------------------------------------------------------------------------- fields and scenes


def _bspline_upsample_rows(coarse: np.ndarray, n_out: int, step: float) -> np.ndarray:
    """Cubic B-spline interpolation along axis 0 from control points ``step`` output pixels apart.

    A 4-tap gather per output row rather than a matrix product: elementwise float
    operations give the same bits on every machine, a BLAS product need not.
    """
    t = np.arange(n_out, dtype=np.float64) / step + 1.0  # control point 0 lies one step before pixel 0
    base = np.floor(t).astype(np.intp)
    f = (t - base).astype(np.float32)[:, None]
    f2, f3 = f * f, f * f * f
    weights = ((1 - f) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6)
    out = coarse[base - 1] * weights[0]
    for k in (1, 2, 3):
        tmp = coarse[base + k - 1]
        tmp *= weights[k]
        out += tmp
    return out


def smooth_field(height: int, width: int, seed: int, scale: float = 64.0, noise: float = 0.05) -> np.ndarray:
    """A smooth random field with some pixel noise, like land cover or terrain.

    Two octaves of random control points (``scale`` and ``scale / 4`` pixels
    apart) are upsampled with cubic B-splines, white noise of relative strength
    ``noise`` is added and the result is stretched to [0, 1].

    Parameters
    ----------
    height, width
        The shape in pixels.
    seed
        The random seed; the same seed gives the same field.
    scale
        The size of the main structures in pixels.
    noise
        The standard deviation of the pixel noise relative to the structure's range.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (height, width) with values in [0, 1].
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"smooth_field needs a positive shape, got {height}x{width}")
    if not scale > 0 or noise < 0:
        raise ValueError(f"smooth_field needs scale > 0 and noise >= 0, got scale={scale} noise={noise}")
    rng = np.random.default_rng(seed)
    field = np.zeros((height, width), np.float32)
    for step, amplitude in ((float(scale), 1.0), (max(float(scale) / 4.0, 1.0), 0.3)):
        ny, nx = math.ceil((height - 1) / step) + 4, math.ceil((width - 1) / step) + 4
        coarse = rng.standard_normal((ny, nx), dtype=np.float32)
        along_x = _bspline_upsample_rows(coarse.T, width, step).T  # (ny, width), small
        part = _bspline_upsample_rows(np.ascontiguousarray(along_x), height, step)
        part *= np.float32(amplitude)
        field += part
    lo, hi = float(field.min()), float(field.max())
    field -= np.float32(lo)
    field *= np.float32(1.0 / (hi - lo) if hi > lo else 0.0)
    if noise > 0:
        field += rng.standard_normal((height, width), dtype=np.float32) * np.float32(noise)
        lo, hi = float(field.min()), float(field.max())
        field -= np.float32(lo)
        field *= np.float32(1.0 / (hi - lo) if hi > lo else 0.0)
    np.clip(field, 0.0, 1.0, out=field)  # float rounding of the stretch can leave 1 + 1 ulp
    return field


def _corner_mask(height: int, width: int, fraction: float, corner: int) -> np.ndarray:
    """A triangle cut off one corner covering ``fraction`` of the image, like a swath edge."""
    # Area of {u + v < t} in the unit square: t^2 / 2 up to t = 1, then 1 - (2 - t)^2 / 2.
    t = math.sqrt(2 * fraction) if fraction <= 0.5 else 2 - math.sqrt(2 * (1 - fraction))
    u = (np.arange(width, dtype=np.float32) + 0.5) / width
    v = (np.arange(height, dtype=np.float32) + 0.5) / height
    if corner & 1:
        u = 1 - u
    if corner & 2:
        v = 1 - v
    return (v[:, None] + u[None, :]) < t


def scene_dns(
    height: int, width: int, seed: int, add_offset: int = -1000, nodata_fraction: float = 0.03
) -> tuple[np.ndarray, np.ndarray]:
    """Red (B04) and NIR (B08) digital numbers of a plausible vegetated Sentinel-2 L2A scene.

    Fields from bare soil to dense crops (NDVI about 0.1 to 0.9), soil brightness
    variations, water patches (NDVI about -0.2) with mixed shore pixels, a few
    percent of sensor noise, and a nodata triangle (DN 0) cut off one corner like
    the edge of the satellite's swath.

    Parameters
    ----------
    height, width
        The shape in pixels.
    seed
        The random seed; the same seed gives the same scene.
    add_offset
        The product's BOA_ADD_OFFSET: DN = reflectance * 10000 - add_offset
        (-1000 for baseline >= 04.00, 0 before).
    nodata_fraction
        The share of pixels in the nodata corner (0 for none).

    Returns
    -------
    tuple of numpy.ndarray
        ``(red, nir)`` uint16 arrays; valid DNs are 1..65534, nodata is 0 in both.
    """
    if not 0 <= nodata_fraction < 1:
        raise ValueError(f"nodata_fraction must be in [0, 1), got {nodata_fraction}")
    rng = np.random.default_rng(seed)
    s_veg, s_soil, s_water, s_noise = (int(s) for s in rng.integers(0, 2**31 - 1, size=4))
    veg = smooth_field(height, width, s_veg, scale=40.0, noise=0.03)
    # Stretch so that some fields are bare soil (v = 0) and some fully green (v = 1).
    np.clip((veg - 0.25) / 0.6, 0.0, 1.0, out=veg)
    soil = smooth_field(height, width, s_soil, scale=96.0, noise=0.02)
    soil_red = 0.14 + 0.10 * soil
    red = soil_red + (0.025 - soil_red) * veg
    nir = (1.3 * soil_red + 0.02) + (0.45 - (1.3 * soil_red + 0.02)) * veg
    del soil, soil_red
    # Water: the top 6 % of a coarse field, with a soft shore so edge pixels mix.
    water_field = smooth_field(height, width, s_water, scale=128.0, noise=0.0)
    threshold = float(np.quantile(water_field[::4, ::4], 0.94))
    water = np.clip((water_field - threshold) / 0.03, 0.0, 1.0)
    del water_field
    red += (np.float32(0.035) - red) * water
    nir += (np.float32(0.022) - nir) * water
    del water
    noise_rng = np.random.default_rng(s_noise)
    red *= 1 + noise_rng.standard_normal((height, width), dtype=np.float32) * np.float32(0.03)
    nir *= 1 + noise_rng.standard_normal((height, width), dtype=np.float32) * np.float32(0.03)
    out = []
    for refl in (red, nir):
        dn = np.rint(refl * 10000.0)
        dn -= add_offset  # after rounding, so scenes with different offsets differ by exactly the offset
        np.clip(dn, 1, 65534, out=dn)  # 0 is NODATA and 65535 SATURATED in L2A products
        out.append(dn.astype(np.uint16))
    if nodata_fraction > 0:
        mask = _corner_mask(height, width, nodata_fraction, corner=int(rng.integers(0, 4)))
        for dn in out:
            dn[mask] = 0
    return out[0], out[1]


# --------------------------------------------------------------------------- SAFE products


def _baseline_tuple(baseline: str) -> tuple[int, int]:
    parsed = baseline_tuple(baseline) if re.fullmatch(r"\d{2}\.\d{2}", baseline) else None
    if parsed is None:
        raise ValueError(f"baseline must look like '05.11', got {baseline!r}")
    return parsed


def _sensing_time(sensing: datetime | str) -> datetime:
    t = datetime.fromisoformat(sensing) if isinstance(sensing, str) else sensing
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t.replace(microsecond=0)


def _as_uint16(name: str, arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise ValueError(f"band {name} must be a 2-D array, got shape {a.shape}")
    if a.dtype == np.uint16:
        return a
    if a.dtype.kind not in "iu":
        raise ValueError(f"band {name} must hold integer DNs (uint16), got {a.dtype}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
        raise ValueError(f"band {name} has DNs outside 0..65535")
    return a.astype(np.uint16)


def _write_jp2(path: Path, dns: np.ndarray, grid: Grid, with_nodata: bool) -> None:
    h, w = dns.shape
    # Real products use 1024 x 1024 JPEG 2000 tiles; a small image is one tile (OpenJPEG refuses tiles under 32).
    profile: dict[str, Any] = {
        "driver": "JP2OpenJPEG", "width": w, "height": h, "count": 1, "dtype": "uint16",
        "crs": grid.crs, "transform": grid.transform, "nodata": 0 if with_nodata else None,
        "QUALITY": "100", "REVERSIBLE": "YES", "BLOCKXSIZE": str(max(32, min(1024, w))), "BLOCKYSIZE": str(max(32, min(1024, h))),
    }  # fmt: skip
    with open_write(path, **profile) as ds:
        ds.write(dns, 1)


def _crs_code_and_name(crs: str | None) -> tuple[str, str]:
    """HORIZONTAL_CS_CODE and _NAME as ESA writes them ("EPSG:32632", "WGS84 / UTM zone 32N")."""
    if crs is None:
        return "none", "none"
    from rasterio.crs import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    if epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        return f"EPSG:{epsg}", f"WGS84 / UTM zone {epsg % 100}{'N' if epsg < 32700 else 'S'}"
    m = re.match(r'\w+\["([^"]*)"', c.to_wkt())
    return (f"EPSG:{epsg}" if epsg else "none"), (m.group(1) if m else "unknown")


def _product_mtd(
    *,
    name: str,
    baseline: str,
    sensing: datetime,
    generation: datetime,
    quantification: int,
    offsets: Mapping[str, int],
    datastrip_id: str,
    granule_id: str,
    image_files: Sequence[str],
) -> str:
    t_start = sensing.strftime("%Y-%m-%dT%H:%M:%S.024Z")
    t_stop = (sensing + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.024Z")
    images = "\n".join(f"            <IMAGE_FILE>{escape(f)}</IMAGE_FILE>" for f in image_files)
    offset_list = ""
    if offsets:
        rows = "\n".join(
            f'        <BOA_ADD_OFFSET band_id="{S2_BANDS.index(b)}">{int(v)}</BOA_ADD_OFFSET>'
            for b, v in sorted(offsets.items(), key=lambda kv: S2_BANDS.index(kv[0]))
        )
        offset_list = f"      <BOA_ADD_OFFSET_VALUES_LIST>\n{rows}\n      </BOA_ADD_OFFSET_VALUES_LIST>\n"
    spectral = "\n".join(
        f'        <Spectral_Information bandId="{i}" physicalBand="{_physical(b)}">\n'
        f"          <RESOLUTION>{_BAND_RES[i]}</RESOLUTION>\n"
        f'          <Wavelength>\n            <CENTRAL unit="nm">{_BAND_NM[i]}</CENTRAL>\n          </Wavelength>\n'
        f"        </Spectral_Information>"
        for i, b in enumerate(S2_BANDS)
    )
    datatake = f"GS2B_{sensing:%Y%m%dT%H%M%S}_{_absolute_orbit(sensing):06d}_N{baseline}"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_User_Product xmlns:n1="{PSD_PRODUCT_NS}" xmlns:xsi="{_XSI_NS}" xsi:schemaLocation="{PSD_PRODUCT_NS}">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{t_start}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{t_stop}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{escape(name)}</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <PRODUCT_DOI>https://doi.org/10.5270/S2_-znk9xsj</PRODUCT_DOI>
      <GENERATION_TIME>{generation:%Y-%m-%dT%H:%M:%S}.000000Z</GENERATION_TIME>
      <PREVIEW_IMAGE_URL>Not applicable</PREVIEW_IMAGE_URL>
      <PREVIEW_GEO_INFO>Not applicable</PREVIEW_GEO_INFO>
      <Datatake datatakeIdentifier={quoteattr(datatake)}>
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{t_start}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>8</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier={quoteattr(datastrip_id)} granuleIdentifier={quoteattr(granule_id)} imageFormat="JPEG2000">
{images}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Image_Display_Order>
        <RED_CHANNEL>3</RED_CHANNEL>
        <GREEN_CHANNEL>2</GREEN_CHANNEL>
        <BLUE_CHANNEL>1</BLUE_CHANNEL>
      </Image_Display_Order>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">{int(quantification)}</BOA_QUANTIFICATION_VALUE>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
{offset_list}      <Spectral_Information_List>
{spectral}
      </Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""


def _physical(band: str) -> str:
    """ESA writes physicalBand without the zero: "B4", "B8A"."""
    return "B8A" if band == "B8A" else f"B{int(band[1:])}"


def _absolute_orbit(sensing: datetime) -> int:
    # Sentinel-2B: launched 2017-03-07, 14 + 3/10 orbits a day; close enough for a name.
    return max(1, int((sensing - datetime(2017, 3, 7)).total_seconds() / 86400 * 14.3) + 1)


def _tile_mtd(*, grid: Grid, resolution: int, sensing: datetime, granule_id: str, datastrip_id: str) -> str:
    code, cs_name = _crs_code_and_name(grid.crs)
    t = grid.transform
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_Tile_ID xmlns:n1="{PSD_TILE_NS}" xmlns:xsi="{_XSI_NS}" xsi:schemaLocation="{PSD_TILE_NS}">
  <n1:General_Info>
    <TILE_ID>{escape(granule_id)}</TILE_ID>
    <DATASTRIP_ID>{escape(datastrip_id)}</DATASTRIP_ID>
    <SENSING_TIME>{sensing:%Y-%m-%dT%H:%M:%S}.024Z</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding>
      <HORIZONTAL_CS_NAME>{escape(cs_name)}</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>{code}</HORIZONTAL_CS_CODE>
      <Size resolution="{resolution}">
        <NROWS>{grid.height}</NROWS>
        <NCOLS>{grid.width}</NCOLS>
      </Size>
      <Geoposition resolution="{resolution}">
        <ULX>{_num(t.c)}</ULX>
        <ULY>{_num(t.f)}</ULY>
        <XDIM>{_num(t.a)}</XDIM>
        <YDIM>{_num(t.e)}</YDIM>
      </Geoposition>
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:Level-2A_Tile_ID>
"""


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _manifest(root: Path, checksum: str) -> str:
    objects = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        digest = hashlib.new("sha3_256" if checksum == "SHA3-256" else "md5", f.read_bytes()).hexdigest()
        ident = re.sub(r"\W", "_", rel)
        objects.append(
            f'    <dataObject ID="{ident}">\n'
            f'      <byteStream mimeType="application/octet-stream" size="{f.stat().st_size}">\n'
            f'        <fileLocation locatorType="URL" href={quoteattr("./" + rel)}/>\n'
            f'        <checksum checksumName="{checksum}">{digest}</checksum>\n'
            f"      </byteStream>\n    </dataObject>"
        )
    body = "\n".join(objects)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" xmlns:safe="http://www.esa.int/safe/sentinel/1.1"
  version="esa/safe/sentinel/1.1/sentinel-2/msi/archive_l2a_user_product">
  <informationPackageMap>
    <xfdu:contentUnit unitType="Product_Level-2A" textInfo="SENTINEL-2 MSI Level-2A User Product"/>
  </informationPackageMap>
  <dataObjectSection>
{body}
  </dataObjectSection>
</xfdu:XFDU>
"""


def write_safe(
    dest_dir: str | Path,
    bands: Mapping[str, np.ndarray],
    *,
    grid: Grid | None = None,
    baseline: str = "05.11",
    add_offsets: Mapping[str, int] | None = None,
    quantification: int = 10000,
    sensing: datetime | str = "2024-08-24T10:36:29",
    tile_id: str = "T32ULA",
    resolution: int = 10,
    jp2_nodata: bool = False,
) -> Path:
    """Write a structurally faithful Sentinel-2 L2A ``.SAFE`` product.

    The product holds ``MTD_MSIL2A.xml`` (namespaced as ESA's, with baseline,
    NODATA/SATURATED special values, BOA_QUANTIFICATION_VALUE, BOA_ADD_OFFSET
    list and Spectral_Information), ``manifest.safe``, and one granule with
    ``MTD_TL.xml`` and the band images as lossless, tiled uint16 JPEG 2000 in
    ``IMG_DATA/R<resolution>m``. It is written under a temporary name and renamed,
    so a half-written product never looks complete.

    Parameters
    ----------
    dest_dir
        The folder to create the product in (created when missing).
    bands
        Band name (``"B04"``, ``"B08"`` ...) -> 2-D integer DN array; all the same shape.
    grid
        The bands' grid; default: UTM 32N (EPSG:32632), ``resolution`` m pixels, origin (300000, 5600000).
    baseline
        The processing baseline, ``"NN.NN"``; it appears in the name as ``_NNNNN_``.
    add_offsets
        Band name -> BOA_ADD_OFFSET written to the metadata, exactly as given (an empty
        mapping writes no offset list). None: -1000 for all 13 bands when the
        baseline is 04.00 or later, no list before.
    quantification
        BOA_QUANTIFICATION_VALUE.
    sensing
        The sensing start time (naive = UTC), used in the product, granule and file names.
    tile_id
        The MGRS tile, e.g. ``"T32ULA"``.
    resolution
        The resolution folder and file-name suffix (10, 20 or 60).
    jp2_nodata
        Also record nodata 0 in each JP2. JPEG 2000 has no nodata field, so GDAL
        writes a ``.aux.xml`` sidecar; real products have none (their NODATA value
        is only in the metadata), hence off by default.

    Returns
    -------
    pathlib.Path
        The ``.SAFE`` folder, e.g. ``S2B_MSIL2A_20240824T103629_N0511_R008_T32ULA_20240824T123456.SAFE``.
    """
    if resolution not in (10, 20, 60):
        raise ValueError(f"resolution must be 10, 20 or 60, got {resolution}")
    base_t = _baseline_tuple(baseline)
    if not re.fullmatch(r"T?\d{2}[A-Z]{3}", tile_id):
        raise ValueError(f"tile_id must be an MGRS tile like 'T32ULA', got {tile_id!r}")
    tile = tile_id if tile_id.startswith("T") else "T" + tile_id
    if not bands:
        raise ValueError("write_safe needs at least one band")
    arrays: dict[str, np.ndarray] = {}
    for key, arr in bands.items():
        name = normalize_band_name(key)
        if name is None:
            raise ValueError(f"{key!r} is not a Sentinel-2 band name (B01..B12, B8A)")
        arrays[name] = _as_uint16(name, arr)
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"all bands must have the same shape, got {sorted(shapes)}")
    height, width = shapes.pop()
    if grid is None:
        grid = default_grid(height, width, float(resolution))
    elif grid.shape != (height, width):
        raise ValueError(f"grid is {grid.height}x{grid.width} but the bands are {height}x{width}")
    if add_offsets is None:
        offsets = dict.fromkeys(S2_BANDS, -1000) if base_t >= OFFSET_BASELINE else {}
    else:
        offsets = {}
        for key, value in add_offsets.items():
            name = normalize_band_name(key)
            if name is None:
                raise ValueError(f"add_offsets names {key!r}, not a Sentinel-2 band")
            offsets[name] = int(value)

    t = _sensing_time(sensing)
    generation = t + timedelta(hours=1, minutes=58, seconds=27)
    stamp, gen_stamp, nbase = f"{t:%Y%m%dT%H%M%S}", f"{generation:%Y%m%dT%H%M%S}", baseline.replace(".", "")
    name = f"S2B_MSIL2A_{stamp}_N{nbase}_R008_{tile}_{gen_stamp}.SAFE"
    orbit = _absolute_orbit(t)
    granule = f"L2A_{tile}_A{orbit:06d}_{stamp}"
    datastrip_id = f"S2B_OPER_MSI_L2A_DS_2BPS_{gen_stamp}_S{stamp}_N{baseline}"
    granule_id = f"S2B_OPER_MSI_L2A_TL_2BPS_{gen_stamp}_A{orbit:06d}_{tile}_N{baseline}"

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / name
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    tmp = dest / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        img_dir = tmp / "GRANULE" / granule / "IMG_DATA" / f"R{resolution}m"
        img_dir.mkdir(parents=True)
        for sub in ("AUX_DATA", "QI_DATA"):
            (tmp / "GRANULE" / granule / sub).mkdir()
        for sub in ("AUX_DATA", "DATASTRIP", "HTML", "rep_info"):
            (tmp / sub).mkdir()
        image_files = []
        for band in sorted(arrays, key=S2_BANDS.index):
            stem = f"{tile}_{stamp}_{band}_{resolution}m"
            _write_jp2(img_dir / f"{stem}.jp2", arrays[band], grid, jp2_nodata)
            image_files.append(f"GRANULE/{granule}/IMG_DATA/R{resolution}m/{stem}")  # ESA lists them without ".jp2"
        (tmp / "GRANULE" / granule / "MTD_TL.xml").write_text(
            _tile_mtd(grid=grid, resolution=resolution, sensing=t, granule_id=granule_id, datastrip_id=datastrip_id),
            encoding="utf-8",
        )
        mtd = _product_mtd(
            name=name,
            baseline=baseline,
            sensing=t,
            generation=generation,
            quantification=quantification,
            offsets=offsets,
            datastrip_id=datastrip_id,
            granule_id=granule_id,
            image_files=image_files,
        )
        (tmp / "MTD_MSIL2A.xml").write_text(mtd, encoding="utf-8")
        # Baseline 04.00+ manifests carry SHA3-256 checksums, older ones MD5.
        manifest = _manifest(tmp, "SHA3-256" if base_t >= OFFSET_BASELINE else "MD5")
        (tmp / "manifest.safe").write_text(manifest, encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --------------------------------------------------------------------------- GeoTIFF


def write_geotiff(
    path: str | Path,
    arrays: np.ndarray,
    grid: Grid | None = None,
    nodata: float | None = None,
    blocksize: int | None = 512,
    compress: str | None = "deflate",
    band_names: Sequence[str] | None = None,
) -> Path:
    """Write a (bands, h, w) or (h, w) array as a tiled GeoTIFF, one row of blocks at a time.

    Parameters
    ----------
    path
        The file to create.
    arrays
        The pixels; written as they are (no whole-array copy or type conversion).
    grid
        The grid; default: UTM 32N with 10 m pixels at origin (300000, 5600000).
    nodata
        The nodata value to record, or None.
    blocksize
        Tile edge in pixels (a multiple of 16), or None for a striped file.
    compress
        A GDAL GTiff compression ("deflate", "lzw", "zstd" ...) or None; deflate,
        lzw and zstd get the horizontal (integers) or floating-point predictor.
    band_names
        Band descriptions, one per band.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    arr = arrays if arrays.ndim == 3 else arrays[np.newaxis]
    if arr.ndim != 3:
        raise ValueError(f"write_geotiff needs a (h, w) or (bands, h, w) array, got shape {arrays.shape}")
    count, height, width = arr.shape
    if grid is None:
        grid = default_grid(height, width)
    elif grid.shape != (height, width):
        raise ValueError(f"grid is {grid.height}x{grid.width} but the array is {height}x{width}")
    if band_names is not None and len(band_names) != count:
        raise ValueError(f"{len(band_names)} band names for {count} bands")
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": arr.dtype.name,
        "crs": grid.crs, "transform": grid.transform, "nodata": nodata, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    if blocksize:
        if blocksize % 16:
            raise ValueError(f"GeoTIFF tiles must be a multiple of 16 pixels, got {blocksize}")
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if compress and compress.lower() != "none":
        profile["compress"] = compress
        if compress.lower() in ("deflate", "lzw", "zstd"):
            profile["predictor"] = 3 if arr.dtype.kind == "f" else 2
    # Rows of blocks: the writer only copies one slab at a time, never the whole raster.
    step = blocksize or max(1, min(height, (16 << 20) // max(1, width * count * arr.dtype.itemsize)))
    from rasterio.windows import Window as RioWindow

    with open_write(path, **profile) as ds:
        for r0 in range(0, height, step):
            r1 = min(height, r0 + step)
            ds.write(arr[:, r0:r1, :], window=RioWindow(0, r0, width, r1 - r0))
        for i, d in enumerate(band_names or [], start=1):
            ds.set_band_description(i, d)
    return Path(path)
