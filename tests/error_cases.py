# ruff: noqa: E501  (the catalogue is a table: one case per line reads best)
"""The bad-input catalogue: every user error the CLI gives, as data, and the generator of docs/errors.md.

Each :class:`Case` is one mistake a user can make: the command line (fixture files
are named ``$D/NAME``), what the user did, and a regular expression the one
``Error: ...`` line must match. :func:`build_fixtures` writes the small inputs the
cases need; :func:`run_case` runs one case through the real entry point
(:func:`tilewise.cli.main.main`, or a subprocess) and records what it printed and
what it left on disk. ``tests/test_errors.py`` checks every case; this module's
``--write`` renders docs/errors.md from the cases and the messages actually printed:

    .venv/bin/python -m tests.error_cases --write     # regenerate docs/errors.md
    .venv/bin/python -m tests.error_cases             # print every case's message
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
REGENERATE = ".venv/bin/python -m tests.error_cases --write"

D = "$D/"
"""Placeholder for the fixture directory in a case's argv and files."""


@dataclass(frozen=True)
class Case:
    """One user error.

    Attributes
    ----------
    id
        A short stable name (the row's id in docs/errors.md).
    category
        One of :data:`CATEGORIES`.
    argv
        The arguments after ``tilewise``; ``$D/`` stands for the fixture directory.
    cause
        What the user did, in words.
    expect
        A regular expression searched in the message (the text after ``Error: ``);
        it should contain the offending value.
    code
        The expected exit status (2 bad usage or input, 1 a run that started and failed).
    files
        Extra files the case needs: name relative to ``$D/`` -> text (``$D/`` replaced too).
    leaves
        Glob patterns (relative to ``$D/``) of paths the error may leave behind, for
        errors raised after work started (a work directory to resume from).
    subprocess
        Run through ``python -m tilewise.cli.main`` in a child process instead of in-process.
    """

    id: str
    category: str
    argv: tuple[str, ...]
    cause: str
    expect: str
    code: int = 2
    files: Mapping[str, str] = field(default_factory=dict)
    leaves: tuple[str, ...] = ()
    subprocess: bool = False

    @property
    def command(self) -> str:
        """The subcommand the case runs (``ndvi``, ``run`` ...), or ``tilewise`` for none."""
        args = [a for a in self.argv if a not in ("-q", "-v")]
        return args[0] if args and not args[0].startswith("-") else "tilewise"


CATEGORIES: dict[str, str] = {
    "usage": "Command-line usage",
    "paths": "Paths: missing files, empty folders, globs, list files",
    "formats": "Formats: files that are not rasters, damaged products",
    "bands": "Bands: indices, names, Sentinel-2 SAFE bands",
    "grids": "CRS and grid mismatches, --align",
    "expressions": "Expressions (tilewise calc)",
    "windows": "Focal windows and map sheets (tilewise focal)",
    "split-merge": "split and merge",
    "outputs": "Output options and output paths",
    "executors": "Executors, workers, retries",
    "dates": "Time stacks: date patterns, dates, selections (tilewise reduce / stats)",
    "vectors": "Polygons and tile matrix sets (tilewise rasterize)",
    "job-files": "Job files (tilewise run)",
    "remote": "Remote inputs and outputs: URLs, S3, --cache",
    "state": "Saved jobs (tilewise resume / status)",
    "runs": "Runs that started and failed",
}


def _c(id: str, category: str, argv: str | tuple[str, ...], cause: str, expect: str, **kw: object) -> Case:
    args = tuple(shlex.split(argv)) if isinstance(argv, str) else argv
    return Case(id, category, args, cause, expect, **kw)  # type: ignore[arg-type]


OUT = f"-o {D}OUT.tif"
_LAUGHS = (
    "command: ndvi\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
    + "inputs: *l8\n"
)
CALC = f"calc 'a + 1' -i a={D}ONE.tif {OUT}"

