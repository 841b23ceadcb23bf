"""Intake 2 catalogs of cdwdata artifacts: build, open, list, search and read.

A catalog is one YAML file (intake 2 format, ``version: 2``) with one entry per artifact:

* every zarr store (a directory ending in ``.zarr``) becomes an
  :class:`intake.readers.readers.XArrayDatasetReader` of a
  :class:`intake.readers.datatypes.Zarr` whose URL is relative to the YAML file
  (``{CATALOG_DIR}/...``), so the catalog folder can be moved or copied together with the data.
  Reading opens the store lazily (dask-backed, ``chunks={}``, zarr v3 without consolidated
  metadata) and drops the store's private checkpoint variables;
* every model card (``<name>.json`` with ``"format": "cdwdata-model/..."``, e.g. the shipped
  models in ``cdwdata/ml/models``) becomes an
  :class:`intake.readers.readers.FileTextReader` of a
  :class:`intake.readers.datatypes.JSONFile`; :func:`read` returns the card as a dict (load
  the force field itself with ``cdwdata.ml.load_model(catalog.path_of(cat, name))``).

Every entry carries the metadata ``kind`` (one of :data:`KINDS`), ``T`` and ``f`` (lists of
float), ``L``, ``runs``, ``steps`` (int or null), ``model`` (str, "" for ED runs) and
``description``, plus a few extras (``path``, ``forcefield``, ``variables``, ``created``,
``complete``, ...), taken from the store's attrs and coordinates or from the model card.

Typical use::

    from cdwdata import catalog
    catalog.build(["data", "cdwdata/ml/models"], "catalogs/cdwdata.yaml")
    cat = catalog.open()                           # the shipped catalog
    hits = catalog.search(cat, kind="trajectory", T=0.1)
    ds = catalog.read(cat, next(iter(hits)))      # lazy xarray.Dataset

Pitfalls of intake 2.0.9 handled here: ``list(cat)`` is empty after entries are assigned, so
entries are enumerated through ``cat.entries``; ``cat.search`` does not look at metadata, so
:func:`search` filters ``entry.metadata`` itself. YAML is parsed with ``yaml.safe_load`` and
checked before intake sees it; problems raise :class:`~cdwdata.errors.CatalogError` with a
one-line message naming the file or the entry.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cdwdata import schema
from cdwdata.errors import CatalogError

#: Kinds of artifacts an entry can describe.
KINDS = ("training-set", "trajectory", "order-parameter", "structure-factor", "domain-size",
         "growth-exponents", "model")
#: Metadata keys every entry carries.
REQUIRED_METADATA = ("kind", "T", "f", "L", "runs", "steps", "model", "description")
#: Environment variable naming the default catalog file.
ENV_VAR = "CDW_CATALOG"
#: File name of the shipped catalog.
DEFAULT_FILE = "cdwdata.yaml"
MODEL_CARD_FORMAT = "cdwdata-model/"

_STORE_SUFFIX = ".zarr"
_PRIVATE_PREFIX = "ckpt_"  # store-internal checkpoint variables, never exposed by a reader
_DATA_REF = re.compile(r"\{data\(([^)]*)\)\}")


# --- locating catalogs ---------------------------------------------------------------------------
def default_locations() -> list[Path]:
    """Where :func:`open` looks for a catalog when given no path, in order.

    1. ``$CDW_CATALOG`` (if set);
    2. ``catalogs/cdwdata.yaml`` next to the package (a source checkout or editable install);
    3. ``cdwdata/catalog_data/cdwdata.yaml`` inside the installed package.
    """
    here = Path(__file__).resolve().parent
    out = []
    if os.environ.get(ENV_VAR):
        out.append(Path(os.environ[ENV_VAR]).expanduser())
    out.append(here.parent / "catalogs" / DEFAULT_FILE)
    out.append(here / "catalog_data" / DEFAULT_FILE)
    return out


def default_path() -> Path:
    """The catalog :func:`open` uses by default; CatalogError if there is none."""
    places = default_locations()
    for p in places:
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in places)
    raise CatalogError(
        f"no cdwdata catalog found (looked in {looked}): build one with "
        f"`cdw catalog build DATA_DIRS --out catalogs/{DEFAULT_FILE}`, set ${ENV_VAR}, "
        "or pass a path"
    )


# --- scanning ----------------------------------------------------------------------------------
def _is_model_card(path: Path) -> bool:
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and str(card.get("format", "")).startswith(MODEL_CARD_FORMAT)


def find_artifacts(paths_or_dirs: Iterable[str | os.PathLike] | str | os.PathLike
                   ) -> tuple[list[Path], list[Path]]:
    """Stores and model cards under ``paths_or_dirs``.

    A path ending in ``.zarr`` is a store; a ``.json`` file is a model card if its ``format``
    says so; any other directory is searched recursively (hidden directories skipped; the
    inside of a store is never searched). Returns ``(stores, cards)``, sorted, absolute.
    Raises CatalogError if a given path does not exist.
    """
    if isinstance(paths_or_dirs, (str, os.PathLike)):
        paths_or_dirs = [paths_or_dirs]
    stores: set[Path] = set()
    cards: set[Path] = set()
    for given in paths_or_dirs:
        root = Path(given).expanduser().resolve()
        if not root.exists():
            raise CatalogError(f"{given}: no such file or directory")
        if root.name.endswith(_STORE_SUFFIX) and root.is_dir():
            stores.add(root)
            continue
        if root.is_file():
            if _is_model_card(root):
                cards.add(root)
            else:
                raise CatalogError(f"{given}: neither a zarr store (*.zarr) nor a model card")
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            keep = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                if d.endswith(_STORE_SUFFIX):
                    stores.add(Path(dirpath, d))
                else:
                    keep.append(d)
            dirnames[:] = keep
            cards.update(Path(dirpath, f) for f in filenames if _is_model_card(Path(dirpath, f)))
    return sorted(stores), sorted(cards)


# --- metadata ----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> plain Python (YAML-safe)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _floats(value: Any) -> list[float]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)]


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _infer_kind(ds) -> str:
    kind = ds.attrs.get("kind")
    if isinstance(kind, str) and kind:  # the store says what it is (also kinds added later)
        return kind
    names = set(ds.data_vars)
    if "alpha" in names:
        return "growth-exponents"
    if schema.S in names:
        return "structure-factor"
    if schema.PHI in names:
        return "order-parameter"
    if schema.LDOM in names:
        return "domain-size"
    if schema.SAMPLE in ds.dims:
        return "training-set"
    if schema.STEP in ds.dims and schema.X in ds.dims:
        return "trajectory"
    raise CatalogError(
        f"cannot tell what kind of data this is (attrs kind={kind!r}, variables {sorted(names)})"
    )


def _coord_or_attr(ds, dim: str, *attr_keys: str) -> list[float]:
    if dim in ds.coords:
        return sorted(set(_floats(_plain(ds[dim].values.ravel()))))
    for key in attr_keys:
        if ds.attrs.get(key) is not None:
            return _floats(_plain(ds.attrs[key]))
    return []


def _describe(kind: str, meta: dict[str, Any]) -> str:
    what = {
        "trajectory": "Langevin thermal-quench trajectories",
        "training-set": "ED training set (random + quench snapshots)",
        "order-parameter": "CDW order parameter phi",
        "structure-factor": "structure factors S(k,t) / S(q,t)",
        "domain-size": "domain sizes L(t)",
        "growth-exponents": "growth exponents of L(t) ~ t^alpha",
        "model": "ML force field",
    }.get(kind, kind)
    ff = meta.get("model") or meta.get("forcefield") or ""
    ff = ff.upper() if ff in ("ed", "tdgl") else ff
    if kind in ("training-set", "model") or not ff:
        parts = [what]
    elif kind == "trajectory":
        parts = [f"{ff} {what}"]
    else:
        parts = [f"{what} of {ff} runs"]
    if meta.get("L") is not None:
        parts.append(f"L={meta['L']}")
    for key in ("T", "f"):
        if meta.get(key):
            parts.append(f"{key}=" + ",".join(f"{v:g}" for v in meta[key]))
    if meta.get("runs") is not None:
        parts.append(f"{meta['runs']} runs")
    if meta.get("steps") is not None:
        parts.append(f"{meta['steps']} steps")
    return ", ".join(parts)


def store_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Catalog metadata of the store at ``path`` (see the module docstring).

    Raises CatalogError if ``path`` is not a readable store of a known kind.
    """
    from cdwdata.errors import StoreError
    from cdwdata.store import open_dataset

    try:
        ds = open_dataset(path)
    except StoreError as err:
        raise CatalogError(f"{path}: {err}") from err
    try:
        kind = _infer_kind(ds)
    except CatalogError as err:
        raise CatalogError(f"{path}: {err}") from err
    a = ds.attrs
    training = kind == "training-set"
    meta: dict[str, Any] = {
        "kind": kind,
        "T": _coord_or_attr(ds, schema.T, "electron_T", "temperatures", "T"),
        "f": _coord_or_attr(ds, schema.F_FILL, "fillings", "f"),
        "L": _int_or_none(a.get("L", ds.sizes.get(schema.X))),
        "runs": _int_or_none(a.get("quench_runs") if training
                             else a.get("runs", ds.sizes.get(schema.RUN))),
        "steps": _int_or_none(a.get("quench_steps") if training else a.get("steps")),
        "model": str(a.get("model") or ""),
        "forcefield": str(a.get("forcefield", "ed" if training else "")),
    }
    if meta["steps"] is None and schema.STEP in ds.coords and ds.sizes.get(schema.STEP):
        meta["steps"] = int(ds[schema.STEP].values.max())
    if schema.SAMPLE in ds.dims:
        meta["samples"] = int(ds.sizes[schema.SAMPLE])
    for marker in (schema.FRAMES_DONE, "sample_done"):
        if marker in ds.data_vars:
            total = ds.sizes.get(schema.STEP, 1) if marker == schema.FRAMES_DONE else 1
            meta["complete"] = bool((ds[marker].values >= total).all())
    meta["variables"] = sorted(str(v) for v in ds.data_vars)
    meta["dims"] = {str(k): int(v) for k, v in ds.sizes.items()}
    for key in ("created", "cdwdata_version", "command"):
        if key in a:
            meta[key] = str(a[key])
    meta["description"] = str(a.get("description") or _describe(kind, meta))
    return meta


