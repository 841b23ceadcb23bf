"""Intake 2 catalogs of cdwdata artifacts: build, open, list, search and read.

A catalog is one YAML file (intake 2 format, ``version: 2``) with one entry per artifact:

* every zarr store (a directory ending in ``.zarr``) becomes an
  :class:`intake.readers.readers.XArrayDatasetReader` of a
  :class:`intake.readers.datatypes.Zarr` whose URL is relative to the YAML file
  (``{CATALOG_DIR}/...``), so the catalog folder can be moved or copied together with the data.
  Reading opens the store lazily (dask-backed, ``chunks={}``, zarr v3 without consolidated
  metadata) and drops the store's private checkpoint variables;
* every model card (``<name>.json`` with ``"format": "cdwdata-model/..."``, e.g. the shipped
  model in ``cdwdata/ml/models``) becomes a :class:`ModelCardReader` of a
  :class:`intake.readers.datatypes.JSONFile`: reading it gives the card as a dict (load the
  force field itself with ``cdwdata.ml.load_model(catalog.path_of(cat, name), f=..., T=...)``).

Entry names are stable: a store is named after its path relative to the folder that was
scanned (``T-scan/domain-size.zarr`` -> ``T-scan-domain-size``), so adding stores elsewhere
never renames an entry; a model card is named after the model (``holstein-gc-v12``).

Every entry carries the metadata ``kind`` (one of :data:`KINDS`), ``T`` and ``f`` (lists of
float), ``L``, ``runs``, ``steps`` (int or null), ``model`` and ``description``, plus a few
extras (``path``, ``forcefield``, ``models``, ``variables``, ``created``, ``complete``, ...),
taken from the store's attrs and coordinates or from the model card. ``model`` holds resolved
model names: ``""`` for ED runs, the name (``"holstein-f0.5"``) when the runs used one model,
a list of names (in the order of ``f``) when they used one per filling; a model given as a
path is named by its file stem.

Model entries (``kind: model``) also carry ``model_kind`` (the card's kind: ``force`` for a
canonical model trained at one filling and temperature, ``density`` for a grand-canonical
one) and ``grand_canonical``. A grand-canonical model covers ranges: its ``f`` and ``T`` hold
the ends of its trained filling and temperature ranges, ``f_range`` / ``T_range`` (and
``mu_range``) mark them as ranges, so :func:`search` matches any value in between and
:func:`table` shows ``lo..hi``; ``validation_force_rmse`` / ``validation_force_mae`` give its
validation errors (a canonical model has ``test_rmse`` etc. instead).

Typical use (the shipped catalog; ``cdw catalog build`` writes new ones)::

    >>> from cdwdata import catalog
    >>> cat = catalog.open()                               # the shipped catalog
    >>> hits = catalog.search(cat, kind="domain-size", T=0.2, L=200)  # an intake Catalog
    >>> list(hits)
    ['paper-200-T-scan-domain-size']
    >>> name = list(hits)[0]
    >>> hits[name].metadata["model"]
    'holstein-gc-v5'
    >>> ds = hits[name].read()                             # lazy xarray.Dataset
    >>> ds["L"].dims
    ('T', 'f', 'run', 'step')
    >>> hits = catalog.search(cat, kind="model", f=0.4)   # the models that run at f = 0.4
    >>> sorted(hits)
    ['holstein-gc-v10', 'holstein-gc-v11', 'holstein-gc-v12', 'holstein-gc-v5', 'holstein-gc-v9']
    >>> card = hits["holstein-gc-v12"].read()              # a model card, as a dict
    >>> card["name"], card["kind"]
    ('holstein-gc-v12', 'levels')

The shipped names ``holstein-f0.5``, ``holstein-f0.4`` and ``holstein-f0.3`` are names for
the default grand-canonical model (``holstein-gc-v12``) at a filling (``cdwdata.ml.load_model("holstein-f0.4")`` loads
it at f = 0.4), so they have no entries of their own; the published results still name the
earlier per-filling models they were made with.

Pitfalls of intake 2.0.9 handled here: entries assigned to an intake Catalog are not listed by
``list(cat)`` (it iterates ``cat.aliases``), so every catalog this module writes or opens
names each entry in ``aliases`` and :class:`CdwCatalog` iterates over entry names;
``cat.search`` does not look at metadata, so :func:`search` filters ``entry.metadata`` itself
and returns a sub-catalog (as intake-esm does). YAML is parsed with ``yaml.safe_load`` and
checked (including an allow-list of reader and data classes, since intake imports whatever
classes a file names) before intake sees it; problems raise
:class:`~cdwdata.errors.CatalogError` with a one-line message naming the file or the entry.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
import intake
import yaml
from intake.readers import datatypes
from intake.readers.entry import Catalog
from intake.readers.readers import FileReader, FileTextReader, XArrayDatasetReader

from cdwdata import schema
from cdwdata.errors import CatalogError
from cdwdata.ml.options import GC_KINDS

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
_DATA_REF = re.compile(r"\{data\(([^)]*)\)\}")
_PACKAGE_DIR = Path(__file__).resolve().parent


# --- intake classes ----------------------------------------------------------------------------
class ModelCardReader(FileReader):
    """Intake reader of a cdwdata model card (a JSON file): ``read()`` returns a dict."""

    output_instance = "builtins:dict"
    implements = {datatypes.JSONFile}

    def _read(self, data, **kwargs):
        with fsspec.open(data.url, mode="rt", **(data.storage_options or {})) as f:
            return json.load(f)


class CdwCatalog(Catalog):
    """An intake Catalog that lists its entries: ``list(cat)``, ``len(cat)``, ``name in cat``
    and ``cat.keys()`` give entry names (sorted), ``cat[name]`` the reader and
    ``cat[name].read()`` the data; ``cat.items()`` / ``cat.values()`` give the readers.

    :func:`open` and :func:`search` return one. (intake 2.0.9's own Catalog iterates its
    ``aliases``, which are empty after entries are assigned.)
    """

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self) -> list[str]:
        return sorted(self.entries)

    def values(self) -> list:
        return [self[name] for name in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self[name]) for name in self.keys()]


#: Classes an entry's ``reader`` may name (intake imports it when the entry is read).
ALLOWED_READERS = frozenset({
    XArrayDatasetReader.qname(),
    ModelCardReader.qname(),
    FileTextReader.qname(),  # model cards in catalogs written before ModelCardReader
})
#: Classes a data block's ``datatype`` may name (intake imports it when the catalog opens).
ALLOWED_DATATYPES = frozenset({datatypes.Zarr.qname(), datatypes.JSONFile.qname()})
_ALLOWED_CLS_PREFIX = "intake.readers.user_parameters:"


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
        f"`cdw catalog build DATA_DIRS --out catalog.yaml`, then set ${ENV_VAR} to it "
        "or pass its path"
    )


def shipped_paths() -> list[Path]:
    """The catalogs that come with cdwdata: ``catalogs/cdwdata.yaml`` of the source tree and
    ``cdwdata/catalog_data/cdwdata.yaml`` inside the package."""
    return [_PACKAGE_DIR.parent / "catalogs" / DEFAULT_FILE,
            _PACKAGE_DIR / "catalog_data" / DEFAULT_FILE]


def is_shipped(path: str | os.PathLike) -> bool:
    """True if ``path`` is a shipped catalog (see :func:`shipped_paths`) or lies inside the
    installed package, where only ``pipelines/publish.py`` (or ``cdw catalog build
    --force-shipped``) should write."""
    p = Path(path).expanduser().resolve()
    return p in {q.resolve() for q in shipped_paths()} or _PACKAGE_DIR in p.parents


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
    ff = ",".join(ff) if isinstance(ff, list) else ff
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
        if _range(meta.get(f"{key}_range")):
            parts.append(f"{key}=" + "..".join(f"{v:g}" for v in meta[f"{key}_range"]))
        elif meta.get(key):
            parts.append(f"{key}=" + ",".join(f"{v:g}" for v in meta[key]))
    if meta.get("runs") is not None:
        parts.append(f"{meta['runs']} runs")
    if meta.get("steps") is not None:
        parts.append(f"{meta['steps']} steps")
    return ", ".join(parts)


def model_name(spec: Any) -> str:
    """The name of the model ``spec`` names: a shipped name stays as it is
    (``"holstein-f0.5"``), a path becomes its file stem (``runs/x/my-model.json`` ->
    ``"my-model"``); ``""`` for no model."""
    from cdwdata.ml.modelfile import stem

    return stem(str(spec)).name if spec else ""


def _filling_key(key: Any) -> float:
    try:
        return float(key)
    except (TypeError, ValueError):
        return math.inf


def model_names(attrs: Mapping[str, Any], fillings: Iterable[float] = ()) -> list[str]:
    """Resolved names of the ML models behind a store (``[]`` for ED or toy runs), in
    filling order, without repeats.

    Uses the attr ``models`` (filling -> model spec, as trajectory stores record it) if
    present, else the attr ``model`` with a ``{f}`` template resolved for each of
    ``fillings``; every spec goes through :func:`model_name`.
    """
    from cdwdata.quench import resolve_forcefield

    models = attrs.get("models")
    if isinstance(models, Mapping) and models:
        specs = [v for _, v in sorted(models.items(), key=lambda kv: _filling_key(kv[0]))]
    else:
        spec = str(attrs.get("model") or "")
        if "{f}" in spec and fillings:
            specs = [resolve_forcefield(spec, f) for f in sorted(fillings)]
        else:
            specs = [spec]
    out: list[str] = []
    for spec in specs:
        name = model_name(spec)
        if name and name not in out:
            out.append(name)
    return out


def _model_field(names: list[str]) -> str | list[str]:
    """The ``model`` metadata value: "" (no model), the one name, or the list of names."""
    if not names:
        return ""
    return names[0] if len(names) == 1 else names


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
    fillings = _coord_or_attr(ds, schema.F_FILL, "fillings", "f")
    meta: dict[str, Any] = {
        "kind": kind,
        "T": _coord_or_attr(ds, schema.T, "electron_T", "temperatures", "T"),
        "f": fillings,
        "L": _int_or_none(a.get("L", ds.sizes.get(schema.X))),
        "runs": _int_or_none(a.get("quench_runs") if training
                             else a.get("runs", ds.sizes.get(schema.RUN))),
        "steps": _int_or_none(a.get("quench_steps") if training else a.get("steps")),
        "model": _model_field(model_names(a, fillings)),
        # the force-field spec as given (a template like holstein-f{f} stays; a path is
        # reduced to its stem so that no absolute path ends up in the catalog)
        "forcefield": model_name(a.get("forcefield", "ed" if training else "")),
    }
    if isinstance(a.get("models"), Mapping) and a["models"]:
        meta["models"] = {str(k): model_name(v) for k, v in a["models"].items()}
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


def _range(value: Any) -> list[float] | None:
    """``[lo, hi]`` (floats) if ``value`` is a two-number range with lo <= hi, else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 2 or \
            any(isinstance(v, bool) for v in value):
        return None
    try:
        lo, hi = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) and lo <= hi else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def model_metadata(card_path: str | os.PathLike) -> dict[str, Any]:
    """Catalog metadata of the model whose card (JSON) is at ``card_path``.

    A canonical model (card ``kind`` ``force`` or ``energy``) covers one filling and electron
    temperature: ``f`` and ``T`` hold them, ``test_rmse`` etc. its test metrics. A
    grand-canonical model (``kind: density``, a card with ``filling_range`` and
    ``temperature_range``) covers ranges: ``f`` and ``T`` hold their ends, ``f_range`` and
    ``T_range`` (and ``mu_range``) say that they are ranges, so that :func:`search` matches
    any filling or temperature in between, and ``validation_force_rmse`` /
    ``validation_force_mae`` its validation errors. Every model entry has ``kind: model``,
    ``model_kind`` (the card's kind), ``grand_canonical`` and ``model`` (its name).
    """
    try:
        card = json.loads(Path(card_path).read_text())
    except (OSError, ValueError) as err:
        raise CatalogError(f"{card_path}: not a readable model card: {err}") from err
    if not isinstance(card, dict):
        raise CatalogError(f"{card_path}: not a readable model card: not a JSON object")
    ts = card.get("trainset") if isinstance(card.get("trainset"), dict) else {}
    training = card.get("training") if isinstance(card.get("training"), dict) else {}
    name = str(card.get("name") or Path(card_path).stem)
    model_kind = str(card.get("kind") or "")
    f_range = _range(card.get("filling_range"))
    t_range = _range(card.get("temperature_range"))
    meta: dict[str, Any] = {
        "kind": "model",
        "T": list(t_range) if t_range else _floats(card.get("electron_T")),
        "f": list(f_range) if f_range else _floats(card.get("filling")),
        "L": _int_or_none(ts.get("L")),
        "runs": None,
        "steps": None,
        "model": name,
        "forcefield": name,
        "model_kind": model_kind,
        "architecture": model_kind,  # the same, under the name older catalogs used
        "grand_canonical": bool(card.get("grand_canonical")) or model_kind in GC_KINDS,
    }
    if f_range:
        meta["f_range"] = f_range
    if t_range:
        meta["T_range"] = t_range
    if _range(card.get("mu_range")):
        meta["mu_range"] = _range(card.get("mu_range"))
    samples = ts.get("n_samples", training.get("configurations"))
    if _int_or_none(samples) is not None:
        meta["samples"] = _int_or_none(samples)
    metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
    for split, keys in (("test", ("rmse", "mae", "r2")),
                        ("validation", ("force_rmse", "force_mae"))):
        values = metrics.get(split) if isinstance(metrics.get(split), dict) else {}
        for key in keys:
            if _number(values.get(key)) is not None:
                meta[f"{split}_{key}"] = _number(values[key])
    for key in ("created", "code_version", "cdwdata_version"):
        if key in card:
            meta[key] = str(card[key])
    meta["description"] = str(card.get("description") or _describe("model", meta))
    return meta