# fmt: off
CASES: tuple[Case, ...] = (
    # ------------------------------------------------------------------ usage (click)
    _c("unknown-command", "usage", "ndwi x.tif", "a subcommand that does not exist", r"No such command 'ndwi'"),
    _c("missing-output", "usage", f"ndvi {D}IN.tif --red 1 --nir 2", "left out the required -o", r"Missing option '-o'"),
    _c("unknown-flag", "usage", f"ndvi {D}IN.tif --bogus {OUT}", "an option the command does not have", r"No such option '--bogus'"),
    _c("not-an-integer", "usage", f"{CALC} --workers two", "a word where a number is needed", r"'two' is not a valid integer"),
    _c("missing-expression", "usage", "calc", "calc without its expression", r"Missing argument 'EXPRESSION'"),
    _c("no-inputs", "usage", f"ndvi {OUT}", "no input at all", r"no inputs given"),
    _c("input-and-band-files", "usage", f"ndvi {D}IN.tif --red {D}ONE.tif --nir {D}ONE.tif {OUT}",
       "both an INPUT and separate --red/--nir files", r"either an INPUT or separate band files"),
    _c("index-with-path", "usage", f"normdiff {D}IN.tif --index ../x --a 2 --b 1 -o {D}OUTDIR/", "an index name holding a path (it names the output files)",
       r"index name '\.\./x' is not a plain name"),
    _c("unknown-index", "usage", f"normdiff {D}IN.tif --index nbx {OUT}", "an index name tilewise does not know, without --a/--b", r"unknown index 'nbx'"),
    # ------------------------------------------------------------------ paths
    _c("missing-input", "paths", f"ndvi {D}missing.tif --red 1 --nir 2 {OUT}", "an input path that does not exist", r"input '.*missing\.tif' does not exist",
       subprocess=True),
    _c("empty-directory", "paths", f"ndvi {D}EMPTY -o {D}OUTDIR/", "a folder with no rasters or .SAFE products in it", r"directory '.*EMPTY' holds no rasters"),
    _c("glob-no-match", "paths", f"ndvi '{D}*.jp2' -o {D}OUTDIR/", "a glob that matches nothing", r"pattern '.*\*\.jp2' matches no files"),
    _c("list-file-missing", "paths", f"ndvi --from-list {D}list.txt -o {D}OUTDIR/", "--from-list names a file that does not exist", r"list file '.*list\.txt' does not exist"),
    _c("list-file-not-text", "paths", f"ndvi --from-list {D}ONE.tif -o {D}OUTDIR/", "--from-list names a raster instead of a text file", r"cannot read list file '.*ONE\.tif' \(it is not UTF-8 text\)"),
    _c("list-entry-missing", "paths", f"ndvi --from-list {D}LIST.txt --red 1 --nir 2 -o {D}OUTDIR/", "the list file names a raster that does not exist",
       r"input '.*gone\.tif' does not exist", files={"LIST.txt": "# scenes\nIN.tif\ngone.tif\n"}),
    _c("input-is-directory", "paths", f"calc 'a + 1' -i a={D}EMPTY {OUT}", "a folder where a raster file is needed", r"input '.*EMPTY' is a directory"),
    _c("focal-missing-input", "paths", f"focal {D}missing.tif --size 3 {OUT}", "focal on a path that does not exist", r"input '.*missing\.tif' does not exist"),
    _c("info-missing", "paths", f"info {D}missing.tif", "info on a path that does not exist", r"input '.*missing\.tif' does not exist"),
    _c("quicklook-missing", "paths", f"quicklook {D}missing.tif -o {D}OUT.png", "quicklook of a path that does not exist", r"input '.*missing\.tif' does not exist"),
    _c("output-dir-missing", "paths", f"calc 'a + 1' -i a={D}ONE.tif -o {D}no/such/OUT.tif", "-o in a folder that does not exist",
       r"output directory '.*no/such' does not exist"),
    _c("output-under-file", "paths", f"calc 'a + 1' -i a={D}ONE.tif -o {D}NOTES.txt/OUT.tif", "-o inside something that is a file, not a folder", r"output directory '.*NOTES\.txt' does not exist"),
    # ------------------------------------------------------------------ formats
    _c("text-file", "formats", f"ndvi {D}NOTES.txt --red 1 --nir 2 {OUT}", "a text file given as a raster", r"'.*NOTES\.txt' is not a raster GDAL can read"),
    _c("truncated-tif", "formats", f"calc 'a + 1' -i a={D}TRUNC.tif {OUT}", "a GeoTIFF cut off inside its header", r"'.*TRUNC\.tif' is not a raster GDAL can read"),
    _c("gdal-name-missing", "formats", f"info netcdf:{D}missing.nc:t", "a GDAL dataset name whose file does not exist", r"'netcdf:.*missing\.nc:t' is not a raster GDAL can read"),
    _c("info-not-raster", "formats", f"info {D}NOTES.txt", "info of a file that is not a raster", r"'.*NOTES\.txt' is not a raster"),
    _c("info-directory", "formats", f"info {D}EMPTY", "info of a folder", r"'.*EMPTY' is a directory"),
    _c("safe-no-granule", "formats", f"ndvi {D}EMPTY.SAFE {OUT}", "a .SAFE folder without its GRANULE folder (partial download)",
       r"'.*EMPTY\.SAFE' has no GRANULE folder"),
    _c("safe-bad-xml", "formats", f"ndvi {D}BADXML.SAFE {OUT}", "a SAFE product whose MTD_MSIL2A.xml is damaged", r"cannot parse '.*MTD_MSIL2A\.xml' as XML"),
    _c("safe-zip", "formats", f"ndvi {D}SCENE.zip {OUT}", "the zipped product instead of the .SAFE folder", r"'.*SCENE\.zip'"),
    # ------------------------------------------------------------------ bands
    _c("band-out-of-range", "bands", f"ndvi {D}IN.tif --red 1 --nir 7 {OUT}", "a band index past the file's band count", r"band 7 is out of range for '.*IN\.tif', which has 2"),
    _c("band-zero", "bands", f"ndvi {D}IN.tif --red 0 --nir 2 {OUT}", "band 0 (bands are 1-based)", r"band 0 is out of range"),
    _c("band-names-none", "bands", f"ndvi {D}IN.tif --red B04 --nir B08 {OUT}", "band names for a file whose bands have no names", r"'.*IN\.tif' has no band named 'B08' \(band names: none\)"),
    _c("band-name-unknown", "bands", f"ndvi {D}NAMED.tif --red red --nir swir {OUT}", "a band name no band description has", r"no band named 'swir'"),
    _c("bands-not-told", "bands", f"ndvi {D}IN.tif {OUT}", "a multi-band raster without --red/--nir and without band names", r"cannot tell which bands of '.*IN\.tif'"),
    _c("multiband-no-band", "bands", f"calc 'a + 1' -i a={D}IN.tif {OUT}", "a multi-band file in calc without :BAND", r"'.*IN\.tif' has 2 bands; say which one is a"),
    _c("safe-band-missing", "bands", f"normdiff {D}SCENE.SAFE --index nbr --align bilinear {OUT}", "an index needing a band the product lacks (B12)",
       r"has no B12 band \(found: B04, B08\)"),
    _c("safe-band-name-unknown", "bands", f"normdiff {D}SCENE.SAFE --a B08 --b B13 --index x {OUT}", "a Sentinel-2 band name that does not exist",
       r"has no B13 band"),
    _c("safe-in-calc", "bands", f"calc 'a + 1' -i a={D}SCENE.SAFE {OUT}", "a .SAFE folder as a calc input", r"input a is a SAFE folder \('.*SCENE\.SAFE'\), not one band of it"),
    _c("safe-l1c", "bands", f"ndvi {D}L1C.SAFE {OUT}", "a Level-1C (top-of-atmosphere) product", r"'.*L1C\.SAFE' is a Level-1C product"),
    _c("focal-band-zero", "bands", f"focal {D}ONE.tif --size 3 --band 0 {OUT}", "focal --band 0", r"--band 0 is not a 1-based band index"),
    _c("focal-band-out-of-range", "bands", f"focal {D}ONE.tif --size 3 --band 4 {OUT}", "focal --band past the band count", r"band 4 is out of range"),
    _c("quicklook-band", "bands", f"quicklook {D}ONE.tif --band 3 -o {D}OUT.png", "quicklook --band past the band count", r"band 3 is out of range"),
    # ------------------------------------------------------------------ grids
    _c("grid-mismatch", "grids", f"ndvi --red {D}ONE.tif --nir {D}COARSE.tif {OUT}", "band files on different pixel grids (10 m and 20 m)",
       r"red \(.*ONE\.tif band 1\) is on a different grid than nir \(.*COARSE\.tif band 1\)"),
    _c("crs-mismatch", "grids", f"calc 'a + b' -i a={D}ONE.tif -i b={D}UTM33.tif {OUT}", "inputs in different CRSs", r"b \(.*UTM33\.tif band 1\) is on a different grid"),
    _c("align-unknown", "grids", f"calc 'a + b' -i a={D}ONE.tif -i b={D}COARSE.tif --align bilinar {OUT}", "--align with a resampling that does not exist",
       r"unknown resampling 'bilinar'"),
    _c("align-no-crs", "grids", f"calc 'a + b' -i a={D}ONE.tif -i b={D}NOCRS.tif --align bilinear {OUT}", "--align for an input without a CRS",
       r"b \(.*NOCRS\.tif band 1\) cannot be aligned: it has no CRS"),
    # ------------------------------------------------------------------ expressions
    _c("expr-syntax", "expressions", f"calc 'a +* 2' -i a={D}ONE.tif {OUT}", "a syntax error", r"cannot parse expression 'a \+\* 2' at column"),
    _c("expr-unknown-name", "expressions", f"calc 'a + zz' -i a={D}ONE.tif {OUT}", "a name that is not an input", r"unknown name 'zz'"),
    _c("expr-typo-name", "expressions", f"calc 'nri - red' -i red={D}ONE.tif -i nir={D}ONE.tif {OUT}", "a misspelt input name", r"unknown name 'nri'"),
    _c("expr-unknown-function", "expressions", f"calc 'sqr(a)' -i a={D}ONE.tif {OUT}", "a function that does not exist", r"unknown function 'sqr'"),
    _c("expr-import", "expressions", f"calc \"__import__('os')\" -i a={D}ONE.tif {OUT}", "Python's __import__", r"name '__import__' is not allowed", subprocess=True),
    _c("expr-open", "expressions", f"calc \"open('x')\" -i a={D}ONE.tif {OUT}", "a Python builtin such as open()", r"unknown function 'open'"),
    _c("expr-attribute", "expressions", f"calc 'a.__class__' -i a={D}ONE.tif {OUT}", "attribute access", r"attribute access 'a\.__class__' is not allowed"),
    _c("expr-method", "expressions", f"calc 'a.sum()' -i a={D}ONE.tif {OUT}", "a method call", r"attribute access 'a\.sum' is not allowed"),
    _c("expr-comprehension", "expressions", f"calc '[x for x in a]' -i a={D}ONE.tif {OUT}", "a comprehension", r"comprehension '\[x for x in a\]' is not allowed"),
    _c("expr-lambda", "expressions", f"calc '(lambda: a)()' -i a={D}ONE.tif {OUT}", "a lambda", r"is not allowed"),
    _c("expr-string", "expressions", f"calc \"a + 'x'\" -i a={D}ONE.tif {OUT}", "a string literal", r"string \"'x'\" is not allowed"),
    _c("expr-assign", "expressions", f"calc 'a = 1' -i a={D}ONE.tif {OUT}", "= where == was meant", r"cannot parse expression 'a = 1'"),
    _c("expr-and-precedence", "expressions", f"calc 'a > 30 & a < 40' -i a={D}ONE.tif {OUT}", "& with a bare number (binds tighter than >)",
       r"'&' with a number in '30 & a' is not allowed"),
    _c("expr-xor", "expressions", f"calc 'a ^ 2' -i a={D}ONE.tif {OUT}", "^ for a power", r"operator '\^' in 'a \^ 2' is not allowed"),
    _c("expr-arity", "expressions", f"calc 'clip(a, 0)' -i a={D}ONE.tif {OUT}", "a function with the wrong number of arguments", r"function 'clip' takes 3 arguments, got 2"),
    _c("expr-keyword", "expressions", f"calc 'clip(a, lo=0, hi=1)' -i a={D}ONE.tif {OUT}", "keyword arguments", r"keyword argument in call to 'clip'"),
    _c("expr-uncalled-function", "expressions", f"calc 'sqrt + a' -i a={D}ONE.tif {OUT}", "a function name used as a value", r"function 'sqrt' is used without calling it"),
    _c("expr-empty", "expressions", f"calc '' -i a={D}ONE.tif {OUT}", "an empty expression", r"expression is empty"),
    _c("expr-too-deep", "expressions", ("calc", "sqrt(" * 120 + "a" + ")" * 120, "-i", f"a={D}ONE.tif", "-o", f"{D}OUT.tif"), "function calls nested too deeply",
       r"nested too deeply \(at most 100 levels\)"),
    _c("expr-too-long", "expressions", ("calc", "a+" * 5001 + "a", "-i", f"a={D}ONE.tif", "-o", f"{D}OUT.tif"), "an expression longer than 10000 characters",
       r"too long \(10003 characters, at most 10000\)"),
    _c("expr-reads-no-input", "expressions", f"calc '1 + 2' -i a={D}ONE.tif {OUT}", "an expression that reads none of the inputs", r"expression '1 \+ 2' reads none of the inputs"),
    _c("input-not-key-value", "expressions", f"calc 'a + 1' -i {D}ONE.tif {OUT}", "-i without NAME=", r"-i '.*ONE\.tif' is not KEY=VALUE"),
    _c("input-bad-name", "expressions", f"calc 'a + 1' -i 1a={D}ONE.tif {OUT}", "an input name that is not an identifier", r"input name '1a' is not a valid name"),
    _c("scale-unknown-input", "expressions", f"{CALC} --scale b=0.5", "--scale for a name that is not an input", r"--scale names 'b', which is not an input"),
    _c("scale-not-number", "expressions", f"{CALC} --scale a=half", "--scale with a value that is not a number", r"--scale a='half': 'half' is not a number"),
    # ------------------------------------------------------------------ windows
    _c("focal-even-size", "windows", f"focal {D}ONE.tif --size 4 {OUT}", "an even window size", r"--size 4 is even"),
    _c("focal-size-zero", "windows", f"focal {D}ONE.tif --size 0 {OUT}", "window size 0", r"--size 0 is not positive"),
    _c("focal-size-negative", "windows", f"focal {D}ONE.tif --size -3 {OUT}", "a negative window size", r"--size -3 is not positive"),
    _c("focal-radius-zero", "windows", f"focal {D}ONE.tif --radius 0 {OUT}", "radius 0", r"--radius 0 is not positive"),
    _c("focal-too-large", "windows", f"focal {D}ONE.tif --size 101 {OUT}", "a window larger than the raster", r"window 101x101 \(101 px across\) is larger than '.*ONE\.tif' \(64x64 px\)"),
    _c("focal-unknown-stat", "windows", f"focal {D}ONE.tif --stat avg --size 3 {OUT}", "a statistic that does not exist", r"unknown statistic 'avg'"),
    _c("focal-unknown-edge", "windows", f"focal {D}ONE.tif --edge wrap --size 3 {OUT}", "an edge mode that does not exist", r"unknown edge mode 'wrap'"),
    _c("focal-size-and-radius", "windows", f"focal {D}ONE.tif --size 3 --radius 2 {OUT}", "both --size and --radius", r"exactly one of them"),
    _c("focal-no-window", "windows", f"focal {D}ONE.tif {OUT}", "neither --size nor --radius", r"give the window as --size K"),
    _c("focal-min-valid", "windows", f"focal {D}ONE.tif --size 3 --min-valid 1.5 {OUT}", "--min-valid outside 0..1", r"--min-valid 1\.5 is not a fraction"),
    _c("focal-same-names", "windows", f"focal {D}DUP/ONE.tif {D}ONE.tif --size 3 -o {D}OUTDIR/", "two inputs with the same file name in one batch",
       r"two inputs would both write '.*OUTDIR/ONE_mean_3x3\.tif'"),
    _c("mosaic-one-sheet", "windows", f"focal {D}ONE.tif --mosaic --size 3 -o {D}OUTDIR/", "--mosaic with a single sheet", r"--mosaic needs at least two sheets, got 1"),
    _c("mosaic-file-output", "windows", f"focal {D}ONE.tif {D}EAST.tif --mosaic --size 3 {OUT}", "--mosaic with -o a file", r"-o must be a directory"),
    _c("mosaic-not-touching", "windows", f"focal {D}ONE.tif {D}FAR.tif --mosaic --size 3 -o {D}OUTDIR/", "--mosaic sheets that do not touch",
       r"sheet '.*(ONE|FAR)\.tif' does not touch the other sheets"),
    _c("mosaic-other-crs", "windows", f"focal {D}ONE.tif {D}UTM33.tif --mosaic --size 3 -o {D}OUTDIR/", "--mosaic sheets in different CRSs",
       r"sheet '.*UTM33\.tif' has another CRS"),
    _c("mosaic-other-resolution", "windows", f"focal {D}ONE.tif {D}COARSE.tif --mosaic --size 3 -o {D}OUTDIR/", "--mosaic sheets of different resolutions",
       r"sheet '.*COARSE\.tif' has another resolution"),
    _c("mosaic-other-bands", "windows", f"focal {D}ONE.tif {D}IN.tif --mosaic --size 3 -o {D}OUTDIR/", "--mosaic sheets with different bands or data types",
       r"sheet '.*IN\.tif' has 2 band\(s\) of uint16"),
    # ------------------------------------------------------------------ split / merge
    _c("split-bad-grid", "split-merge", f"split {D}ONE.tif -o {D}TILES/ --grid 4by4", "--grid not written RxC", r"--grid '4by4' is not of the form RxC"),
    _c("split-grid-zero", "split-merge", f"split {D}ONE.tif -o {D}TILES/ --grid 0x2", "--grid with a zero count", r"--grid '0x2' asks for zero tiles"),
    _c("split-grid-too-fine", "split-merge", f"split {D}ONE.tif -o {D}TILES/ --grid 100x100", "more tiles than pixels", r"--grid 100x100 has more tiles than the raster has pixels"),
    _c("split-grid-and-size", "split-merge", f"split {D}ONE.tif -o {D}TILES/ --grid 2x2 --tile-size 32", "both --grid and --tile-size", r"exactly one of --grid RxC and --tile-size N, not both"),
    _c("split-no-layout", "split-merge", f"split {D}ONE.tif -o {D}TILES/", "neither --grid nor --tile-size", r"give exactly one of --grid RxC and --tile-size N"),
    _c("split-bad-tile-size", "split-merge", f"split {D}ONE.tif -o {D}TILES/ --tile-size big", "--tile-size that is not a number", r"--tile-size 'big' is not of the form N or HxW"),
    _c("split-tile-size-zero", "split-merge", f"split {D}ONE.tif -o {D}TILES/ --tile-size 0", "--tile-size 0", r"--tile-size '0' is not a positive size"),
    _c("split-compress", "split-merge", f"split {D}ONE.tif -o {D}TILES/ --grid 2x2 --compress lerc", "a compression split does not offer", r"--compress 'lerc' is not supported here"),
    _c("split-tiles-exist", "split-merge", f"split {D}ONE.tif -o {D}SPLIT/ --grid 2x2", "tiles of an earlier split are in the folder",
       r"1 tile file\(s\) of 'ONE' already exist in '.*SPLIT'"),
    _c("split-output-is-file", "split-merge", f"split {D}ONE.tif -o {D}NOTES.txt --grid 2x2", "-o names a file, not a folder", r"-o '.*NOTES\.txt' is a file, not a directory"),
    _c("split-missing-input", "split-merge", f"split {D}missing.tif -o {D}TILES/ --grid 2x2", "split of a path that does not exist", r"input '.*missing\.tif' does not exist"),
    _c("merge-no-inputs", "split-merge", f"merge {OUT}", "merge without files", r"merge needs at least one input file"),
    _c("merge-empty-directory", "split-merge", f"merge {D}EMPTY {OUT}", "a folder without .tif files", r"directory '.*EMPTY' holds no \.tif or \.tiff files"),
    _c("merge-directory-among-files", "split-merge", f"merge {D}EMPTY {D}ONE.tif {OUT}", "a folder mixed with files", r"'.*EMPTY' is a directory among several inputs"),
    _c("merge-band-count", "split-merge", f"merge {D}ONE.tif {D}EAST2.tif {OUT}", "tiles with different band counts", r"'.*EAST2\.tif' has 2 band\(s\) but '.*ONE\.tif' has 1"),
    _c("merge-dtype", "split-merge", f"merge {D}ONE.tif {D}EAST16.tif {OUT}", "tiles of different data types", r"'.*EAST16\.tif' is uint16 but '.*ONE\.tif' is float32"),
    _c("merge-nodata", "split-merge", f"merge {D}ONE.tif {D}EASTND.tif {OUT}", "tiles with different nodata values", r"'.*EASTND\.tif' has nodata 0 but '.*ONE\.tif' has -9999"),
    _c("merge-crs", "split-merge", f"merge {D}ONE.tif {D}UTM33.tif {OUT}", "tiles in different CRSs", r"'.*UTM33\.tif' is in CRS EPSG:32633 but '.*ONE\.tif' is in EPSG:32632"),
    _c("merge-resolution", "split-merge", f"merge {D}ONE.tif {D}COARSE.tif {OUT}", "tiles of different pixel sizes", r"'.*COARSE\.tif' has pixel size 20\.0 x -20\.0"),
    _c("merge-misaligned", "split-merge", f"merge {D}ONE.tif {D}SHIFTED.tif {OUT}", "tiles off each other's pixel grid by a fraction of a pixel",
       r"'.*SHIFTED\.tif' is not aligned with the pixels of '.*ONE\.tif'"),
    _c("merge-gap-no-nodata", "split-merge", f"merge {D}GAP_A.tif {D}GAP_B.tif {OUT}", "tiles that leave a gap, without a nodata value to fill it",
       r"the files leave pixels uncovered .* '.*GAP_A\.tif' has no nodata value"),
    _c("merge-output-is-input", "split-merge", f"merge {D}ONE.tif {D}EAST.tif -o {D}ONE.tif", "-o names one of the inputs", r"the output '.*ONE\.tif' is also an input"),
    _c("merge-output-exists", "split-merge", f"merge {D}ONE.tif {D}EAST.tif -o {D}EXISTS.tif", "-o names an existing file, without --overwrite",
       r"output '.*EXISTS\.tif' exists"),
    _c("merge-missing-input", "split-merge", f"merge {D}ONE.tif {D}missing.tif {OUT}", "a tile path that does not exist", r"input '.*missing\.tif' does not exist"),
    # ------------------------------------------------------------------ outputs
    _c("dtype-unknown", "outputs", f"{CALC} --dtype float16", "an output type tilewise does not write", r"unknown dtype 'float16'"),
    _c("compress-unknown", "outputs", f"{CALC} --compress brotli", "a compression that does not exist", r"unknown compression 'brotli'"),
    _c("nodata-out-of-range", "outputs", f"{CALC} --dtype uint8 --nodata 300", "--nodata that does not fit the output type", r"--nodata 300.0 does not fit the output type uint8 \(0\.\.255\)"),
    _c("nodata-fraction", "outputs", f"{CALC} --dtype int16 --nodata 0.5", "a fractional --nodata for an integer type", r"--nodata 0.5 does not fit the output type int16"),
    _c("nodata-nan-integer", "outputs", f"{CALC} --dtype uint16 --nodata nan", "--nodata nan for an integer type", r"--nodata nan does not fit the output type uint16"),
    _c("predictor-range", "outputs", f"{CALC} --predictor 5", "--predictor outside 1..3", r"'--predictor': 5 is not in the range 1<=x<=3"),
    _c("creation-option-form", "outputs", f"{CALC} --co BLOCKSIZE", "--co without KEY=VALUE", r"--co 'BLOCKSIZE' is not KEY=VALUE"),
    _c("tile-size-too-small", "outputs", f"{CALC} --tile-size 8", "--tile-size below 16", r"--tile-size 8 is too small"),
    _c("tile-size-negative", "outputs", f"{CALC} --tile-size -1", "a negative --tile-size", r"--tile-size -1 is too small"),
    _c("output-exists", "outputs", f"calc 'a + 1' -i a={D}ONE.tif -o {D}EXISTS.tif", "-o names an existing file, without --overwrite",
       r"output '.*EXISTS\.tif' already exists"),
    _c("output-is-directory", "outputs", f"calc 'a + 1' -i a={D}ONE.tif -o {D}EMPTY", "calc -o names a folder", r"calc writes one raster; -o '.*EMPTY' is a directory"),
    _c("batch-output-file", "outputs", f"ndvi {D}IN.tif {D}DUP/IN.tif --red 1 --nir 2 -o {D}OUTDIR/", "two inputs of the same name in one batch",
       r"would both write '.*OUTDIR/IN_NDVI\.tif'"),
    _c("quicklook-cmap", "outputs", f"quicklook {D}ONE.tif -o {D}OUT.png --cmap YlGnn", "a colour map matplotlib does not have", r"unknown colour map 'YlGnn'"),
    _c("quicklook-max-size", "outputs", f"quicklook {D}ONE.tif -o {D}OUT.png --max-size 0", "--max-size 0", r"max_size 0 is too small"),
    _c("quicklook-vmin-vmax", "outputs", f"quicklook {D}ONE.tif -o {D}OUT.png --vmin 2 --vmax 1", "--vmin above --vmax", r"vmin 2\.0 is greater than vmax 1\.0"),
    _c("quicklook-no-dir", "outputs", f"quicklook {D}ONE.tif -o {D}no/such/OUT.png", "quicklook -o in a folder that does not exist", r"'.*no/such/OUT\.png'"),
    # ------------------------------------------------------------------ executors
    _c("executor-unknown", "executors", f"{CALC} --executor magic", "an executor name that does not exist", r"unknown executor 'magic'"),
    _c("workers-zero", "executors", f"{CALC} --workers 0", "--workers 0", r"--workers 0 is not positive"),
    _c("workers-negative", "executors", f"{CALC} --workers -2", "a negative --workers", r"--workers -2 is not positive"),
    _c("retries-too-many", "executors", f"{CALC} --retries 99", "--retries above 20", r"--retries 99 is not valid: input should be less than or equal to 20"),
    _c("retries-negative", "executors", f"{CALC} --retries -1", "a negative --retries", r"--retries -1 is not valid: input should be greater than or equal to 0"),
    _c("run-executor-unknown", "executors", f"run {D}JOB.toml --executor magic", "tilewise run --executor with a name that does not exist", r"unknown executor 'magic'",
       files={"JOB.toml": f'command = "calc"\nexpression = "a + 1"\ninputs = {{ a = "{D}ONE.tif" }}\noutput = "{D}OUT.tif"\n'}),
    _c("executor-time-bad", "executors", f"{CALC} --executor slurm --time soon --dry-run", "a --time SLURM cannot read", r"--time 'soon' is not a SLURM time limit"),
    _c("executor-mem-bad", "executors", f"{CALC} --executor slurm --mem-per-cpu lots --dry-run", "a memory size without a number", r"memory 'lots' is not a size"),
    _c("executor-cpus-zero", "executors", f"{CALC} --executor slurm --cpus-per-task 0 --dry-run", "--cpus-per-task 0", r"--cpus-per-task 0 is not valid"),
    _c("executor-parts-zero", "executors", f"{CALC} --executor gnu-parallel --parts 0 --dry-run", "--parts 0", r"--parts 0 is not valid"),
    _c("executor-adapt-form", "executors", f"{CALC} --executor dask --dask-cluster slurm --adapt 4", "--adapt without MIN:MAX", r"--adapt '4' is not MIN:MAX"),
    _c("executor-adapt-range", "executors", f"{CALC} --executor dask --dask-cluster slurm --adapt 5:2", "--adapt with MIN above MAX", r"--adapt 5:2 is not a range of jobs"),
    _c("executor-dask-cluster", "executors", f"{CALC} --executor dask --dask-cluster pbs", "a dask cluster kind tilewise does not start", r"Invalid value for '--dask-cluster': 'pbs'"),
    _c("dask-unreachable", "executors", f"{CALC} --executor dask --scheduler tcp://127.0.0.1:9", "a --scheduler address where no Dask scheduler listens", r"tcp://127\.0\.0\.1:9"),
    _c("worker-no-job", "executors", f"worker {D}nowhere --part 1/2", "tilewise worker on a folder that holds no job", r"'.*nowhere' holds no tilewise job"),
    _c("worker-part-form", "executors", f"worker {D}nowhere --part 1-2", "--part not written I/N", r"--part '1-2' is not I/N"),
    # ------------------------------------------------------------------ dates (time stacks)
    _c("stack-no-match", "dates", f"reduce {D}DAYS --date-pattern 'chirps_%Y%m%d.tif' {OUT}", "a date pattern no file name matches", r"chirps_%Y%m%d\.tif"),
    _c("stack-bad-date", "dates", f"reduce {D}BADDAY --date-pattern 't_%Y%m%d.tif' {OUT}", "a file name holding an impossible date", r"t_20210230\.tif"),
    _c("stack-duplicate-date", "dates", f"reduce {D}TWICE --date-pattern 't_%Y%m%d*.tif' {OUT}", "two files of the same date", r"two members have the date 2021-01-01"),
    _c("stack-other-grid", "dates", f"reduce {D}MIXED --date-pattern 't_%Y%m%d.tif' {OUT}", "a member on another grid", r"t_20210102\.tif"),
    _c("stack-empty-selection", "dates", f"reduce {D}DAYS --date-pattern 't_%Y%m%d.tif' --start 2022-01-01 {OUT}", "a selection that leaves no date", r"2022-01-01"),
    _c("stack-bad-start", "dates", f"reduce {D}DAYS --date-pattern 't_%Y%m%d.tif' --start yesterday {OUT}", "a --start that is not a date", r"'yesterday'"),
    _c("stack-bad-months", "dates", f"reduce {D}DAYS --date-pattern 't_%Y%m%d.tif' --months 6,13 {OUT}", "a month that does not exist", r"13"),
    _c("stack-bad-pattern", "dates", f"reduce {D}DAYS --date-pattern 't_%Q.tif' {OUT}", "a date pattern with an unknown code", r"%Q"),
    _c("stack-unknown-stat", "dates", f"reduce {D}DAYS --date-pattern 't_%Y%m%d.tif' --stat mode {OUT}", "a statistic reduce does not compute", r"unknown statistic 'mode'"),
    _c("stack-expr-name", "dates", f"reduce {D}DAYS --date-pattern 't_%Y%m%d.tif' --expr 'x + 1' {OUT}", "an expression over another name than t", r"\bx\b"),
    _c("stack-bad-bbox", "dates", f"reduce {D}DAYS --date-pattern 't_%Y%m%d.tif' --bbox 1,2,3 {OUT}", "a --bbox without four numbers", r"1,2,3"),
    _c("stats-bad-format", "dates", f"stats {D}DAYS --date-pattern 't_%Y%m%d.tif' -o {D}table.xlsx", "a table format stats does not write", r"table\.xlsx"),
    # ------------------------------------------------------------------ job files
    _c("job-missing", "job-files", f"run {D}job.toml", "a job file that does not exist", r"job file '.*job\.toml' does not exist"),
    _c("job-toml-syntax", "job-files", f"run {D}JOB.toml", "a TOML syntax error", r"cannot parse job file '.*JOB\.toml' as TOML: Unclosed array",
       files={"JOB.toml": 'command = "ndvi"\ninputs = ["a.tif"\n'}),
    _c("job-yaml-syntax", "job-files", f"run {D}JOB.yaml", "a YAML syntax error", r"cannot parse job file '.*JOB\.yaml' as YAML",
       files={"JOB.yaml": "command: ndvi\ninputs: [a.tif\n"}),
    _c("job-json-syntax", "job-files", f"run {D}JOB.json", "a JSON syntax error", r"cannot parse job file '.*JOB\.json' as JSON",
       files={"JOB.json": '{"command": "ndvi", }'}),
    _c("job-yaml-python-tag", "job-files", f"run {D}JOB.yaml", "a YAML tag that would run Python code", r"cannot parse job file '.*JOB\.yaml' as YAML: .*python/object", subprocess=True,
       files={"JOB.yaml": "!!python/object/apply:os.system ['touch $D/PWNED']\n"}),
    _c("job-not-a-table", "job-files", f"run {D}JOB.json", "a job file holding a list, not a table of options", r"job file '.*JOB\.json' holds a list, not a table of options",
       files={"JOB.json": '["ndvi", "a.tif"]'}),
    _c("job-unknown-command", "job-files", f"run {D}JOB.toml", "a command that does not exist", r"unknown command 'ndwi'",
       files={"JOB.toml": 'command = "ndwi"\ninputs = ["a.tif"]\noutput = "o.tif"\n'}),
    _c("job-no-command", "job-files", f"run {D}JOB.toml", "no command at all", r"JOB\.toml names no command", files={"JOB.toml": 'inputs = ["a.tif"]\noutput = "o.tif"\n'}),
    _c("job-unknown-option", "job-files", f"run {D}JOB.toml", "a misspelt option", r"unknown option 'tile_sise'",
       files={"JOB.toml": f'command = "ndvi"\ninputs = ["{D}IN.tif"]\noutput = "{D}OUT.tif"\ntile_sise = 512\n'}),
    _c("job-bad-type", "job-files", f"run {D}JOB.toml", "an option of the wrong type", r"workers 'four'",
       files={"JOB.toml": f'command = "calc"\nexpression = "a + 1"\ninputs = {{ a = "{D}ONE.tif" }}\noutput = "{D}OUT.tif"\nworkers = "four"\n'}),
    _c("job-inputs-not-list", "job-files", f"run {D}JOB.toml", "inputs given as a number", r"inputs 5 is not a path or a list of paths",
       files={"JOB.toml": f'command = "ndvi"\ninputs = 5\noutput = "{D}OUT.tif"\n'}),
    _c("job-calc-inputs-list", "job-files", f"run {D}JOB.toml", "calc inputs as a list instead of a table of names", r"inputs \[.*\] is not a table",
       files={"JOB.toml": f'command = "calc"\nexpression = "a + 1"\ninputs = ["{D}ONE.tif"]\noutput = "{D}OUT.tif"\n'}),
    _c("job-not-utf8", "job-files", f"run {D}JOB.toml", "a job file that is not UTF-8 text", r"job file '.*JOB\.toml' is not UTF-8 text \(byte 0xe9",
       files={"JOB.toml": "command = 'ndvi' # caf\udce9\n"}),
    _c("job-directory", "job-files", f"run {D}EMPTY", "a folder instead of a job file", r"job file '.*EMPTY' is a directory"),
    _c("job-unknown-suffix", "job-files", f"run {D}NOTES.txt", "a file that is not a job file", r"cannot parse job file '.*NOTES\.txt' as JSON"),
    _c("job-empty-yaml", "job-files", f"run {D}JOB.yaml", "an empty YAML job file", r"job file '.*JOB\.yaml' holds nothing, not a table of options", files={"JOB.yaml": "# nothing yet\n"}),
    _c("job-tile-size-type", "job-files", f"run {D}JOB.toml", "tile_size as text", r"invalid job: tile_size 'big': Input should be a valid integer",
       files={"JOB.toml": f'command = "calc"\nexpression = "a + 1"\ninputs = {{ a = "{D}ONE.tif" }}\noutput = "{D}OUT.tif"\ntile_size = "big"\n'}),
    _c("job-focal-size-type", "job-files", f"run {D}JOB.toml", "a focal window size as text", r"--size 'five' is not valid",
       files={"JOB.toml": f'command = "focal"\ninputs = ["{D}ONE.tif"]\noutput = "{D}OUT.tif"\nsize = "five"\n'}),
    _c("job-output-not-text", "job-files", f"run {D}JOB.toml", "output given as a number", r"output 5 is not text",
       files={"JOB.toml": f'command = "ndvi"\ninputs = ["{D}IN.tif"]\noutput = 5\n'}),
    _c("job-yaml-aliases", "job-files", f"run {D}JOB.yaml", "YAML aliases that expand to millions of values (\"billion laughs\")",
       r"job file '.*JOB\.yaml' holds more than 100000 values", files={"JOB.yaml": _LAUGHS}),
    _c("job-saved-invalid", "job-files", f"run {D}JOB.json", "a saved job description with a bad field", r"invalid job description: items 5: Input should be a valid array",
       files={"JOB.json": '{"command": "ndvi", "items": 5, "output_root": "o.tif"}'}),
    # ------------------------------------------------------------------ polygons, tile matrix sets
    _c("tms-unknown", "vectors", f"rasterize {D}POLY.geojson -o {D}T --tms WorldCRS84 --zoom 3", "a tile matrix set that does not exist",
       r"unknown tile matrix set 'WorldCRS84'"),
    _c("zoom-outside", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 30", "a zoom level the TMS does not define",
       r"--zoom 30 is outside the zoom levels of WorldCRS84Quad \(0\.\.23\)"),
    _c("zoom-missing", "vectors", f"rasterize {D}POLY.geojson -o {D}T", "no zoom level (and no --like)", r"no --zoom given"),
    _c("min-zoom-above", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --parents --min-zoom 7", "--min-zoom above --zoom",
       r"--min-zoom 7 is above --zoom 5"),
    _c("stat-unknown", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --stat cover", "a misspelt statistic",
       r"unknown statistic 'cover'"),
    _c("stat-agg-unknown", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --stat Area:avg", "an aggregation that does not exist",
       r"--stat 'Area:avg': unknown aggregation 'avg'"),
    _c("stat-twice", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --stat count --stat count", "the same statistic twice",
       r"statistic 'count' is asked for twice"),
    _c("property-missing", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --stat Height:mean", "a property the layer does not have",
       r"property 'Height' is not a field of '.*POLY\.geojson'"),
    _c("property-not-numeric", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --stat Name:sum", "a text property aggregated",
       r"property 'Name' of '.*POLY\.geojson' is not numeric \(value 'a'\)"),
    _c("vector-points", "vectors", f"rasterize {D}PTS.geojson -o {D}T --zoom 5", "a layer of points", r"'.*PTS\.geojson' holds Point geometries"),
    _c("vector-empty", "vectors", f"rasterize {D}NOFEAT.gpkg -o {D}T --zoom 5", "a layer with no features", r"the vector input\(s\) hold no features \(NOFEAT\.gpkg\)"),
    _c("vector-no-crs", "vectors", f"rasterize {D}NOCRS.shp -o {D}T --zoom 5", "a Shapefile without its .prj", r"'.*NOCRS\.shp' has no CRS"),
    _c("vector-missing", "vectors", f"rasterize {D}NONE.gpkg -o {D}T --zoom 5", "a vector file that does not exist", r"vector input '.*NONE\.gpkg' does not exist"),
    _c("vector-not-vector", "vectors", f"rasterize {D}NOTES.txt -o {D}T --zoom 5", "a text file as vector input",
       r"cannot open '.*NOTES\.txt' as a vector layer"),
    _c("vector-tif-output", "vectors", f"rasterize {D}POLY.geojson -o {D}T.tif --zoom 5", "a .tif output for TMS tiles (without --like)",
       r"-o '.*T\.tif' is a GeoTIFF, but TMS tiles go into a folder"),
    _c("vector-like-parents", "vectors", f"rasterize {D}POLY.geojson -o {D}OUT.tif --like {D}ONE.tif --parents", "--parents with --like",
       r"--parents and --webtiles build TMS levels"),
    _c("palette-unknown", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --webtiles --palette nope", "a palette that is neither a colormap nor colours",
       r"nope"),
    _c("range-reversed", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --range coverage=1,0", "a value range given max first",
       r"value range \[1\.0, 0\.0\] of statistic 'coverage' is reversed"),
    _c("range-unknown-stat", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --range cov=0,1", "a value range for a statistic not asked for",
       r"--range names statistic 'cov', which is not asked for"),
    _c("resampling-unknown", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --resampling count=median", "a parent resampling that does not exist",
       r"unknown resampling 'median' for statistic 'count'"),
    _c("stats-config-missing", "vectors", f"rasterize {D}POLY.geojson -o {D}T --zoom 5 --stats-config {D}NO.toml", "a statistics config that does not exist",
       r"statistics config '.*NO\.toml' does not exist"),
    # ------------------------------------------------------------------ remote inputs and outputs
    _c("output-https", "remote", f"ndvi {D}IN.tif --red 1 --nir 2 -o https://example.org/out.tif", "an output at an http(s) URL, which cannot be written",
       r"output 'https://example\.org/out\.tif' cannot be written: of remote locations only S3"),
    _c("output-s3-no-key", "remote", f"ndvi {D}IN.tif --red 1 --nir 2 -o s3://my-bucket", "an S3 output URL naming a bucket but no object key",
       r"output 's3://my-bucket' is not an S3 object URL"),
    _c("output-s3-dotdot", "remote", f"ndvi {D}IN.tif --red 1 --nir 2 -o s3://my-bucket/a/../b.tif", "an S3 output key with a '..' segment",
       r"output 's3://my-bucket/a/\.\./b\.tif' is not an S3 object URL"),
    _c("stats-output-https", "remote", f"stats {D}DAYS --date-pattern t_%Y%m%d.tif -o https://example.org/t.csv", "a stats table at an http(s) URL",
       r"output 'https://example\.org/t\.csv' cannot be written"),
    _c("tiles-to-s3", "remote", f"rasterize {D}POLY.geojson -o s3://my-bucket/tiles --zoom 5", "a TMS tile folder to S3",
       r"-o 's3://my-bucket/tiles': a folder of TMS tiles is written to local disk only"),
    _c("s3-endpoint-no-scheme", "remote", f"ndvi {D}IN.tif --red 1 --nir 2 {OUT} --s3-endpoint 127.0.0.1:9000", "an --s3-endpoint without http(s)://",
       r"--s3-endpoint '127\.0\.0\.1:9000' is not an endpoint URL"),
    _c("s3-endpoint-path", "remote", f"ndvi {D}IN.tif --red 1 --nir 2 {OUT} --s3-endpoint https://a3s.fi/bucket", "an --s3-endpoint with a path (the bucket belongs in the s3:// URL)",
       r"--s3-endpoint 'https://a3s\.fi/bucket' is not an endpoint URL"),
    _c("url-folder", "remote", f"reduce http://127.0.0.1:9/stack/ --date-pattern t_%Y%m%d.tif {OUT}", "a remote folder as a stack (it cannot be listed)",
       r"http://127\.0\.0\.1:9/stack/"),
    _c("cache-unwritable", "remote", f"ndvi {D}IN.tif --red 1 --nir 2 {OUT} --cache /proc/tilewise-cache", "a --cache folder that cannot be created",
       r"--cache '/proc/tilewise-cache' cannot be created"),
    # ------------------------------------------------------------------ saved jobs
    _c("status-no-job", "state", f"status {D}OUT.tif", "status of an output no job writes", r"no tilewise job found for '.*OUT\.tif'"),
    _c("resume-no-job", "state", f"resume {D}OUT.tif", "resume of an output no job writes", r"no tilewise job found for '.*OUT\.tif'"),
    _c("resume-damaged", "state", f"resume {D}BROKEN.tif", "resume when the saved job.json is damaged", r"'.*job\.json' is damaged",
       files={".BROKEN.tif.tilewise/job.json": '{"fingerprint": "x", "job": {'}),
    _c("status-damaged", "state", f"status {D}BROKEN.tif", "status when the saved job.json is damaged", r"'.*job\.json' is damaged",
       files={".BROKEN.tif.tilewise/job.json": '{"fingerprint": '}),
    _c("resume-invalid-job", "state", f"resume {D}BROKEN.tif", "resume when the saved job.json holds an invalid job", r"'.*job\.json' is damaged \(items: Field required\)",
       files={".BROKEN.tif.tilewise/job.json": '{"fingerprint": "x", "job": {"command": "ndvi", "output_root": "o.tif"}}'}),
    # ------------------------------------------------------------------ runs
    _c("damaged-block", "runs", f"-q ndvi {D}DAMAGED.tif --red 1 --nir 2 {OUT} --tile-size 64 --retries 0 --executor serial",
       "an input with a damaged block: the other tiles finish, the run fails", r"1 of 2 tiles failed \(first: 0/r0001-c0000: .*rows 64:128",
       code=1, leaves=(".OUT.tif.tilewise", ".OUT.tif.tilewise/*", ".OUT.tif.tilewise/*/*", ".OUT.tif.tilewise/*/*/*"), subprocess=True),
)
# fmt: on


