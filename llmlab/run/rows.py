"""A call's row as the runner builds it, stores it and caches it: the shape every stage after the runner reads."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from llmlab import schema
from llmlab.errors import ReplayMissError
from llmlab.plan.grid import Call
from llmlab.run.heap import release_free_memory
from llmlab.store.callrows import CACHE_FIELDS  # a cached response: these values of the call row that paid for it

__all__ = ["CACHE_FIELDS", "ColumnRows", "base_row", "combined_miss", "row_for_store"]


def base_row(call: Call, sweep_id: str) -> dict[str, Any]:
    """The row of ``call`` before it runs: its settings and ids, every measurement still empty."""
    return {
        "sweep_id": sweep_id,
        "call_id": call.call_id,
        "trace_id": None,
        "span_id": None,
        "service": None,
        "start_time": None,
        "end_time": None,
        "latency_ms": None,
        "ttft_ms": None,
        "tokens_per_s": None,
        "provider": call.provider,
        "model": call.qualified_model,
        "response_model": None,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "max_tokens": call.max_tokens,
        "seed": call.seed,
        "repeat": call.repeat,
        "prompt_id": call.prompt_id,
        "prompt": call.prompt,
        "completion": None,
        "finish_reason": None,
        "input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        "tokens_estimated": False,
        "cost_usd": None,
        "status": "ok",
        "error": "",
        "cached": False,
        **call.variant_columns,
        "spent_usd": 0.0,  # what this run paid for the call: cost_usd when sent, 0 for a cache hit
        "queue_ms": None,
        "attempts": 0,
        "retries": 0,
        "itl_ms": None,
        "params": json.dumps(call.params, sort_keys=True) if call.params else "",
        **{k: v for k, v in call.params.items() if k not in schema.CANONICAL_COLUMNS},
        **{
            k if k not in schema.CANONICAL_COLUMNS else f"data.{k}": v
            for k, v in call.data.items()
            if k not in ("prompt_id", "id", "messages")
        },
    }


def row_for_store(row: dict[str, Any], call: Call, trace_content: bool) -> dict[str, Any]:
    """The row as stored: without trace_content, no prompt, completion or prompt-row values
    (template variables are prompt text too)."""
    if trace_content:
        return row
    data_keys = {k if k not in schema.CANONICAL_COLUMNS else f"data.{k}" for k in call.data}
    return {**row, "prompt": None, "completion": None, **{k: None for k in data_keys if k in row}}


def combined_miss(misses: list[ReplayMissError], total: int) -> ReplayMissError:
    """One error naming every call the cassette lacked (the first few in full)."""
    lines = [str(m) for m in misses[:5]]
    more = f"\n  ... and {len(misses) - 5} more" if len(misses) > 5 else ""
    err = ReplayMissError(f"{len(misses)} of {total} calls are not in the cassette:\n  " + "\n  ".join(lines) + more)
    err.misses = misses  # type: ignore[attr-defined]
    err.call_ids = [getattr(m, "call_id", None) for m in misses]  # type: ignore[attr-defined]
    return err


#: The kind of store each schema column gets: "f" floats, "i" ints, "b" bools, "t" times (the runner's
#: isoformat strings, kept as nanoseconds), "s" text; any other column is a plain list of values.
_KINDS: dict[str, str] = {
    **dict.fromkeys(schema.CANONICAL_COLUMNS + schema.EXTRA_COLUMNS + schema.SWEEP_COLUMNS, "s"),
    **dict.fromkeys(schema.FLOAT_COLUMNS, "f"),
    **dict.fromkeys(schema.INT_COLUMNS, "i"),
    **dict.fromkeys(schema.BOOL_COLUMNS, "b"),
    **dict.fromkeys(schema.TIME_COLUMNS, "t"),
}
_INT64 = range(-(2**63), 2**63)


class _Objects:
    """A column as a plain list: what pandas infers its dtype from, as for a list of dicts."""

    kind = "o"

    def __init__(self, values: list[Any] | None = None) -> None:
        self.values: list[Any] = [] if values is None else values

    def __len__(self) -> int:
        return len(self.values)

    def add(self, value: Any) -> bool:
        self.values.append(value)
        return True

    def pad(self, n: int) -> None:
        self.values.extend([None] * n)

    def get(self, i: int) -> Any:
        return self.values[i]

    def tolist(self) -> list[Any]:
        return list(self.values)

    def take(self, order: np.ndarray) -> _Objects:
        values = self.values
        return _Objects([values[i] for i in order.tolist()])

    def unshare(self) -> None:
        pass


class _Numbers:
    """Floats (``array('d')``), ints (``array('q')``) or bools (a bytearray of 0/1), with a null mask
    (a bytearray, 1 where the value is None). ``add`` refuses any value of another type."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.values: array[Any] | bytearray = bytearray() if kind == "b" else array("d" if kind == "f" else "q")
        self.null = bytearray()

    def __len__(self) -> int:
        return len(self.null)

    def add(self, value: Any) -> bool:
        if value is None:
            self.values.append(0)
            self.null.append(1)
            return True
        if not self.fits(value):
            return False
        self.values.append(value)
        self.null.append(0)
        return True

    def fits(self, value: Any) -> bool:
        """Whether ``value`` (not None) is kept here as it is; else it is kept in a list."""
        if self.kind == "f":
            return type(value) is float and value == value  # not an int, a nan, a numpy float
        if self.kind == "i":
            return type(value) is int and value in _INT64  # not a bool, nor past int64
        return type(value) is bool

    def pad(self, n: int) -> None:
        self.values.extend(bytes(n) if self.kind == "b" else array(self.values.typecode, bytes(8 * n)))  # type: ignore[union-attr]
        self.null.extend(b"\x01" * n)

    def get(self, i: int) -> Any:
        if self.null[i]:
            return None
        return bool(self.values[i]) if self.kind == "b" else self.values[i]

    def tolist(self) -> list[Any]:
        if self.kind == "b":
            return [None if m else bool(v) for v, m in zip(self.values, self.null)]
        return [None if m else v for v, m in zip(self.values, self.null)]

    def take(self, order: np.ndarray) -> _Numbers:
        out = type(self)(self.kind)
        taken = np.frombuffer(self.values, dtype=np.uint8 if self.kind == "b" else np.int64).take(order)
        if isinstance(out.values, bytearray):
            out.values = bytearray(taken)
        else:
            out.values.frombytes(taken.tobytes())
        out.null = _take_mask(self.null, order)
        return out

    def array(self) -> Any:
        """A pandas masked array over the buffers (nothing copied)."""
        dtype: Any = {"f": np.float64, "i": np.int64, "b": np.bool_}[self.kind]
        values: np.ndarray = np.frombuffer(self.values, dtype=dtype)
        mask = np.frombuffer(self.null, dtype=np.bool_)
        if self.kind == "f":
            return pd.arrays.FloatingArray(values, mask)
        if self.kind == "i":
            return pd.arrays.IntegerArray(values, mask)
        return pd.arrays.BooleanArray(values, mask)

    def unshare(self) -> None:
        self.values = bytearray(self.values) if self.kind == "b" else array(self.values.typecode, self.values)  # type: ignore[union-attr]
        self.null = bytearray(self.null)