def model_metadata(card_path: str | os.PathLike) -> dict[str, Any]:
    """Catalog metadata of the model whose card (JSON) is at ``card_path``."""
    try:
        card = json.loads(Path(card_path).read_text())
    except (OSError, ValueError) as err:
        raise CatalogError(f"{card_path}: not a readable model card: {err}") from err
    ts = card.get("trainset") or {}
    name = str(card.get("name") or Path(card_path).stem)
    meta: dict[str, Any] = {
        "kind": "model",
        "T": _floats(card.get("electron_T")),
        "f": _floats(card.get("filling")),
        "L": _int_or_none(ts.get("L")),
        "runs": None,
        "steps": None,
        "model": name,
        "forcefield": name,
        "architecture": str(card.get("kind", "")),
    }
    if ts.get("n_samples") is not None:
        meta["samples"] = int(ts["n_samples"])
    test = (card.get("metrics") or {}).get("test") or {}
    for key in ("rmse", "mae", "r2"):
        if isinstance(test.get(key), (int, float)):
            meta[f"test_{key}"] = float(test[key])
    for key in ("created", "code_version"):
        if key in card:
            meta[key] = str(card[key])
    meta["description"] = str(card.get("description") or _describe("model", meta))
    return meta


# --- building ----------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _base_name(path: Path) -> str:
    return _safe(path.name.removesuffix(_STORE_SUFFIX).removesuffix(".json")) or "entry"