# ---------------------------------------------------------------------------------------------- fixtures


def build_fixtures(root: Path) -> None:
    """Write the small inputs the cases name (``$D/IN.tif`` ...) into ``root``."""
    from tests.conftest import two_band_scene, write_raster
    from tilewise.synthetic import write_safe

    east = Affine(10.0, 0.0, 300640.0, 0.0, -10.0, 5600000.0)  # just right of ONE.tif
    one = (np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 100).astype(np.float32)
    write_raster(root / "IN.tif", two_band_scene(64, 64), nodata=0, blocksize=None)
    write_raster(root / "NAMED.tif", two_band_scene(64, 64), nodata=0, blocksize=None, descriptions=["red", "nir"])
    write_raster(root / "ONE.tif", one, nodata=-9999, blocksize=None)
    write_raster(root / "EAST.tif", one, nodata=-9999, blocksize=None, transform=east)
    write_raster(root / "EAST2.tif", np.stack([one, one]), nodata=-9999, blocksize=None, transform=east)
    write_raster(root / "EAST16.tif", one.astype(np.uint16), nodata=0, blocksize=None, transform=east)
    write_raster(root / "EASTND.tif", one, nodata=0, blocksize=None, transform=east)
    write_raster(root / "FAR.tif", one, nodata=-9999, blocksize=None, transform=Affine(10.0, 0.0, 310000.0, 0.0, -10.0, 5600000.0))
    write_raster(root / "SHIFTED.tif", one, nodata=-9999, blocksize=None, transform=Affine(10.0, 0.0, 300645.0, 0.0, -10.0, 5600000.0))
    write_raster(root / "COARSE.tif", one[:32, :32].copy(), nodata=-9999, blocksize=None, transform=Affine(20.0, 0.0, 300000.0, 0.0, -20.0, 5600000.0))
    write_raster(root / "UTM33.tif", one, nodata=-9999, blocksize=None, crs="EPSG:32633")
    write_raster(root / "NOCRS.tif", one[:32, :32].copy(), nodata=-9999, blocksize=None, crs=None,  # type: ignore[arg-type]
                 transform=Affine(20.0, 0.0, 300000.0, 0.0, -20.0, 5600000.0))  # fmt: skip
    write_raster(root / "GAP_A.tif", one[:32, :32].copy(), blocksize=None)
    write_raster(root / "GAP_B.tif", one[:32, :32].copy(), blocksize=None, transform=Affine(10.0, 0.0, 300320.0, 0.0, -10.0, 5599680.0))
    (root / "DUP").mkdir()
    write_raster(root / "DUP" / "ONE.tif", one, nodata=-9999, blocksize=None)
    write_raster(root / "DUP" / "IN.tif", two_band_scene(64, 64), nodata=0, blocksize=None)
    (root / "SPLIT").mkdir()
    write_raster(root / "SPLIT" / "ONE_r000_c000.tif", one[:32, :32].copy(), nodata=-9999, blocksize=None)
    write_raster(root / "EXISTS.tif", one, nodata=-9999, blocksize=None)
    (root / "EMPTY").mkdir()
    # Time stacks: three good days, a folder with an impossible date, one with a day twice, one with a member on another grid.
    for sub, names in (("DAYS", ("t_20210101.tif", "t_20210102.tif", "t_20210103.tif")), ("BADDAY", ("t_20210101.tif", "t_20210230.tif")),
                       ("TWICE", ("t_20210101.tif", "t_20210101b.tif")), ("MIXED", ("t_20210101.tif", "t_20210102.tif"))):  # fmt: skip
        (root / sub).mkdir()
        for n in names:
            grid = east if (sub == "MIXED" and n.endswith("02.tif")) else None
            write_raster(root / sub / n, one, nodata=-9999, blocksize=None, transform=grid)
    (root / "NOTES.txt").write_text("red and nir bands of the scene\n")
    _vector_fixtures(root)
    whole = (root / "ONE.tif").read_bytes()
    (root / "TRUNC.tif").write_bytes(whole[:100])
    (root / "SCENE.zip").write_bytes(b"PK\x03\x04" + b"\0" * 60)
    # A 2 x 2 tile file whose second row of blocks is garbage: tile r0001-c0000 cannot be read.
    from tests.test_failures import damage_block

    write_raster(root / "DAMAGED.tif", np.ascontiguousarray(two_band_scene(128, 64)), nodata=0, blocksize=64)
    damage_block(root / "DAMAGED.tif", 1, 0)
    # Sentinel-2 products: a good one (B04, B08), one with no GRANULE, a damaged XML, a Level-1C.
    dn = (1000 + np.arange(32 * 32).reshape(32, 32) % 3000).astype(np.uint16)
    for name, bands in (("SCENE", {"B04": dn, "B08": dn}), ("BADXML", {"B04": dn, "B08": dn})):
        made = write_safe(root / f"_{name}", bands)
        made.rename(root / f"{name}.SAFE")
        (root / f"_{name}").rmdir()
    (root / "BADXML.SAFE" / "MTD_MSIL2A.xml").write_text('<?xml version="1.0"?>\n<n1:Level-2A_User_Product><General_Info>')
    (root / "EMPTY.SAFE").mkdir()
    (root / "EMPTY.SAFE" / "MTD_MSIL2A.xml").write_text("<x/>")
    (root / "L1C.SAFE" / "GRANULE").mkdir(parents=True)
    (root / "L1C.SAFE" / "MTD_MSIL1C.xml").write_text("<x/>")


