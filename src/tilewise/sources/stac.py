"""STAC as a source of dated stacks: a STAC API search or a static catalog, item collection or collection file.

:func:`resolve_stac` turns a STAC source and filters into the dated members of a
stack: one ``(datetime, href)`` per matching item, the date being the item's
``datetime`` (or its ``start_datetime``) and the href the chosen asset's, made
absolute against the item's own location. A STAC API (a landing page that conforms
to *item-search*, or has a ``search`` link) is searched with ``pystac-client``; a
static catalog, collection or ``FeatureCollection`` of items is read with ``pystac``
and its items walked. Either way the items are also filtered here, with the same
datetime, bbox, collection and property semantics, because servers differ in what
they honour.

Query text (``--query``): ``PROP<V``, ``PROP<=V``, ``PROP>V``, ``PROP>=V``,
``PROP=V`` and ``PROP!=V``; ``V`` is a number, ``true``/``false``, or text (quotes
optional). Several queries must all hold. ``id`` and ``collection`` name the item's
own id and collection; every other name is an item property (``eo:cloud_cover``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import operator
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilewise.errors import InputError, UsageError
from tilewise.remote import is_remote

QUERY_HELP = "write a filter as PROPERTY OP VALUE with OP one of < <= > >= = !=, e.g. --query 'eo:cloud_cover<20'"
DATETIME_HELP = "give --datetime as DATE or START/END (YYYY, YYYY-MM, YYYY-MM-DD or an RFC 3339 time; '..' for an open end)"
TIMEOUT_S = 30.0

_OPS: dict[str, tuple[Callable[[Any, Any], bool], str, str]] = {
    # text -> (comparison, STAC query extension name, CQL2 operator)
    "<=": (operator.le, "lte", "<="),
    ">=": (operator.ge, "gte", ">="),
    "!=": (operator.ne, "neq", "<>"),
    "<": (operator.lt, "lt", "<"),
    ">": (operator.gt, "gt", ">"),
    "=": (operator.eq, "eq", "="),
}
_QUERY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_:.\-]*)\s*(<=|>=|!=|==|<|>|=)\s*(.*?)\s*")


@dataclass(frozen=True)
class Query:
    """One property filter: ``prop op value``."""

    prop: str
    op: str
    value: float | str | bool
    text: str

    def holds(self, item: dict[str, Any]) -> bool:
        """True when ``item`` (STAC item JSON) has the property and it compares true."""
        props = item.get("properties") or {}
        if self.prop == "id":
            have: Any = item.get("id")
        elif self.prop == "collection":
            have = item.get("collection")
        elif self.prop in props:
            have = props[self.prop]
        else:
            return False
        if have is None:
            return False
        want = self.value
        fn = _OPS[self.op][0]
        if isinstance(want, bool) or isinstance(have, bool):
            if isinstance(want, bool) and isinstance(have, bool) and self.op in ("=", "!="):
                return bool(fn(have, want))
            return self.op == "!="
        if isinstance(want, float):
            if isinstance(have, int | float):
                return bool(fn(float(have), want))
            try:
                return bool(fn(float(str(have)), want))
            except ValueError:
                return self.op == "!="
        return bool(fn(str(have), want))


@dataclass(frozen=True)
class StacHit:
    """One matching item: its id, date (naive UTC) and the chosen asset's href."""

    item_id: str
    date: dt.datetime
    href: str


def parse_query(text: str) -> Query:
    """Parse ``"eo:cloud_cover<20"`` into a :class:`Query`.

    Raises
    ------
    UsageError
        Text that is not ``PROP OP VALUE``.
    """
    m = _QUERY.fullmatch(text or "")
    if m is None or not m.group(3):
        raise UsageError(f"--query {text!r} is not a filter", QUERY_HELP)
    prop, op, raw = m.group(1), m.group(2), m.group(3)
    op = "=" if op == "==" else op
    value: float | str | bool
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        value = raw[1:-1]
    elif raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        try:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
        except ValueError:
            if any(c in raw for c in "<>=!"):
                raise UsageError(f"--query {text!r} is not a filter", QUERY_HELP) from None
            value = raw
    return Query(prop, op, value, text)