# --- building ----------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _root_of(path: Path, roots: list[Path]) -> Path:
    """The first of the scanned ``roots`` that is ``path`` or contains it."""
    return next(r for r in roots if r == path or r in path.parents)


def _relative_name(path: Path, root: Path) -> str:
    """``path`` relative to the scanned ``root`` as an entry name: folders joined with ``-``,
    the suffix dropped (``T-scan/domain-size.zarr`` -> ``T-scan-domain-size``)."""
    parts = path.relative_to(root).parts if path != root else (path.name,)
    *folders, last = parts
    last = last.removesuffix(_STORE_SUFFIX).removesuffix(".json")
    return "-".join(_safe(part) for part in (*folders, last) if part) or "entry"


def _claim(name: str, root: Path, taken: set[str]) -> str:
    """``name``, or if another entry has it already, ``name`` prefixed by the scanned folder's
    name, then numbered; the result is added to ``taken``."""
    out = name
    if out in taken:
        out = f"{_safe(root.name)}-{name}"
    i = 2
    while out in taken:
        out = f"{name}-{i}"
        i += 1
    taken.add(out)
    return out


def _relative_path(target: Path, catalog_dir: Path) -> str:
    """``target`` relative to the catalog folder (absolute if on another drive)."""
    try:
        return Path(os.path.relpath(target, catalog_dir)).as_posix()
    except ValueError:  # another drive (Windows)
        return target.as_posix()