def _vector_fixtures(root: Path) -> None:
    """Polygons (GeoJSON, CRS84), points, an empty layer and a Shapefile without .prj for the rasterize cases."""
    import geopandas as gpd
    import shapely

    polys = [shapely.box(-148.80 + i * 0.01, 70.0, -148.795 + i * 0.01, 70.004) for i in range(3)]
    gpd.GeoDataFrame({"Area": [1.0, 2.0, 3.0], "Name": ["a", "b", "c"]}, geometry=polys, crs="OGC:CRS84").to_file(root / "POLY.geojson")
    gpd.GeoDataFrame({"n": [1, 2]}, geometry=[shapely.Point(0, 0), shapely.Point(1, 1)], crs="OGC:CRS84").to_file(root / "PTS.geojson")
    gpd.GeoDataFrame({"n": []}, geometry=[], crs="EPSG:4326").to_file(root / "NOFEAT.gpkg")
    gpd.GeoDataFrame({"n": [1]}, geometry=polys[:1], crs="EPSG:4326").to_file(root / "NOCRS.shp")
    (root / "NOCRS.prj").unlink()


@contextlib.contextmanager
def fixture_dir() -> Iterator[Path]:
    """A fresh fixture directory with a short path (messages shorten paths over 60 characters)."""
    root = Path(tempfile.mkdtemp(prefix="tw-"))
    try:
        build_fixtures(root)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What running a case printed and left behind."""

    case: Case
    code: int
    stdout: str
    stderr: str
    message: str  # the text after "Error: " (normalised: fixture paths shown as NAME)
    hint: str | None  # the part after " - " (the fix), when recorded or found
    left: list[str]  # new paths under the fixture directory (relative), before cleanup
    changed: list[str]  # existing files whose size or mtime changed


def _expand(text: str, root: Path) -> str:
    return text.replace(D, f"{root}/")


def normalise(text: str, root: Path) -> str:
    """Show fixture paths as their names: ``'/tmp/tw-x/IN.tif'`` -> ``'IN.tif'``."""
    return text.replace(f"{root}/", "").replace(str(root), ".")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns if p.is_file() else 0)
    return out


def _run_inprocess(argv: list[str]) -> tuple[int, str, str, list[tuple[str, str | None]]]:
    from tilewise.cli.main import main
    from tilewise.errors import TilewiseError

    recorded: list[tuple[str, str | None]] = []
    original = TilewiseError.__str__

    def recording_str(self: TilewiseError) -> str:
        recorded.append((self.message, self.hint))
        return original(self)

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch.object(TilewiseError, "__str__", recording_str):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue(), recorded


def _run_subprocess(argv: list[str]) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    r = subprocess.run([sys.executable, "-m", "tilewise.cli.main", *argv], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    return r.returncode, r.stdout, r.stderr


def run_case(case: Case, root: Path) -> Outcome:
    """Run ``case`` against the fixtures in ``root``; restore ``root`` afterwards."""
    written = []
    for name, text in case.files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_expand(text, root).encode("utf-8", "surrogateescape"))
        written.append(p)
    before = _snapshot(root)
    argv = [_expand(a, root) for a in case.argv]
    recorded: list[tuple[str, str | None]] = []
    if case.subprocess:
        code, out, err = _run_subprocess(argv)
    else:
        code, out, err, recorded = _run_inprocess(argv)
    after = _snapshot(root)
    left = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and before[k] != after[k] and before[k][0] >= 0)
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    line = lines[-1][len("Error: ") :] if lines else ""
    hint: str | None = None
    if recorded and str(recorded[-1][0]) + (f" - {recorded[-1][1]}" if recorded[-1][1] else "") == line:
        message, hint = recorded[-1]
    elif " - " in line:
        message, hint = line.rsplit(" - ", 1)
    else:
        message = line
    # Clean up: everything the case created, so the next one starts from the same files.
    for rel in sorted(left, key=len):
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()
    for p in written:
        if p.exists():
            p.unlink()
        with contextlib.suppress(OSError):
            p.parent.rmdir() if p.parent != root else None
    return Outcome(case, code, normalise(out, root), normalise(err, root), normalise(message, root),
                   normalise(hint, root) if hint is not None else None, left, changed)  # fmt: skip


def unexpected_leftovers(outcome: Outcome) -> list[str]:
    """New paths the case left that its ``leaves`` does not allow."""
    return [p for p in outcome.left if not any(fnmatch.fnmatchcase(p, pat) for pat in outcome.case.leaves)]


def run_all(root: Path, cases: tuple[Case, ...] = CASES) -> list[Outcome]:
    """Run every case, in order, against one fixture directory."""
    return [run_case(c, root) for c in cases]


# ---------------------------------------------------------------------------------------------- rendering


def _cell(text: str, code: bool = False) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    if not code:  # plain text: no accidental emphasis or HTML
        text = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text.replace("*", "\\*")))
    if code:
        ticks = "``" if "`" in text else "`"
        pad = " " if text.startswith("`") or text.endswith("`") else ""
        return f"{ticks}{pad}{text}{pad}{ticks}"
    return text


def _shown_arg(arg: str) -> str:
    arg = arg.replace(D, "")
    if len(arg) > 48:
        arg = f"{arg[:20]}...{arg[-8:]}"
    return arg


def _quote(arg: str) -> str:
    """Quote an argument as a person would type it in a POSIX shell."""
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if not any(ch in arg for ch in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


# GDAL's own wording of why a file cannot be read varies with the GDAL version: shown as a placeholder.
_DOC_PLACEHOLDERS = (
    (re.compile(r"(is not a raster GDAL can read) \(.*\)$"), r"\1 (GDAL's reason)"),
    (re.compile(r"(window rows \d+:\d+, cols \d+:\d+) \([^()]*\)"), r"\1 (GDAL's reason)"),
)


def doc_message(message: str) -> str:
    """The message as docs/errors.md shows it (GDAL's version-dependent reasons replaced by a placeholder)."""
    for pattern, repl in _DOC_PLACEHOLDERS:
        message = pattern.sub(repl, message)
    return message


def render(outcomes: list[Outcome]) -> str:
    """docs/errors.md from the outcomes of :func:`run_all`."""
    by_cat: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_cat.setdefault(o.case.category, []).append(o)
    lines = [
        "# Errors: the bad-input catalogue",
        "",
        "<!-- Generated by `python -m tests.error_cases --write` from tests/error_cases.py; do not edit by hand. -->",
        "",
        "Every mistake below makes `tilewise` print one line, `Error: MESSAGE - FIX`, on stderr and exit with",
        "status 2 (bad usage or input; 1 for a run that started and failed), without a traceback (`-v` shows",
        "one) and without leaving a partial output. The messages are the ones the CLI prints today: each",
        "case is run by `tests/test_errors.py`, which also checks this page is current. Paths are shown as",
        "the fixture names (`IN.tif`, `OUT.tif` ...); yours are printed in their place.",
        "",
        "Not listed yet: dates, TileMatrixSets / zoom levels and cluster resources. Their rows come with",
        "the commands that add them. Division by zero is not an error: the pixel becomes nodata.",
        "",
        f"{len(outcomes)} cases:",
        "",
    ]
    lines += [f"- [{CATEGORIES[cat]}](#{_anchor(CATEGORIES[cat])}): {len(by_cat[cat])}" for cat in CATEGORIES if cat in by_cat]
    for cat in CATEGORIES:
        if cat not in by_cat:
            continue
        lines += ["", f"## {CATEGORIES[cat]}", "", "| id | command | what the user did | message (after `Error: `) | fix |", "| --- | --- | --- | --- | --- |"]
        for o in by_cat[cat]:
            cmd = "tilewise " + " ".join(_quote(_shown_arg(a)) for a in o.case.argv)
            exit_note = f" (exit {o.code})" if o.code != 2 else ""
            lines.append(
                f"| {o.case.id} | {_cell(cmd, code=True)} | {_cell(o.case.cause)}{exit_note} | {_cell(doc_message(o.message), code=True)} | {_cell(o.hint or '')} |"
            )
    return "\n".join(lines) + "\n"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def generate() -> str:
    """Build the fixtures, run every case and render docs/errors.md."""
    with fixture_dir() as root:
        return render(run_all(root))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--write" in args:
        text = generate()
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC.relative_to(REPO)} ({len(CASES)} cases)")
        return 0
    with fixture_dir() as root:
        for o in run_all(root):
            print(f"[{o.code}] {o.case.id}: {o.message}  ||  {o.hint}")
            extra = [ln for ln in o.stderr.splitlines() if not ln.startswith("Error: ")]
            if extra or unexpected_leftovers(o) or o.changed:
                print(f"    !! extra stderr {extra[:3]} left {unexpected_leftovers(o)} changed {o.changed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