def parse_datetime(text: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Parse ``A/B``, ``A/..``, ``../B`` or one date into [start, end) as naive UTC datetimes (None: open).

    A coarse date covers its whole period: ``2021-01/2021-03`` is January to March
    inclusive, ``2021-06`` all of June.

    Raises
    ------
    UsageError
        A part that is not a date, or start after end.
    """
    from tilewise.sources.stack import _parse_bound

    parts = text.split("/") if isinstance(text, str) else []
    if not 1 <= len(parts) <= 2 or (len(parts) == 1 and not parts[0].strip()):
        raise UsageError(f"--datetime {text!r} is not a date or an interval", DATETIME_HELP)

    def bound(p: str, end: bool) -> dt.datetime | None:
        p = p.strip()
        if p in ("", ".."):
            return None
        try:
            lo, hi = _parse_bound(p, "--datetime")
        except UsageError:
            raise UsageError(f"--datetime {text!r}: {p!r} is not a date", DATETIME_HELP) from None
        return hi if end else lo

    if len(parts) == 1:
        lo, hi = bound(parts[0], False), bound(parts[0], True)
    else:
        lo, hi = bound(parts[0], False), bound(parts[1], True)
        if lo is None and hi is None:
            raise UsageError(f"--datetime {text!r} has two open ends", DATETIME_HELP)
    if lo is not None and hi is not None and lo >= hi:
        raise UsageError(f"--datetime {text!r} starts after it ends", DATETIME_HELP)
    return lo, hi


def api_datetime(lo: dt.datetime | None, hi: dt.datetime | None) -> str:
    """The RFC 3339 interval a STAC API is sent for [lo, hi): ``2021-02-01T00:00:00Z/2021-03-31T23:59:59.999999Z``."""

    def text(value: dt.datetime | None) -> str:
        return ".." if value is None else value.isoformat(timespec="microseconds" if value.microsecond else "seconds") + "Z"

    return f"{text(lo)}/{text(hi - dt.timedelta(microseconds=1) if hi is not None else None)}"


def resolve_stac(
    source: str,
    collection: str | Sequence[str] | None = None,
    datetime: str | None = None,
    bbox: Sequence[float] | None = None,
    query: Sequence[str] = (),
    asset: str = "",
) -> list[tuple[dt.datetime, str]]:
    """The dated members a STAC source gives: ``(date, href)`` of the asset ``asset`` of every matching item.

    Parameters
    ----------
    source
        A STAC API root URL, or a static catalog, collection or item collection
        (``FeatureCollection``) JSON file or URL.
    collection
        Keep only items of this collection (or these collections).
    datetime
        ``A/B`` (inclusive; ``..`` for an open end) or one date; see :func:`parse_datetime`.
    bbox
        ``(minx, miny, maxx, maxy)`` in longitude/latitude: items whose bbox intersects it.
    query
        Property filters (see the module doc), all of which must hold.
    asset
        The asset key whose href is a member.

    Returns
    -------
    list of (datetime, str)
        In date order (then item id); the date is naive UTC.

    Raises
    ------
    UsageError
        Bad query or datetime text, or no asset named.
    InputError
        An unreachable or unreadable source, no matching items (the filters are
        named), an item without the asset (its assets are named).
    """
    return [(h.date, h.href) for h in search_stac(source, collection, datetime, bbox, query, asset)]


def search_stac(
    source: str,
    collection: str | Sequence[str] | None = None,
    datetime: str | None = None,
    bbox: Sequence[float] | None = None,
    query: Sequence[str] = (),
    asset: str = "",
) -> list[StacHit]:
    """As :func:`resolve_stac`, with each member's item id (for labels and the job's fingerprint)."""
    if not asset:
        raise UsageError("--stac needs --asset NAME", "name the asset of each item to read, e.g. --asset B04 (the item's 'assets' keys)")
    return asset_hits(select_items(source, collection, datetime, bbox, query), asset, "pick one of its assets with --asset NAME")


@dataclass(frozen=True)
class Selection:
    """The items a STAC source and its filters select: ``(item JSON, the href it was read from)`` each."""

    source: str
    items: tuple[tuple[dict[str, Any], str], ...]


def select_items(
    source: str,
    collection: str | Sequence[str] | None = None,
    datetime: str | None = None,
    bbox: Sequence[float] | None = None,
    query: Sequence[str] = (),
) -> Selection:
    """The items of ``source`` that the filters select (see :func:`resolve_stac` for the parameters).

    Raises
    ------
    UsageError
        Bad query, datetime or bbox.
    InputError
        An unreachable or unreadable source; no matching items (the filters are named).
    """
    collections = [collection] if isinstance(collection, str) else list(collection or [])
    queries = [parse_query(q) for q in query]
    window = parse_datetime(datetime) if datetime else (None, None)
    box = tuple(float(v) for v in bbox) if bbox is not None else None
    if box is not None and (len(box) != 4 or box[0] > box[2] or box[1] > box[3]):
        raise UsageError(f"--stac-bbox {bbox!r} is not minx,miny,maxx,maxy", "give the box in longitude/latitude, e.g. --stac-bbox 10,45,12,47")
    doc, base = _load(source)
    items = _api_items(source, collections, datetime, box, queries) if _is_api(doc) else _static_items(doc, base, source)
    kept = [
        (it, b) for it, b in items
        if (not collections or it.get("collection") in collections)
        and _in_window(it, window) and _in_box(it, box) and all(q.holds(it) for q in queries)
    ]  # fmt: skip
    if not kept:
        asked = [f"collection {', '.join(collections)}"] if collections else []
        asked += [f"datetime {datetime}"] if datetime else []
        asked += [f"bbox {','.join(f'{v:g}' for v in box)}"] if box else []
        asked += [f"query {q.text}" for q in queries]
        raise InputError(f"no STAC items in {source!r} match {'; '.join(asked) or 'anything'} ({len(items)} item(s) looked at)",
                         "widen the filters (--datetime, --stac-bbox in lon/lat, --query, --collection)")  # fmt: skip
    return Selection(source, tuple(kept))


def asset_hits(selection: Selection, asset: str, hint: str) -> list[StacHit]:
    """The asset ``asset`` of every selected item, in date order (then item id).

    Raises
    ------
    InputError
        No selected item has the asset (the assets they have are named), or one item
        lacks it (the item and its assets are named); an item without a date.
    """

    def has(it: dict[str, Any]) -> bool:
        a = (it.get("assets") or {}).get(asset)
        return isinstance(a, dict) and bool(a.get("href"))

    if not any(has(it) for it, _ in selection.items):
        known = sorted({k for it, _ in selection.items for k in (it.get("assets") or {})})
        raise InputError(f"no selected STAC item of {selection.source!r} has an asset {asset!r} (their assets: {', '.join(known) or 'none'})",
                         hint)  # fmt: skip
    hits = []
    for it, item_base in selection.items:
        assets = it.get("assets") or {}
        item_id = str(it.get("id"))
        if not has(it):
            have = ", ".join(sorted(assets)) or "none"
            raise InputError(f"STAC item {item_id!r} has no asset {asset!r} (its assets: {have})",
                             f"{hint}, or narrow the selection (--query 'id!={item_id}')")  # fmt: skip
        date = _item_date(it)
        if date is None:
            raise InputError(f"STAC item {item_id!r} has no datetime (nor start_datetime)", "a dated stack needs a date per item")
        hits.append(StacHit(item_id, date, _absolute(str(assets[asset]["href"]), _self_href(it) or item_base)))
    hits.sort(key=lambda h: (h.date, h.item_id))
    return hits


# --------------------------------------------------------------------------- reading


def _load(source: str) -> tuple[dict[str, Any], str]:
    """The JSON document at ``source`` (a URL or a file) and the base for its relative links."""
    if _is_url(source):
        return _fetch_json(source), source
    p = Path(source[7:] if source.startswith("file://") else source)
    if not p.is_file():
        raise InputError(f"STAC source {source!r} does not exist", "give a STAC API URL, or a catalog, collection or item collection JSON file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"STAC source {source!r} is not readable JSON ({exc})", "give a STAC catalog, collection or item collection JSON file") from None
    if not isinstance(doc, dict):
        raise InputError(f"STAC source {source!r} is not a STAC object", "give a STAC catalog, collection or item collection JSON file")
    return doc, str(p.resolve())


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _fetch_json(url: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"User-Agent": "tilewise", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise InputError(f"STAC source {url!r} answered HTTP {exc.code}", "check the URL of the STAC API or catalog") from None
    except (urllib.error.URLError, OSError) as exc:
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise InputError(f"cannot reach STAC source {url!r} ({why})", "check the URL, the network and any proxy (https_proxy)") from None
    except ValueError as exc:
        raise InputError(f"STAC source {url!r} did not answer JSON ({exc})", "check the URL points at a STAC API or a catalog JSON") from None
    if not isinstance(data, dict):
        raise InputError(f"STAC source {url!r} is not a STAC object", "check the URL points at a STAC API or a catalog JSON")
    return data


def _is_api(doc: dict[str, Any]) -> bool:
    conforms = [str(c) for c in doc.get("conformsTo") or []]
    if any("item-search" in c for c in conforms):
        return True
    return any(isinstance(link, dict) and link.get("rel") == "search" for link in doc.get("links") or [])


def _api_items(url: str, collections: list[str], datetime: str | None, box: tuple[float, ...] | None,
               queries: list[Query]) -> list[tuple[dict[str, Any], str]]:  # fmt: skip
    """Search a STAC API with pystac-client; the items as JSON dicts."""
    try:
        from pystac_client import Client
        from pystac_client.conformance import ConformanceClasses
        from pystac_client.exceptions import APIError
    except ImportError:
        raise UsageError("searching a STAC API needs pystac-client, which is not installed", "pip install pystac-client") from None
    try:
        client = Client.open(url)
        kw: dict[str, Any] = {"limit": 100}
        if collections:
            kw["collections"] = collections
        if datetime:
            kw["datetime"] = api_datetime(*parse_datetime(datetime))
        if box is not None:
            kw["bbox"] = list(box)
        if queries and client.conforms_to(ConformanceClasses.QUERY):
            q: dict[str, dict[str, Any]] = {}
            for qu in queries:
                q.setdefault(qu.prop, {})[_OPS[qu.op][1]] = qu.value
            kw["query"] = q
        elif queries and client.conforms_to(ConformanceClasses.FILTER):
            args = [{"op": _OPS[qu.op][2], "args": [{"property": qu.prop}, qu.value]} for qu in queries]
            kw["filter"] = args[0] if len(args) == 1 else {"op": "and", "args": args}
            kw["filter_lang"] = "cql2-json"
        search = client.search(**kw)
        return [(item, url) for item in search.items_as_dicts()]
    except APIError as exc:
        first = (str(exc).strip().splitlines() or ["no detail"])[0][:200]
        raise InputError(f"STAC API {url!r} refused the search ({first})", "check the filters against what the API supports") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(f"cannot reach STAC API {url!r} ({exc})", "check the URL, the network and any proxy (https_proxy)") from None
    except Exception as exc:  # requests' errors (ConnectionError, Timeout) and pystac-client's own
        if type(exc).__module__.startswith(("requests", "urllib3", "pystac")):
            raise InputError(f"cannot search STAC API {url!r} ({type(exc).__name__}: {str(exc)[:200]})",
                             "check the URL, the network and any proxy (https_proxy)") from None  # fmt: skip
        raise


def _static_items(doc: dict[str, Any], base: str, source: str) -> list[tuple[dict[str, Any], str]]:
    """The items of a static catalog, collection, item collection or single item, each with the href it was read from."""
    kind = doc.get("type")
    if kind == "FeatureCollection":
        return [(f, base) for f in doc.get("features") or [] if isinstance(f, dict)]
    if kind == "Feature":
        return [(doc, base)]
    if kind not in ("Catalog", "Collection") and "links" not in doc:
        raise InputError(f"STAC source {source!r} is not a STAC catalog, collection or item collection (type {kind!r})",
                         "give a STAC API URL, or a catalog, collection or item collection JSON")  # fmt: skip
    import pystac

    try:
        cat = pystac.read_file(base)
        if not isinstance(cat, pystac.Catalog):
            raise InputError(f"STAC source {source!r} is not a catalog", "give a catalog, collection or item collection JSON")
        out = []
        for item in cat.get_items(recursive=True):
            d = item.to_dict(include_self_link=True, transform_hrefs=False)
            if item.collection_id and not d.get("collection"):
                d["collection"] = item.collection_id
            for key, a in item.assets.items():  # hrefs made absolute against the item's location
                d["assets"][key]["href"] = a.get_absolute_href() or a.href
            out.append((d, item.get_self_href() or base))
        return out
    except InputError:
        raise
    except Exception as exc:  # pystac raises several types for broken catalogs (missing child files, bad JSON)
        raise InputError(f"cannot read STAC catalog {source!r} ({type(exc).__name__}: {str(exc)[:200]})",
                         "check the catalog's links point at existing files") from None  # fmt: skip


def _self_href(item: dict[str, Any]) -> str | None:
    for link in item.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    return None


def _absolute(href: str, base: str) -> str:
    """``href`` made absolute against ``base`` (a URL or a file path); ``file://`` becomes a path."""
    if href.startswith("file://"):
        return urllib.parse.unquote(href[7:])
    if is_remote(href) or href.startswith("/vsi") or os.path.isabs(href):
        return href
    if _is_url(base):
        return urllib.parse.urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


