"""Datasets over a zoo: single INRs, and pairs of one object in two architecture families.

* :class:`INRDataset` yields :class:`~gmn_inr.zoo.store.ZooRecord` s (``item(i)``) or their
  parameter graphs (``graphs=True``), converted once and cached on the record.
* :class:`PairDataset` yields ``(rec_a, rec_b)``: the same object and implicit function in
  two DIFFERENT families (the main paper's ``(N_j^A, N_j^B)`` for the contrastive term).
* :func:`cross_family_pairs` is the one pairing rule (also behind
  ``gmn_inr.train.pairs_from_records``).
* :func:`collate_graphs` / :func:`graph_loader` batch graphs with :func:`graphs.batch_graphs`.
* :class:`RecordView`: a record seen through a change of its graph (or of another attribute), the
  base of ablation and canonicalisation wrappers.
"""
from __future__ import annotations

import itertools
import random
from typing import Any, Callable, Hashable, Optional, Sequence, Union

from gmn_inr.fields import TRAINING_ARCHITECTURES

from .store import SPLITS, ZooRecord, ZooStore, open_store


class RecordView:
    """A record with every attribute delegated to it except what a subclass overrides; its
    ``graph()`` is :meth:`transform_graph` of the record's graph, computed once."""

    def __init__(self, rec):
        self._rec = rec
        self._graph = None

    def __getattr__(self, name):
        return getattr(self._rec, name)

    def __repr__(self):
        return f"{type(self).__name__}({self._rec!r})"

    def transform_graph(self, graph):
        """The view's graph from the record's (identity here)."""
        return graph

    def graph(self):
        if self._graph is None:
            self._graph = self.transform_graph(self._rec.graph())
        return self._graph


def cross_family_pairs(records: Sequence[Any], group: Callable[[Any], Hashable] = lambda r: r.object_id,
                       order: Callable[[Any], Any] = lambda r: r.arch) -> dict:
    """``{group key: (records sorted by order, [(a, b), ...])}`` for the groups (sorted by key) that
    have a pair: every unordered pair of a group's records whose families differ, in
    ``itertools.combinations`` order. The main paper's ``(N_j^A, N_j^B)``."""
    by: dict = {}
    for r in records:
        by.setdefault(group(r), []).append(r)
    out = {}
    for key in sorted(by):
        rs = sorted(by[key], key=order)
        ps = [(a, b) for a, b in itertools.combinations(rs, 2) if a.family != b.family]
        if ps:
            out[key] = (rs, ps)
    return out


def pairs_from_records(records: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Every pair of records of one object and one function in two different families
    (the main paper's (M_j, T_j), (T_j, H_j), (M_j, H_j)), in a deterministic order."""
    groups = cross_family_pairs(records, group=lambda r: (r.object_id, r.function),
                                order=lambda r: (r.family, r.arch))
    return [p for _, ps in groups.values() for p in ps]


def _store(store: Union[str, ZooStore]) -> ZooStore:
    return store if isinstance(store, ZooStore) else open_store(store)


class INRDataset:
    """The records of a store filtered by split / architectures / functions / families.

    ``ds[i]`` is a :class:`ZooRecord` (``graphs=False``) or its ``ParameterGraph``
    (``graphs=True``; converted on first access, then cached on the record).
    """

    def __init__(self, store: Union[str, ZooStore], split: Optional[str] = None, archs: Optional[Sequence[str]] = None,
                 functions: Optional[Sequence[str]] = None, families: Optional[Sequence[str]] = None,
                 graphs: bool = False):
        self.store = _store(store)
        self.records = self.store.records(split=split, archs=archs, functions=functions, families=families)
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        return r.graph() if self.graphs else r

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]


class PairDataset:
    """Pairs ``(rec_a, rec_b)`` of one object, one function, two different families.

    For every object of ``split`` with INRs of ``function`` in at least two families among
    ``archs``, every unordered pair of its INRs whose families differ is an item (sorted,
    deterministic). ``sample_pair(object_index, rng)`` draws one random such pair per object
    instead (the usual per-epoch sampling).
    """

    def __init__(self, store: Union[str, ZooStore], split: Optional[str] = "train",
                 archs: Sequence[str] = TRAINING_ARCHITECTURES, function: str = "radiance"):
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
        self.store = _store(store)
        recs = self.store.records(split=split, archs=archs, functions=(function,))
        groups = cross_family_pairs(recs)
        self.objects: list[str] = list(groups)
        self.by_object: dict[str, list[ZooRecord]] = {oid: rs for oid, (rs, _) in groups.items()}
        self.pairs: list[tuple[ZooRecord, ZooRecord]] = [p for _, ps in groups.values() for p in ps]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[ZooRecord, ZooRecord]:
        return self.pairs[i]

    def sample_pair(self, j: int, rng: Optional[random.Random] = None) -> tuple[ZooRecord, ZooRecord]:
        """A random cross-family pair of object ``j`` (index into :attr:`objects`)."""
        rng = rng or random
        rs = self.by_object[self.objects[j]]
        a = rng.choice(rs)
        b = rng.choice([r for r in rs if r.family != a.family])
        return a, b


def collate_graphs(graphs: Sequence) -> "torch_geometric.data.Batch":  # noqa: F821
    """``ParameterGraph`` s (or records) -> one ``torch_geometric.data.Batch``."""
    from graphs import batch_graphs

    return batch_graphs([g.graph() if isinstance(g, ZooRecord) else g for g in graphs])


def collate_pairs(pairs: Sequence[tuple]) -> tuple:
    """A list of ``(rec_a, rec_b)`` -> ``(Batch_a, Batch_b)``; row j of both is one object."""
    return collate_graphs([a for a, _ in pairs]), collate_graphs([b for _, b in pairs])


def graph_loader(dataset, batch_size: int = 8, shuffle: bool = False, seed: int = 0):
    """A ``torch.utils.data.DataLoader`` over an :class:`INRDataset` (records or graphs) or a
    :class:`PairDataset`, collating with torch_geometric. Runs in-process (graphs are cached
    on the records, which worker processes would not share)."""
    import torch
    from torch.utils.data import DataLoader

    collate = collate_pairs if isinstance(dataset, PairDataset) else collate_graphs
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=g)
