"""Sentinel-2 L2A SAFE reading (tilewise.sources.safe) and the generators in tilewise.synthetic."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from tilewise.errors import InputError
from tilewise.grid import Grid
from tilewise.rasterfile import open_read
from tilewise.sources.safe import S2_BANDS, is_safe, normalize_band_name, read_safe
from tilewise.synthetic import scene_dns, smooth_field, write_geotiff, write_safe

N = 256


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    return scene_dns(N, N, seed=7)


def _granule_dir(safe: Path) -> Path:
    (granule,) = (safe / "GRANULE").iterdir()
    return granule


def _fake_product(
    root: Path, mtd: str, files: dict[str, tuple[int, ...]], name: str = "S2A_MSIL2A_20200101T000000_N0400_R001_T01AAA_X.SAFE"
) -> Path:
    """A folder with a hand-written MTD_MSIL2A.xml and empty band files (read_safe opens no image)."""
    safe = root / name
    for band, resolutions in files.items():
        for res in resolutions:
            d = safe / "GRANULE" / "L2A_T01AAA_A000001_20200101T000000" / "IMG_DATA" / f"R{res}m"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"T01AAA_20200101T000000_{band}_{res}m.jp2").write_bytes(b"")
    (safe / "GRANULE").mkdir(parents=True, exist_ok=True)
    (safe / "MTD_MSIL2A.xml").write_text(mtd)
    return safe


# --------------------------------------------------------------------------- round trip


def test_round_trip_metadata(tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    red, nir = scene
    offsets = {b: -1000 - 10 * i for i, b in enumerate(S2_BANDS)}  # distinct, so a wrong band mapping shows
    safe = write_safe(tmp_path, {"B04": red, "B08": nir}, add_offsets=offsets)
    assert re.fullmatch(r"S2B_MSIL2A_20240824T103629_N0511_R008_T32ULA_20240824T\d{6}\.SAFE", safe.name)
    assert not [p for p in tmp_path.iterdir() if p != safe], "no partial folders left behind"

    product = read_safe(safe)
    assert product.name == safe.name[: -len(".SAFE")]
    assert product.baseline == "05.11"
    assert product.quantification == 10000.0
    assert product.nodata == 0.0
    assert dict(product.offsets) == {b: float(v) for b, v in offsets.items()}
    assert product.bands == ("B04", "B08")
    assert set(product.files["B04"]) == {10}

    b04 = product.band("B04")
    assert b04.name == "B04" and b04.resolution == 10 and b04.nodata == 0.0
    assert b04.path.endswith("IMG_DATA/R10m/T32ULA_20240824T103629_B04_10m.jp2") and Path(b04.path).is_file()
    assert b04.scale == pytest.approx(1e-4)
    assert b04.offset == pytest.approx(-1030 / 10000)
    assert product.band("b8").offset == pytest.approx(-1070 / 10000)  # "b8" -> B08 (band_id 7)
    # reflectance = DN * scale + offset is ESA's (DN + BOA_ADD_OFFSET) / QUANTIFICATION
    assert 2500 * b04.scale + b04.offset == pytest.approx((2500 - 1030) / 10000)


def test_jp2_is_lossless_tiled_and_georeferenced(tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    red, nir = scene
    red = red.copy()
    red[5, 5], red[6, 6] = 65535, 1  # the full uint16 range survives
    grid = Grid("EPSG:32633", Affine(10.0, 0.0, 499980.0, 0.0, -10.0, 5300040.0), N, N)
    product = read_safe(write_safe(tmp_path, {"B04": red, "B08": nir}, grid=grid, tile_id="T33UVP"))
    for band, expected in (("B04", red), ("B08", nir)):
        path = product.band(band).path
        with open_read(path) as ds:
            assert ds.driver == "JP2OpenJPEG"
            assert ds.dtypes[0] == "uint16"
            assert ds.crs.to_epsg() == 32633
            assert ds.transform.almost_equals(grid.transform)
            assert ds.block_shapes[0] == (N, N)  # one tile when smaller than 1024
            assert ds.nodata is None  # like real products: NODATA lives in the metadata only
            np.testing.assert_array_equal(ds.read(1), expected)
        assert not Path(path + ".aux.xml").exists()


def test_jp2_nodata_sidecar_on_request(tmp_path: Path) -> None:
    dns = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64)
    product = read_safe(write_safe(tmp_path, {"B04": dns}, jp2_nodata=True))
    path = product.band("B04").path
    # JPEG 2000 has no nodata field: GDAL keeps it in a PAM sidecar, which open_read does not look at
    # (GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR hides sibling files), so check the sidecar itself.
    sidecar = ET.parse(path + ".aux.xml").getroot()
    assert float(sidecar.findtext("PAMRasterBand/NoDataValue") or "nan") == 0.0
    with open_read(path) as ds:
        np.testing.assert_array_equal(ds.read(1), dns)


def test_written_metadata_is_namespaced_like_esa(tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    safe = write_safe(tmp_path, {"B04": scene[0]})
    root = ET.parse(safe / "MTD_MSIL2A.xml").getroot()
    ns = "{https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd}"
    assert root.tag == f"{ns}Level-2A_User_Product"
    chars = root.find(f"{ns}General_Info/Product_Image_Characteristics")
    assert chars is not None
    assert chars.findtext("QUANTIFICATION_VALUES_LIST/BOA_QUANTIFICATION_VALUE") == "10000"
    assert len(chars.findall("BOA_ADD_OFFSET_VALUES_LIST/BOA_ADD_OFFSET")) == 13
    specials = {sv.findtext("SPECIAL_VALUE_TEXT"): sv.findtext("SPECIAL_VALUE_INDEX") for sv in chars.findall("Special_Values")}
    assert specials == {"NODATA": "0", "SATURATED": "65535"}
    b8a = chars.find("Spectral_Information_List/Spectral_Information[@bandId='8']")
    assert b8a is not None and b8a.get("physicalBand") == "B8A"
    granule = _granule_dir(safe)
    assert re.fullmatch(r"L2A_T32ULA_A\d{6}_20240824T103629", granule.name)
    assert (granule / "MTD_TL.xml").is_file()
    # manifest.safe lists every file with a checksum that matches
    manifest = ET.parse(safe / "manifest.safe").getroot()
    entries = {loc.get("href"): cs.text for loc, cs in zip(manifest.iter("fileLocation"), manifest.iter("checksum"), strict=True)}
    jp2 = f"./GRANULE/{granule.name}/IMG_DATA/R10m/T32ULA_20240824T103629_B04_10m.jp2"
    assert entries[jp2] == hashlib.sha3_256((safe / jp2).read_bytes()).hexdigest()
    assert "./MTD_MSIL2A.xml" in entries


def test_old_baseline_has_zero_offsets(tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    red, nir = scene_dns(64, 64, seed=1, add_offset=0)
    safe = write_safe(tmp_path, {"B04": red, "B08": nir}, baseline="02.14", sensing="2019-08-20T10:30:21", tile_id="T32ULB")
    assert safe.name.startswith("S2B_MSIL2A_20190820T103021_N0214_R008_T32ULB_")
    assert "BOA_ADD_OFFSET" not in (safe / "MTD_MSIL2A.xml").read_text()
    product = read_safe(safe)
    assert product.baseline == "02.14"
    assert dict(product.offsets) == {}
    assert product.band("B04").offset == 0.0
    assert product.band("B08").scale == pytest.approx(1e-4)


def test_write_safe_refuses_to_overwrite(tmp_path: Path) -> None:
    dns = np.ones((16, 20), np.uint16)  # smaller than OpenJPEG's smallest tile (32)
    product = read_safe(write_safe(tmp_path, {"B04": dns}))
    with open_read(product.band("B04").path) as ds:
        np.testing.assert_array_equal(ds.read(1), dns)
    with pytest.raises(FileExistsError):
        write_safe(tmp_path, {"B04": dns})


# --------------------------------------------------------------------------- metadata variants


def test_spectral_information_maps_band_ids(tmp_path: Path) -> None:
    # band_id is an index into Spectral_Information, not a band number: here 0 is B08 and 1 is B04.
    mtd = """<?xml version="1.0"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info><PROCESSING_BASELINE>05.10</PROCESSING_BASELINE></Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>7</SPECIAL_VALUE_INDEX></Special_Values>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">5000</BOA_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
      <BOA_ADD_OFFSET_VALUES_LIST>
        <BOA_ADD_OFFSET band_id="0">-500</BOA_ADD_OFFSET>
        <BOA_ADD_OFFSET band_id="1">-1000</BOA_ADD_OFFSET>
      </BOA_ADD_OFFSET_VALUES_LIST>
      <Spectral_Information_List>
        <Spectral_Information bandId="0" physicalBand="B8"/>
        <Spectral_Information bandId="1" physicalBand="B4"/>
      </Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>"""
    product = read_safe(_fake_product(tmp_path, mtd, {"B04": (10,), "B08": (10,)}))
    assert dict(product.offsets) == {"B08": -500.0, "B04": -1000.0}
    assert product.quantification == 5000.0
    assert product.nodata == 7.0
    b08 = product.band("B08")
    assert (b08.scale, b08.offset, b08.nodata) == (pytest.approx(1 / 5000), pytest.approx(-0.1), 7.0)


def test_legacy_quantification_tag_and_default_band_order(tmp_path: Path) -> None:
    mtd = """<Level-2A_User_Product>
  <General_Info>
    <Product_Info><PROCESSING_BASELINE>04.00</PROCESSING_BASELINE></Product_Info>
    <L2A_Product_Image_Characteristics>
      <L2A_QUANTIFICATION_VALUES_LIST>
        <L2A_BOA_QUANTIFICATION_VALUE unit="none">10000</L2A_BOA_QUANTIFICATION_VALUE>
      </L2A_QUANTIFICATION_VALUES_LIST>
      <BOA_ADD_OFFSET_VALUES_LIST>
        <BOA_ADD_OFFSET band_id="3">-1000</BOA_ADD_OFFSET>
        <BOA_ADD_OFFSET band_id="7">-2000</BOA_ADD_OFFSET>
        <BOA_ADD_OFFSET band_id="8">-3000</BOA_ADD_OFFSET>
      </BOA_ADD_OFFSET_VALUES_LIST>
    </L2A_Product_Image_Characteristics>
  </General_Info>