def _entry_name(path: Path, taken: set[str], ambiguous: frozenset[str] = frozenset()) -> str:
    """Entry name of a store: its file name, prefixed by its folder's name when several of
    the catalogued stores share that file name (``T-scan-domain-size``, ``f-scan-...``)."""
    base = _base_name(path)
    name = base
    if name in taken or base in ambiguous:
        name = f"{_safe(path.parent.name)}-{base}"
    i = 2
    while name in taken:
        name = f"{base}-{i}"
        i += 1
    taken.add(name)
    return name


def _relative_path(target: Path, catalog_dir: Path) -> str:
    """``target`` relative to the catalog folder (absolute if on another drive)."""
    try:
        return Path(os.path.relpath(target, catalog_dir)).as_posix()
    except ValueError:  # another drive (Windows)
        return target.as_posix()


def _relative_url(target: Path, catalog_dir: Path) -> str:
    rel = _relative_path(target, catalog_dir)
    return rel if Path(rel).is_absolute() else "{CATALOG_DIR}/" + rel


def _zarr_format(path: Path) -> int:
    return 3 if (path / "zarr.json").exists() else 2


def _store_reader(path: Path, catalog_dir: Path, meta: dict[str, Any]):
    from intake.readers.datatypes import Zarr
    from intake.readers.readers import XArrayDatasetReader

    private = sorted(p.name for p in path.iterdir() if p.name.startswith(_PRIVATE_PREFIX))
    kwargs: dict[str, Any] = {"chunks": {}, "consolidated": False,
                              "zarr_format": _zarr_format(path)}
    if private:
        kwargs["drop_variables"] = private
    return XArrayDatasetReader(Zarr(url=_relative_url(path, catalog_dir)), metadata=meta,
                               **kwargs)