class _Texts:
    """Strings as one UTF-8 bytearray, int64 offsets (Arrow's large_string layout) and a null mask."""

    kind = "s"

    def __init__(self) -> None:
        self.data: bytearray | pa.Buffer = bytearray()  # a Buffer once taken (read-only: see take)
        self.offsets = array("q", [0])
        self.null = bytearray()

    def __len__(self) -> int:
        return len(self.null)

    def add(self, value: Any) -> bool:
        if value is None:
            self.offsets.append(len(self.data))
            self.null.append(1)
            return True
        if type(value) is not str:
            return False
        try:
            self.data += value.encode()  # type: ignore[operator]
        except UnicodeEncodeError:  # a lone surrogate: kept as it is, in a list
            return False
        self.offsets.append(len(self.data))
        self.null.append(0)
        return True

    def pad(self, n: int) -> None:
        self.offsets.extend(array("q", [len(self.data)]) * n)
        self.null.extend(b"\x01" * n)

    def get(self, i: int) -> Any:
        return None if self.null[i] else str(memoryview(self.data)[self.offsets[i] : self.offsets[i + 1]], "utf-8")

    def tolist(self) -> list[Any]:
        return self.arrow().to_pylist()

    def any_value(self) -> bool:
        """Whether any row has a value (not None)."""
        return self.null.count(0) > 0

    def take(self, order: np.ndarray) -> _Texts:
        out = _Texts()
        # in the system allocator: mimalloc (Arrow's default) keeps far more resident
        taken = pc.take(self.arrow(), pa.array(order), memory_pool=pa.system_memory_pool())
        _, offsets, data = taken.buffers()
        out.offsets = array("q")
        out.offsets.frombytes(offsets[: 8 * (len(order) + 1)])
        out.data = data[: out.offsets[-1]] if data is not None else bytearray()  # Arrow's, not copied again
        out.null = _take_mask(self.null, order)
        return out

    def arrow(self) -> pa.LargeStringArray:
        """The column as an Arrow array over the buffers (only the validity bitmap is new)."""
        n = len(self.null)
        nulls = self.null.count(1)
        valid = None
        if nulls:
            valid = pa.py_buffer(np.packbits(np.frombuffer(self.null, dtype=np.uint8) == 0, bitorder="little"))
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(self.offsets), pa.py_buffer(self.data), valid, nulls)

    def unshare(self) -> None:
        self.data, self.offsets, self.null = bytearray(self.data), array("q", self.offsets), bytearray(self.null)