</Level-2A_User_Product>"""
    product = read_safe(_fake_product(tmp_path, mtd, {"B04": (10, 20, 60), "B08": (10,), "B8A": (20, 60)}))
    assert product.quantification == 10000.0
    assert dict(product.offsets) == {"B04": -1000.0, "B08": -2000.0, "B8A": -3000.0}
    assert product.nodata == 0.0  # no Special_Values: the default
    assert product.band("B04").resolution == 10  # finest by default
    assert product.band("B04", 60).path.endswith("_B04_60m.jp2")
    assert product.band("b8a").resolution == 20
    with pytest.raises(InputError, match="no B8A band at 10 m"):
        product.band("B8A", 10)


def test_modern_baseline_without_offsets_is_refused(tmp_path: Path) -> None:
    safe = write_safe(tmp_path, {"B04": np.ones((16, 16), np.uint16)}, baseline="05.11", add_offsets={})
    with pytest.raises(InputError, match="BOA_ADD_OFFSET") as err:
        read_safe(safe)
    assert "05.11" in str(err.value) and "MTD_MSIL2A.xml" in str(err.value)
    assert err.value.hint and "wrong" in err.value.hint


def test_modern_baseline_missing_one_band_offset_is_refused(tmp_path: Path) -> None:
    dns = np.ones((16, 16), np.uint16)
    product = read_safe(write_safe(tmp_path, {"B04": dns, "B08": dns}, add_offsets={"B04": -1000}))
    assert product.band("B04").offset == pytest.approx(-0.1)
    with pytest.raises(InputError, match="no BOA_ADD_OFFSET for B08"):
        product.band("B08")


# --------------------------------------------------------------------------- errors


def test_missing_band_names_band_and_folder(tmp_path: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    safe = write_safe(tmp_path, {"B02": scene[0], "B04": scene[0]})
    product = read_safe(safe)
    with pytest.raises(InputError) as err:
        product.band("B08")
    msg = str(err.value)
    assert "B08" in msg and safe.name in msg and "found: B02, B04" in msg
    with pytest.raises(InputError, match="no XYZ band"):
        product.band("XYZ")


def test_level1c_is_refused(tmp_path: Path) -> None:
    l1c = tmp_path / "S2B_MSIL1C_20240824T103629_N0511_R008_T32ULA_20240824T112233.SAFE"
    (l1c / "GRANULE").mkdir(parents=True)
    (l1c / "MTD_MSIL1C.xml").write_text("<n1:Level-1C_User_Product xmlns:n1='x'/>")
    assert is_safe(l1c)
    with pytest.raises(InputError, match="Level-1C") as err:
        read_safe(l1c)
    assert l1c.name in str(err.value) and "L2A" in str(err.value)
    assert err.value.hint and "Sen2Cor" in err.value.hint


GOOD_MTD = "<r><PROCESSING_BASELINE>05.11</PROCESSING_BASELINE><BOA_QUANTIFICATION_VALUE>10000</BOA_QUANTIFICATION_VALUE>" \
           "<BOA_ADD_OFFSET band_id='3'>-1000</BOA_ADD_OFFSET></r>"  # fmt: skip


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing", "does not exist"),
        ("zip", "unzip"),
        ("no_mtd", "no MTD_MSIL2A.xml"),
        ("no_granule", "no GRANULE folder"),
        ("empty_granule", "B04_10m.jp2"),
        ("bad_xml", "cannot parse"),
        ("no_quantification", "no BOA_QUANTIFICATION_VALUE"),
        ("bad_quantification", "'ten thousand'"),
        ("bad_baseline", "'5.11'"),
        ("bad_band_id", "band_id '13'"),
    ],
)
def test_structure_and_metadata_errors(tmp_path: Path, case: str, needle: str) -> None:
    safe = tmp_path / "S2B_MSIL2A_20240824T103629_N0511_R008_T32ULA_20240824T123456.SAFE"
    mtd = GOOD_MTD
    if case == "zip":
        safe = tmp_path / "S2B.SAFE.zip"
        safe.write_bytes(b"PK")
    elif case != "missing":
        _fake_product(tmp_path, mtd, {} if case == "empty_granule" else {"B04": (10,)}, name=safe.name)
        if case == "no_mtd":
            (safe / "MTD_MSIL2A.xml").unlink()
        elif case == "no_granule":
            import shutil

            shutil.rmtree(safe / "GRANULE")
        elif case == "bad_xml":
            (safe / "MTD_MSIL2A.xml").write_text("<r><PROCESSING_BASELINE>05.11</r>")
        elif case == "no_quantification":
            (safe / "MTD_MSIL2A.xml").write_text("<r><PROCESSING_BASELINE>05.11</PROCESSING_BASELINE></r>")
        elif case == "bad_quantification":
            (safe / "MTD_MSIL2A.xml").write_text(mtd.replace(">10000<", ">ten thousand<"))
        elif case == "bad_baseline":
            (safe / "MTD_MSIL2A.xml").write_text(mtd.replace(">05.11<", ">5.11<"))
        elif case == "bad_band_id":
            (safe / "MTD_MSIL2A.xml").write_text(mtd.replace("band_id='3'", "band_id='13'"))
    with pytest.raises(InputError) as err:
        read_safe(safe)
    assert needle in str(err.value)
    assert safe.name in str(err.value)
    assert err.value.hint


def test_is_safe(tmp_path: Path) -> None:
    named = tmp_path / "S2A_MSIL2A_X.SAFE"
    named.mkdir()
    lower = tmp_path / "product.safe"
    lower.mkdir()
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "MTD_MSIL2A.xml").write_text("<x/>")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "MTD_TL.xml").write_text("<x/>")
    file_named_safe = tmp_path / "file.SAFE"
    file_named_safe.write_text("")
    assert is_safe(named) and is_safe(str(named)) and is_safe(lower) and is_safe(renamed)
    assert not is_safe(plain)
    assert not is_safe(file_named_safe)
    assert not is_safe(tmp_path / "missing.SAFE")


def test_normalize_band_name() -> None:
    assert [normalize_band_name(s) for s in ("B4", "b04", " B12 ", "b8a", "B8A", "B08")] == [
        "B04",
        "B04",
        "B12",
        "B8A",
        "B8A",
        "B08",
    ]
    assert [normalize_band_name(s) for s in ("B13", "B0", "B9A", "red", "4", "SCL")] == [None] * 6


# --------------------------------------------------------------------------- generators


def _ndvi(red: np.ndarray, nir: np.ndarray, add_offset: int) -> tuple[np.ndarray, np.ndarray]:
    valid = (red != 0) & (nir != 0)
    r = (red[valid].astype(np.float64) + add_offset) / 10000
    n = (nir[valid].astype(np.float64) + add_offset) / 10000
    return (n - r) / (n + r), valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scene_dns_is_plausible(seed: int) -> None:
    red, nir = scene_dns(N, N, seed=seed, add_offset=-1000, nodata_fraction=0.03)
    assert red.dtype == np.uint16 and nir.dtype == np.uint16 and red.shape == (N, N)
    assert np.array_equal(red == 0, nir == 0), "nodata is the same in both bands"
    assert (red == 0).mean() == pytest.approx(0.03, abs=0.005)
    ndvi, valid = _ndvi(red, nir, -1000)
    assert np.isfinite(ndvi).all()
    lo, med, hi = np.percentile(ndvi, [1, 50, 99])
    assert -0.45 < lo < -0.05, "water patches give negative NDVI"
    assert 0.25 < med < 0.75
    assert 0.75 < hi < 0.97
    assert 0.005 < (ndvi < 0).mean() < 0.15
    refl_red = (red[valid].astype(np.float64) - 1000) / 10000
    assert refl_red.min() > 0.0 and refl_red.max() < 0.35
    assert red[valid].min() > 1000, "with BOA_ADD_OFFSET -1000 valid reflectance >= 0 is DN > 1000"


def test_scene_dns_offset_and_nodata_fraction() -> None:
    red0, nir0 = scene_dns(128, 160, seed=3, add_offset=0)
    red1, nir1 = scene_dns(128, 160, seed=3, add_offset=-1000)
    valid = red0 != 0
    np.testing.assert_array_equal(red1[valid].astype(np.int32) - 1000, red0[valid])
    np.testing.assert_array_equal(nir1[valid].astype(np.int32) - 1000, nir0[valid])
    assert not (scene_dns(64, 64, seed=3, nodata_fraction=0.0)[0] == 0).any()
    assert (scene_dns(200, 100, seed=3, nodata_fraction=0.6)[0] == 0).mean() == pytest.approx(0.6, abs=0.01)
    np.testing.assert_array_equal(scene_dns(64, 64, seed=5)[1], scene_dns(64, 64, seed=5)[1])


def test_smooth_field_deterministic_and_smooth() -> None:
    a = smooth_field(200, 300, seed=11)
    b = smooth_field(200, 300, seed=11)
    c = smooth_field(200, 300, seed=12)
    assert a.dtype == np.float32 and a.shape == (200, 300)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() == 0.0 and a.max() == 1.0
    # Neighbouring pixels are close (smooth structure), unlike white noise (mean |diff| about 0.33 for uniform noise).
    assert np.abs(np.diff(a, axis=1)).mean() < 0.08
    assert np.abs(np.diff(smooth_field(200, 300, seed=11, noise=0.0), axis=0)).mean() < 0.02
    assert a.std() > 0.1, "structure, not a flat field"


def test_write_geotiff_round_trip(tmp_path: Path) -> None:
    data = np.arange(2 * 100 * 130, dtype=np.uint16).reshape(2, 100, 130)
    grid = Grid("EPSG:32632", Affine(20.0, 0.0, 300000.0, 0.0, -20.0, 5600000.0), 100, 130)
    path = write_geotiff(tmp_path / "x.tif", data, grid=grid, nodata=0, blocksize=64, band_names=["B04", "B08"])
    with open_read(str(path)) as ds:
        assert ds.count == 2 and ds.nodata == 0 and ds.descriptions == ("B04", "B08")
        assert ds.block_shapes[0] == (64, 64)
        assert ds.transform.almost_equals(grid.transform)
        np.testing.assert_array_equal(ds.read(), data)
    single = write_geotiff(tmp_path / "y.tif", data[0].astype(np.float32), blocksize=None, compress=None)
    with open_read(str(single)) as ds:
        assert ds.count == 1 and ds.res == (10.0, 10.0)
        np.testing.assert_array_equal(ds.read(1), data[0].astype(np.float32))
