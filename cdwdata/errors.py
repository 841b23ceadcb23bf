"""A small hierarchy of errors whose messages say what was wrong and what to do."""

from __future__ import annotations


class CdwError(Exception):
    """Base class of every error cdwdata raises on purpose."""


class ParameterError(CdwError, ValueError):
    """A parameter or option has a value it may not take: a physical or numerical parameter
    outside its range, or a choice (kind, target, loss, schedule, dtype, ...) that is not
    one of the allowed ones."""


class InputError(CdwError, ValueError):
    """Input data are unusable: an array of the wrong shape, dtype or with non-finite values,
    a dataset without the variables or dimensions asked for, or inputs that do not fit
    together."""


class StoreError(CdwError, ValueError):
    """A zarr store is missing, already exists, is incompatible or is damaged."""


class StoreBusyError(StoreError):
    """Another process is writing the store (see :mod:`cdwdata.storelock`)."""


class StoreDamagedError(StoreError):
    """Chunks of a store are missing or corrupt (see :func:`cdwdata.store.verify`)."""


class ModelError(CdwError, ValueError):
    """A model file is missing, corrupted, or was trained for other parameters."""


class BlowUpError(CdwError, RuntimeError):
    """A simulation produced non-finite values; the last good frame is kept on disk."""


class CatalogError(CdwError, ValueError):
    """A catalog file is malformed or points at data that is not there."""