class _Times(_Numbers):
    """The runner's timestamps (pandas' isoformat of a UTC Timestamp) as int64 nanoseconds: 8 bytes a row,
    not 35 and an offset, and the frame's UTC datetimes without parsing text. A string that would not come
    back exactly as it was (another format, another zone) is refused, so the column turns into a list."""

    def add(self, value: Any) -> bool:
        ns = None if value is None else _ns_of(value)
        if value is not None and ns is None:
            return False
        self.values.append(0 if ns is None else ns)
        self.null.append(ns is None)
        return True

    def get(self, i: int) -> Any:
        return None if self.null[i] else _iso(self.values[i])

    def tolist(self) -> list[Any]:
        return [None if m else _iso(v) for v, m in zip(self.values, self.null)]

    def array(self) -> Any:
        """A pandas UTC datetime array (a copy: missing values become NaT)."""
        values = np.frombuffer(self.values, dtype=np.int64).copy()
        values[np.frombuffer(self.null, dtype=np.bool_)] = np.iinfo(np.int64).min  # NaT
        return pd.array(values.view("M8[ns]")).tz_localize("UTC")


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, unit="ns", tz="UTC").isoformat()


def _ns_of(text: Any) -> int | None:
    """The nanoseconds of a runner timestamp, if ``text`` is exactly one (it formats back the same)."""
    if type(text) is not str or len(text) not in (25, 32, 35) or text[10] != "T" or not text.endswith("+00:00"):
        return None
    try:
        ns = int(np.datetime64(text[:-6], "ns").astype(np.int64))
    except ValueError:
        return None
    return ns if _iso(ns) == text else None


_Column = _Objects | _Numbers | _Texts


def _new_column(kind: str) -> _Column:
    if kind in ("f", "i", "b"):
        return _Numbers(kind)
    return _Times("t") if kind == "t" else _Texts() if kind == "s" else _Objects()


def _size(col: _Column) -> int:
    """Roughly the bytes a column holds (its largest buffer)."""
    if isinstance(col, _Texts):
        return len(col.data)
    return memoryview(col.values).nbytes if isinstance(col, _Numbers) else 8 * len(col)


def _take_mask(mask: bytearray, order: np.ndarray) -> bytearray:
    return bytearray(np.frombuffer(mask, dtype=np.uint8).take(order))