def _model_reader(card: Path, catalog_dir: Path, meta: dict[str, Any]):
    from intake.readers.datatypes import JSONFile
    from intake.readers.readers import FileTextReader

    return FileTextReader(JSONFile(url=_relative_url(card, catalog_dir)), metadata=meta)


def build(paths_or_dirs: Iterable[str | os.PathLike] | str | os.PathLike,
          out_yaml: str | os.PathLike, name: str = "cdwdata",
          description: str | None = None):
    """Scan stores and model cards and write an intake 2 catalog YAML.

    Parameters
    ----------
    paths_or_dirs : path or list of paths
        Stores (``*.zarr``), model cards (``*.json``) or directories searched recursively.
    out_yaml : path
        Catalog file to write (its folder is created). URLs in it are relative to its folder.
    name : str
        Catalog name (``metadata.name``).
    description : str, optional
        Catalog description.

    Returns
    -------
    intake.readers.entry.Catalog
        The catalog as written, reopened from the file (so its relative paths resolve).

    Raises
    ------
    CatalogError
        A given path is missing or unreadable, or nothing was found. Stores found while
        searching a directory that cannot be read are skipped with a warning.
    """
    import intake

    if isinstance(paths_or_dirs, (str, os.PathLike)):
        paths_or_dirs = [paths_or_dirs]
    given = {Path(p).expanduser().resolve() for p in paths_or_dirs}
    stores, cards = find_artifacts(paths_or_dirs)
    out = Path(out_yaml).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    cat = intake.entry.Catalog(metadata={
        "name": name,
        "description": description or f"cdwdata catalog {name}: stores and models",
        "cdwdata_catalog": 1,
    })
    taken: set[str] = set()
    bases = [_base_name(path) for path in stores]
    ambiguous = frozenset(b for b in bases if bases.count(b) > 1)
    found = 0
    for path in stores:
        try:
            meta = store_metadata(path)
        except CatalogError as err:
            if path in given:
                raise
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
            continue
        meta["path"] = _relative_path(path, out.parent)
        cat[_entry_name(path, taken, ambiguous)] = _store_reader(path, out.parent, meta)
        found += 1
    for card in cards:
        meta = model_metadata(card)
        meta["path"] = _relative_path(card, out.parent)
        entry = meta["model"] if meta["model"] not in taken else _entry_name(card, taken)
        taken.add(entry)
        cat[entry] = _model_reader(card, out.parent, meta)
        found += 1
    if not found:
        looked = ", ".join(str(p) for p in paths_or_dirs)
        raise CatalogError(f"no stores (*.zarr) or model cards found in {looked}")
    tmp = out.with_name(out.name + ".tmp")
    cat.to_yaml_file(str(tmp))
    os.replace(tmp, out)
    return open(out)