# --------------------------------------------------------------------------- local filters


def _to_naive(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    from tilewise.sources.stack import parse_iso

    return parse_iso(str(value))


def _item_date(item: dict[str, Any]) -> dt.datetime | None:
    props = item.get("properties") or {}
    return _to_naive(props.get("datetime")) or _to_naive(props.get("start_datetime"))


def _in_window(item: dict[str, Any], window: tuple[dt.datetime | None, dt.datetime | None]) -> bool:
    lo, hi = window
    if lo is None and hi is None:
        return True
    props = item.get("properties") or {}
    start = _to_naive(props.get("datetime")) or _to_naive(props.get("start_datetime"))
    end = _to_naive(props.get("datetime")) or _to_naive(props.get("end_datetime")) or start
    if start is None or end is None:
        return False
    return (lo is None or end >= lo) and (hi is None or start < hi)


def _in_box(item: dict[str, Any], box: tuple[float, ...] | None) -> bool:
    if box is None:
        return True
    b = item.get("bbox")
    if not isinstance(b, list | tuple) or len(b) not in (4, 6):
        return False
    minx, miny, maxx, maxy = (b[0], b[1], b[2], b[3]) if len(b) == 4 else (b[0], b[1], b[3], b[4])
    return bool(minx <= box[2] and maxx >= box[0] and miny <= box[3] and maxy >= box[1])