class ColumnRows(Sequence[dict[str, Any]]):
    """The runner's finished rows, kept column by column; each read of a row gives a fresh dict.

    A sweep keeps every row until it returns. As dicts (1.6 KB a row) or tuples of values (1 KB with
    the value objects) a 10,000-call sweep held 10-16 MB; here a row's floats, ints and bools are
    8, 8 and 1 bytes (plus a byte of null mask) and its text is its UTF-8 bytes plus an 8-byte offset.
    Schema columns are typed (:data:`_KINDS`); a value that does not fit its column's type turns that
    column into a plain list, as are columns outside the schema (swept params, prompt-row values).
    :meth:`frame` builds the DataFrame over these buffers without copying them.
    """

    def __init__(self) -> None:
        self._cols: dict[str, _Column] = {}
        self._n = 0
        self._exported = False  # a frame shares the buffers: copy them before they grow

    def append(self, row: Mapping[str, Any]) -> int:
        """Keep ``row``; returns its position. A key first seen here is None in earlier rows; a key
        this row lacks is None in it."""
        if self._exported:
            for col in self._cols.values():
                col.unshare()
            self._exported = False
        cols, n = self._cols, self._n
        for name, value in row.items():
            found = cols.get(name)
            if found is not None:
                col = found
            else:
                kind = _KINDS.get(name, "o")
                col = cols[name] = _new_column(kind)
                col.pad(n)
            if not col.add(value):
                cols[name] = _Objects([*col.tolist(), value])
        if len(row) != len(cols):
            for col in cols.values():
                if len(col) == n:
                    col.add(None)
        self._n = n + 1
        return n

    def take(self, positions: Iterable[int]) -> ColumnRows:
        """The rows at ``positions``, in that order, as new rows; these rows are left empty.

        Columns move one at a time (each is freed once its copy is made), so a sweep's rows are never
        held twice: a 10,000-call sweep finishes in completion order and its frame is in grid order.
        """
        order = np.fromiter(positions, dtype=np.int64)
        if len(order) and (order.min() < 0 or order.max() >= self._n):
            raise IndexError("row position out of range")
        names = list(self._cols)
        taken = {}
        # largest first, each column's old pages handed back to the OS once it is copied: the allocator keeps
        # freed memory resident, and the copies would otherwise land on fresh pages (0.26 KB/call at 10,000)
        for name in sorted(names, key=lambda n: -_size(self._cols[n])):
            taken[name] = self._cols.pop(name).take(order)
            release_free_memory()
        out = ColumnRows()
        out._cols = {name: taken[name] for name in names}
        out._n, self._n = len(order), 0
        out._exported = True  # taken text is in read-only Arrow buffers: an append copies them first
        return out

    def in_grid_order(self, row_at: array[int]) -> ColumnRows:
        """These rows moved (see :meth:`take`) into grid order, given each grid index's row position
        (-1: no row); ``row_at`` is rewritten to the positions in the rows returned."""
        positions = np.frombuffer(row_at, dtype=np.int64)  # a view: written through below
        ran = positions >= 0
        rows = self.take(positions[ran])
        positions[ran] = np.arange(len(rows))
        return rows

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(self._n)[index]]
        i = range(self._n)[index]  # IndexError past the end, negative indices from it
        return {name: col.get(i) for name, col in self._cols.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = list(self._cols)
        if not names:  # rows without keys
            return ({} for _ in range(self._n))
        columns = [self.column(name) for name in names]
        return (dict(zip(names, values)) for values in zip(*columns))

    def column(self, name: str) -> list[Any]:
        """The values of ``name`` in row order (None in every row if no row had it)."""
        col = self._cols.get(name)
        if col is None:
            return [None] * self._n
        return col.tolist()

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame, columns in first-seen order: schema floats, ints and bools as
        Float64/Int64/boolean arrays over their buffers, text as ``str`` over an Arrow array of its
        buffers, other columns inferred by pandas as for a list of dicts. Nothing is copied (rows in
        another order: :meth:`take` them first)."""
        if not self._n:
            return pd.DataFrame()
        arrow_str = pd.Series(["x"]).dtype  # pandas' inferred text dtype (``str``: Arrow-backed)
        if not (isinstance(arrow_str, pd.StringDtype) and arrow_str.storage == "pyarrow"):
            arrow_str = None
        arrays: dict[str, Any] = {}
        lists: dict[str, list[Any]] = {}
        for name, col in self._cols.items():
            if isinstance(col, _Numbers):
                arrays[name] = col.array()
            elif isinstance(col, _Texts) and not col.any_value():  # None only: object, as in a frame of dicts
                arrays[name] = np.full(self._n, None, dtype=object)
            elif isinstance(col, _Texts) and arrow_str is not None:
                arrays[name] = pd.arrays.ArrowStringArray(col.arrow(), dtype=arrow_str)
            else:
                arrays[name] = lists[name] = self.column(name)  # inferred as in a frame of dicts
        if lists:  # inferred together, the way a frame of records infers them
            inferred = pd.DataFrame.from_records(list(zip(*lists.values())), columns=list(lists))
            arrays.update({name: inferred[name] for name in lists})
        self._exported = True
        return pd.DataFrame(arrays, copy=False)