def _relative_url(target: Path, catalog_dir: Path) -> str:
    rel = _relative_path(target, catalog_dir)
    return rel if Path(rel).is_absolute() else "{CATALOG_DIR}/" + rel


def _store_reader(path: Path, catalog_dir: Path, meta: dict[str, Any]):
    from cdwdata import store

    private = store.private_variables(path)  # checkpoints of stores of earlier versions
    kwargs: dict[str, Any] = {"chunks": {}, "consolidated": False,
                              "zarr_format": store.zarr_format(path)}
    if private:
        kwargs["drop_variables"] = private
    return XArrayDatasetReader(datatypes.Zarr(url=_relative_url(path, catalog_dir)),
                               metadata=meta, **kwargs)


def _model_reader(card: Path, catalog_dir: Path, meta: dict[str, Any]):
    return ModelCardReader(datatypes.JSONFile(url=_relative_url(card, catalog_dir)),
                           metadata=meta)


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
    CdwCatalog
        The catalog as written, reopened from the file (so its relative paths resolve).

    Raises
    ------
    CatalogError
        A given path is missing or unreadable, or nothing was found. Stores found while
        searching a directory that cannot be read are skipped with a warning.

    Notes
    -----
    Entry names do not depend on what else is catalogued: a store is named after its path
    relative to the first of ``paths_or_dirs`` that contains it (a store given directly after
    its own name), a model card after its model. Only if two entries would get the same name
    does the later one (in the order of ``paths_or_dirs``) get the scanned folder's name as a
    prefix, then a number. This function writes wherever it is told; ``cdw catalog build``
    refuses to overwrite the shipped catalogs (:func:`is_shipped`) unless asked to.
    """
    if isinstance(paths_or_dirs, (str, os.PathLike)):
        paths_or_dirs = [paths_or_dirs]
    paths_or_dirs = list(paths_or_dirs)
    roots = [Path(p).expanduser().resolve() for p in paths_or_dirs]
    stores, cards = find_artifacts(paths_or_dirs)
    out = Path(out_yaml).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    cat = CdwCatalog(metadata={
        "name": name,
        "description": description or f"cdwdata catalog {name}: stores and models",
        "cdwdata_catalog": 1,
    })
    taken: set[str] = set()

    def order(path: Path) -> tuple[int, tuple[str, ...]]:
        root = _root_of(path, roots)
        return roots.index(root), path.relative_to(root).parts

    for path in sorted(stores, key=order):
        try:
            meta = store_metadata(path)
        except CatalogError as err:
            if path in roots:
                raise
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
            continue
        meta["path"] = _relative_path(path, out.parent)
        root = _root_of(path, roots)
        entry = _claim(_relative_name(path, root), root, taken)
        _add(cat, entry, _store_reader(path, out.parent, meta))
    for card in sorted(cards, key=order):
        meta = model_metadata(card)
        meta["path"] = _relative_path(card, out.parent)
        root = _root_of(card, roots)
        wanted = _safe(meta["model"]) if _safe(meta["model"]) not in taken \
            else _relative_name(card, root)
        _add(cat, _claim(wanted, root, taken), _model_reader(card, out.parent, meta))
    if not cat.entries:
        looked = ", ".join(str(p) for p in paths_or_dirs)
        raise CatalogError(f"no stores (*.zarr) or model cards found in {looked}")
    tmp = out.with_name(out.name + ".tmp")
    cat.to_yaml_file(str(tmp))
    os.replace(tmp, out)
    return open(out)


def _add(cat, name: str, reader) -> None:
    """Add ``reader`` as entry ``name``, listed in ``aliases`` too (so that plain intake's
    ``list(cat)`` shows it)."""
    cat[name] = reader
    cat.aliases[name] = name


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
        if entry["reader"] not in ALLOWED_READERS:
            raise CatalogError(f"{where}: entry {ename!r} names reader {entry['reader']!r}, "
                               "which a cdwdata catalog does not use (allowed: "
                               f"{', '.join(sorted(ALLOWED_READERS))})")
    for dname, block in doc["data"].items():
        kind = block.get("datatype") if isinstance(block, dict) else None
        if kind not in ALLOWED_DATATYPES:
            raise CatalogError(f"{where}: data block {dname!r} has datatype {kind!r}, which a "
                               "cdwdata catalog does not use (allowed: "
                               f"{', '.join(sorted(ALLOWED_DATATYPES))})")
    for cls in _cls_names(doc):
        if not (isinstance(cls, str) and cls.startswith(_ALLOWED_CLS_PREFIX)):
            raise CatalogError(f"{where}: names class {cls!r}, which a cdwdata catalog does "
                               "not use")


def _cls_names(doc: Any) -> Iterator[Any]:
    """Every ``cls:`` value anywhere in ``doc`` (intake imports these when it loads)."""
    if isinstance(doc, dict):
        if "cls" in doc:
            yield doc["cls"]
        for value in doc.values():
            yield from _cls_names(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _cls_names(value)


def _upgrade(cat) -> None:
    """Bring a catalog written by an older cdwdata up to date, in memory: every entry is
    listed in ``aliases``, model cards read as dicts, and ``model`` metadata holds resolved
    names (an old catalog may hold a template such as ``holstein-f{f}``)."""
    for name, entry in cat.entries.items():
        cat.aliases.setdefault(name, name)
        meta = entry.metadata if isinstance(entry.metadata, dict) else {}
        if meta.get("kind") == "model":
            if entry.reader == FileTextReader.qname():
                entry.reader = ModelCardReader.qname()
                entry.output_instance = ModelCardReader.output_instance
        elif isinstance(meta.get("model"), str) and meta["model"]:
            f = meta.get("f") if isinstance(meta.get("f"), list) else []
            meta["model"] = _model_field(model_names({"model": meta["model"]}, f))


def open(path: str | os.PathLike | None = None):
    """Open a catalog YAML (default: the shipped catalog, see :func:`default_locations`).

    Returns
    -------
    CdwCatalog
        An intake Catalog: ``list(cat)`` gives the entry names, ``cat[name].read()`` the data.

    Raises
    ------
    CatalogError
        No catalog found, the file is unreadable, not YAML, not a well-formed intake 2
        catalog, or names reader or data classes that cdwdata does not use (see
        :data:`ALLOWED_READERS`). (An entry pointing at a missing store is reported by
        :func:`read`.)
    """
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
        plain = intake.from_yaml_file(str(p.resolve()))
    except Exception as err:  # intake raises assorted types for structural problems
        raise CatalogError(f"{p}: intake cannot load the catalog: {err}") from err
    cat = CdwCatalog(entries=plain.entries, aliases=plain.aliases, data=plain.data,
                     user_parameters=plain.user_parameters, metadata=plain.metadata)
    _upgrade(cat)
    return cat


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


def _within(bounds: list[float], wanted: Any) -> bool:
    """Is the number ``wanted`` (or any of a list of them) inside ``bounds`` = [lo, hi]?"""
    if isinstance(wanted, (list, tuple, set, frozenset)):
        return any(_within(bounds, w) for w in wanted)
    if isinstance(wanted, bool) or not isinstance(wanted, (int, float)):
        return False
    lo, hi = bounds
    return (lo <= wanted <= hi) or _same(wanted, lo) or _same(wanted, hi)


def _term_matches(meta: Mapping[str, Any], key: str, wanted: Any) -> bool:
    """:func:`matches` for the field ``key`` of ``meta``, except that a field accompanied by
    ``<key>_range: [lo, hi]`` (``f`` and ``T`` of a grand-canonical model) is a range: a
    number (or any of a list of numbers) matches it if it lies in ``[lo, hi]``."""
    bounds = _range(meta.get(f"{key}_range"))
    if bounds is not None and not callable(wanted) and _within(bounds, wanted):
        return True
    return matches(meta[key], wanted)


def search(cat=None, **query: Any) -> CdwCatalog:
    """The sub-catalog of entries whose metadata satisfy every ``key=value`` of ``query``.

    ``search(cat, kind="trajectory", T=0.1, f=[0.4, 0.5], model="holstein-f0.5")`` (see
    :func:`matches` for how a term matches). An entry without a queried key never matches.
    A field with a ``<key>_range`` beside it is a range: ``f`` and ``T`` of a grand-canonical
    model match every filling and temperature of its trained range (``kind="model", f=0.4``
    finds the model that runs at f = 0.4).

    Returns
    -------
    CdwCatalog
        An intake Catalog (as intake-esm's ``search`` returns one) holding the matching
        entries and what they need to be read: ``list(hits)`` gives the names (sorted, empty
        if nothing matched), ``hits[name].read()`` the lazy ``xarray.Dataset`` (a dict for a
        model card), ``hits[name].metadata`` the metadata, and every function of this module
        accepts it as ``cat``.
    """
    cat = _as_catalog(cat)

    def wanted(meta: Mapping[str, Any]) -> bool:
        return all(key in meta and _term_matches(meta, key, want) for key, want in query.items())

    return _subset(cat, [name for name in sorted(cat.entries)
                         if wanted(cat.entries[name].metadata or {})])


def _refs(obj: Any) -> set[str]:
    return set(_DATA_REF.findall(json.dumps(obj, default=str)))


def _subset(cat, names: list[str]) -> CdwCatalog:
    """A catalog of the entries ``names`` of ``cat``, with the data blocks they refer to and
    ``cat``'s user parameters (``CATALOG_DIR`` resolves the relative URLs)."""
    out = CdwCatalog(metadata=dict(cat.metadata or {}),
                     user_parameters=dict(cat.user_parameters or {}),
                     parameter_overrides=dict(getattr(cat, "_up_overrides", None) or {}))
    todo: set[str] = set()
    for name in names:
        entry = copy.copy(cat.entries[name])
        entry.metadata = dict(entry.metadata or {})
        out.entries[name] = entry
        out.aliases[name] = name
        todo |= _refs(entry.kwargs)
    while todo:
        tok = todo.pop()
        if tok in cat.data and tok not in out.data:
            out.data[tok] = cat.data[tok]
            todo |= _refs(getattr(cat.data[tok], "kwargs", {}))
        elif tok in cat.entries and tok not in out.entries:  # an entry used as data
            out.entries[tok] = cat.entries[tok]
            todo |= _refs(cat.entries[tok].kwargs)
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


def table(cat=None, entries_: Any = None,
          columns: tuple[str, ...] = ("kind", "T", "f", "L", "runs", "steps", "model")) -> str:
    """Plain-text table of the entries of ``cat`` (a catalog, e.g. a :func:`search` result,
    a path, or None = the default catalog); ``entries_``, if given, is a second catalog
    (or ``{name: entry}``) whose entries are listed instead. Floats are shown with ``:g``,
    lists joined with ``,``, ranges (a field with ``<column>_range``) as ``lo..hi``."""
    source = _as_catalog(cat) if entries_ is None else entries_
    if isinstance(source, Catalog):
        items = {n: source.entries[n] for n in sorted(source.entries)}
    else:
        items = dict(source)

    def num(x: Any) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    def fmt(meta: Mapping[str, Any], c: str) -> str:
        v = meta.get(c)
        bounds = _range(meta.get(f"{c}_range"))
        if bounds is not None:  # a range (f, T of a grand-canonical model): lo..hi
            return "..".join(num(x) for x in bounds)
        if isinstance(v, list):
            return ",".join(num(x) for x in v)
        return "" if v is None else num(v)

    rows = [("name", *columns)]
    rows += [(n, *(fmt(e.metadata or {}, c) for c in columns)) for n, e in items.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)