# --- opening -----------------------------------------------------------------------------------
def _validate(doc: Any, where: str) -> None:
    if not isinstance(doc, dict) or doc.get("version") != 2:
        raise CatalogError(f"{where}: not an intake 2 catalog (expected a mapping with "
                           "'version: 2'); rebuild it with `cdw catalog build`")
    for key in ("entries", "data", "user_parameters", "aliases", "metadata"):
        if not isinstance(doc.get(key), dict):
            raise CatalogError(f"{where}: '{key}' must be a mapping, got "
                               f"{type(doc.get(key)).__name__}")
    data_keys = set(doc["data"])
    for ename, entry in doc["entries"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("reader"), str):
            raise CatalogError(f"{where}: entry {ename!r} is malformed (no reader)")
        if not isinstance(entry.get("kwargs", {}), dict):
            raise CatalogError(f"{where}: entry {ename!r} has malformed kwargs")
        if not isinstance(entry.get("metadata", {}), dict):
            raise CatalogError(f"{where}: entry {ename!r} has malformed metadata")
        for ref in _DATA_REF.findall(json.dumps(entry.get("kwargs", {}))):
            if ref not in data_keys and ref not in doc["entries"]:
                raise CatalogError(f"{where}: entry {ename!r} refers to data block {ref!r}, "
                                   "which the catalog does not define")


def open(path: str | os.PathLike | None = None):
    """Open a catalog YAML (default: the shipped catalog, see :func:`default_locations`).

    Returns
    -------
    intake.readers.entry.Catalog

    Raises
    ------
    CatalogError
        No catalog found, the file is unreadable, not YAML, or not a well-formed intake 2
        catalog. (An entry pointing at a missing store is reported by :func:`read`.)
    """
    import intake
    import yaml

    p = default_path() if path is None else Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise CatalogError(f"{p}: catalog file does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(f"{p}: cannot read catalog: {err}") from err
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CatalogError(f"{p}: malformed YAML{at}: {problem}") from None
    _validate(doc, str(p))
    try:
        return intake.from_yaml_file(str(p.resolve()))
    except Exception as err:  # intake raises assorted types for structural problems
        raise CatalogError(f"{p}: intake cannot load the catalog: {err}") from err


def _as_catalog(cat):
    if isinstance(cat, (str, os.PathLike)) or cat is None:
        return open(cat)
    return cat


def _where(cat) -> str:
    return str(getattr(cat, "user_parameters", {}).get("CATALOG_PATH", "catalog"))


# --- listing and searching -----------------------------------------------------------------------
def entries(cat=None) -> list[str]:
    """Names of the catalog's entries, sorted (``cat``: Catalog, path, or None = default)."""
    cat = _as_catalog(cat)
    return sorted(cat.entries)


def metadata(cat, name: str) -> dict[str, Any]:
    """Metadata of entry ``name``."""
    cat = _as_catalog(cat)
    if name not in cat.entries:
        raise CatalogError(f"{_where(cat)}: no entry {name!r} (entries: "
                           f"{', '.join(sorted(cat.entries)) or 'none'})")
    return dict(cat.entries[name].metadata)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def matches(value: Any, wanted: Any) -> bool:
    """Does one metadata ``value`` satisfy the query ``wanted``?

    * ``wanted`` callable: ``wanted(value)`` is truthy;
    * ``wanted`` a list/tuple/set: any of its elements matches (OR);
    * ``value`` a list (e.g. ``T: [0.1, 0.2]``): ``wanted`` is one of its elements, or equal to
      the whole list;
    * otherwise equality (numbers to a relative 1e-9).
    """
    if callable(wanted):
        return bool(wanted(value))
    if isinstance(wanted, (list, tuple, set, frozenset)):
        if isinstance(value, list) and len(value) == len(wanted) and \
                all(_same(v, w) for v, w in zip(value, wanted, strict=True)):
            return True
        return any(matches(value, w) for w in wanted)
    if isinstance(value, list):
        return any(_same(v, wanted) for v in value)
    return _same(value, wanted)


def search(cat=None, **query: Any) -> dict[str, Any]:
    """Entries whose metadata satisfy every ``key=value`` of ``query`` (see :func:`matches`).

    ``search(cat, kind="trajectory", T=0.1, f=[0.4, 0.5])``. An entry without a queried key
    never matches. Returns ``{name: entry description}`` sorted by name; the metadata dict is
    ``entry.metadata`` and ``read(cat, name)`` loads it.
    """
    cat = _as_catalog(cat)
    out = {}
    for name in sorted(cat.entries):
        meta = cat.entries[name].metadata or {}
        if all(key in meta and matches(meta[key], want) for key, want in query.items()):
            out[name] = cat.entries[name]
    return out


# --- reading -----------------------------------------------------------------------------------
def _data_url(reader) -> str | None:
    data = getattr(reader, "data", None)
    url = getattr(data, "url", None)
    return url if isinstance(url, str) else None


def _local(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(url[len("file://"):])
    if "://" in url:
        return None
    return Path(url)


def path_of(cat, name: str) -> Path:
    """Absolute path of the store or model card of entry ``name``."""
    cat = _as_catalog(cat)
    rel = metadata(cat, name).get("path")
    if not rel:
        raise CatalogError(f"{_where(cat)}: entry {name!r} has no 'path' metadata")
    p = Path(rel)
    if p.is_absolute():
        return p
    base = Path(str(getattr(cat, "user_parameters", {}).get("CATALOG_PATH", "."))).parent
    return (base / p).resolve()


def read(cat, name: str):
    """Load entry ``name``: a lazy (dask-backed) ``xarray.Dataset`` for stores, a dict for
    model cards.

    Raises CatalogError naming the catalog and the entry if the entry is unknown, points at a
    store that is not there, or cannot be read.
    """
    cat = _as_catalog(cat)
    meta = metadata(cat, name)
    where = _where(cat)
    try:
        reader = cat[name]
    except Exception as err:
        raise CatalogError(f"{where}: entry {name!r} cannot be set up: {err}") from err
    url = _data_url(reader)
    local = _local(url) if url else None
    if local is not None and not local.exists():
        raise CatalogError(f"{where}: entry {name!r} points at {local}, which does not exist "
                           "(moved or deleted? rebuild with `cdw catalog build`)")
    try:
        out = reader.read()
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CatalogError(f"{where}: entry {name!r} ({url}) cannot be read: {first}") from err
    if meta.get("kind") == "model" and isinstance(out, str):
        try:
            return json.loads(out)
        except ValueError as err:
            raise CatalogError(f"{where}: model card of entry {name!r} is not JSON: {err}") \
                from err
    return out


def table(cat=None, entries_: Mapping[str, Any] | None = None,
          columns: tuple[str, ...] = ("kind", "T", "f", "L", "runs", "steps", "model")) -> str:
    """Plain-text table of entries (all, or the ``search`` result ``entries_``)."""
    cat = _as_catalog(cat) if entries_ is None else cat
    items = entries_ if entries_ is not None else {n: cat.entries[n] for n in sorted(cat.entries)}

    def fmt(v: Any) -> str:
        if isinstance(v, list):
            return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        return "" if v is None else str(v)

    rows = [("name", *columns)]
    rows += [(n, *(fmt((e.metadata or {}).get(c)) for c in columns)) for n, e in items.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)

