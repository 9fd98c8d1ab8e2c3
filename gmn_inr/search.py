"""Nearest-neighbour search over a store's embeddings, on disk: ``gmn-inr search build | query``.

An index directory ``DIR`` holds::

    DIR/index.json                 format, keys (one per row), dim, kind, what the embeddings came from
    DIR/embeddings.safetensors     'embeddings' [N, D] float32, L2-normalised (cosine = inner product)
    DIR/index.faiss                a FAISS index of the same rows (kinds faiss-flat / faiss-hnsw only)
    DIR/shards/                    while building from a store: one file per shard of records (resumable)

Search is cosine similarity. ``kind="exact"`` is a chunked matrix product + top-k in torch;
``faiss-flat`` is FAISS's exact inner-product index (same results); ``faiss-hnsw`` its approximate
HNSW graph (recall measured by ``benchmarks/search_speed.py``). FAISS is used when importable
(``pip install -e ".[search]"``); without it every kind falls back to exact torch search.

Building from a store embeds it in shards of ``shard_size`` records, each written atomically, so an
interrupted build resumes where it stopped; under ``torchrun --nproc_per_node N`` each process embeds
the shards ``i % N == rank`` and rank 0 assembles the index once every shard is on disk.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from gmn_inr.io.sources import add_reader_arguments, read_inr, reader_from_args

FORMAT = "gmn_inr.search/1"
KINDS = ("auto", "exact", "faiss-flat", "faiss-hnsw")


class SearchError(RuntimeError):
    """An index directory or query that cannot be used."""


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except Exception:
        return False
    return True


def _atomic_write(path: Path, data: bytes) -> None:
    from gmn_inr.zoo.store import atomic_write_bytes

    atomic_write_bytes(path, data)


def _resolve_kind(kind: str, n: int) -> str:
    if kind not in KINDS:
        raise SearchError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == "auto":
        return ("faiss-hnsw" if n >= 20000 else "faiss-flat") if faiss_available() else "exact"
    return kind


def _faiss_index(z: torch.Tensor, kind: str, hnsw_m: int = 32, ef_construction: int = 80):
    import faiss

    d = z.shape[1]
    if kind == "faiss-flat":
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    index.add(z.numpy())
    return index


def build_index(embeddings: torch.Tensor, keys: Sequence[str], out_dir: str | Path, kind: str = "auto",
                meta: Optional[dict] = None) -> Path:
    """Write an index of ``embeddings [N, D]`` (rows named by ``keys``) to ``out_dir``; returns it.
    ``kind`` ``faiss-*`` without FAISS installed writes an exact index (and says so in index.json)."""
    from safetensors.torch import save

    if embeddings.ndim != 2 or embeddings.shape[0] != len(keys):
        raise SearchError(f"need embeddings [N, D] and N keys, got {tuple(embeddings.shape)} and {len(keys)}")
    if len(set(keys)) != len(keys):
        raise SearchError("index keys must be unique")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    z = F.normalize(embeddings.detach().float().cpu(), dim=-1).contiguous()
    kind = _resolve_kind(kind, z.shape[0])
    if kind.startswith("faiss") and not faiss_available():
        kind = "exact"
    _atomic_write(out / "embeddings.safetensors", save({"embeddings": z}))
    faiss_file = out / "index.faiss"
    if kind.startswith("faiss"):
        import faiss

        tmp = out / ".index.faiss.tmp"
        faiss.write_index(_faiss_index(z, kind), str(tmp))
        os.replace(tmp, faiss_file)
    elif faiss_file.exists():
        faiss_file.unlink()
    info = {"format": FORMAT, "kind": kind, "dim": int(z.shape[1]), "count": int(z.shape[0]), "keys": list(keys),
            **(meta or {})}
    _atomic_write(out / "index.json", json.dumps(info).encode())
    return out


class SearchIndex:
    """An index directory opened for queries: ``search(q [Q, D], k) -> (scores [Q, k], rows [Q, k])``."""

    def __init__(self, root: str | Path, use_faiss: bool = True):
        from safetensors.torch import load_file

        self.root = Path(root)
        ipath = self.root / "index.json"
        if not ipath.exists():
            raise SearchError(f"{self.root} is not a search index: it has no index.json "
                              "(build one with `gmn-inr search build`)")
        try:
            self.info = json.loads(ipath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SearchError(f"{ipath} is not valid JSON: {exc}") from None
        if not isinstance(self.info, dict) or self.info.get("format") != FORMAT:
            raise SearchError(f"{ipath} is not a gmn_inr search index (want format {FORMAT!r})")
        try:
            self.z = load_file(str(self.root / "embeddings.safetensors"))["embeddings"]
        except Exception as exc:
            raise SearchError(f"{self.root / 'embeddings.safetensors'} cannot be read: {exc}") from None
        self.keys: list[str] = list(self.info["keys"])
        if self.z.shape != (len(self.keys), self.info["dim"]):
            raise SearchError(f"{self.root}: embeddings {tuple(self.z.shape)} do not match {len(self.keys)} keys")
        self.row = {k: i for i, k in enumerate(self.keys)}
        self.kind = self.info.get("kind", "exact")
        self.faiss = None
        if use_faiss and self.kind.startswith("faiss") and faiss_available():
            import faiss

            self.faiss = faiss.read_index(str(self.root / "index.faiss"))

    def __len__(self) -> int:
        return len(self.keys)

    def embedding(self, key: str) -> torch.Tensor:
        if key not in self.row:
            raise SearchError(f"key {key!r} is not in the index {self.root} ({len(self.keys)} keys, e.g. {self.keys[0]!r})")
        return self.z[self.row[key]]

    def search(self, q: torch.Tensor, k: int = 10, exact: bool = False, ef_search: int = 64,
               chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine top-``k`` of queries ``q [Q, D]``: ``(scores [Q, k], rows [Q, k])``, best first."""
        q = F.normalize(q.detach().float().cpu().reshape(-1, self.z.shape[1]), dim=-1).contiguous()
        k = min(int(k), len(self.keys))
        if self.faiss is not None and not exact:
            if hasattr(self.faiss, "hnsw"):
                self.faiss.hnsw.efSearch = max(ef_search, k)
            s, i = self.faiss.search(q.numpy(), k)
            return torch.from_numpy(s), torch.from_numpy(i).long()
        return exact_search(q, self.z, k, chunk)


def exact_search(q: torch.Tensor, z: torch.Tensor, k: int, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-``k`` of ``q [Q, D]`` against ``z [N, D]``, ``chunk`` rows of ``z`` at a time."""
    best_s = torch.full((q.shape[0], 0), float("-inf"))
    best_i = torch.zeros(q.shape[0], 0, dtype=torch.long)
    for start in range(0, z.shape[0], chunk):
        s = q @ z[start:start + chunk].t()
        s, i = s.topk(min(k, s.shape[1]), dim=1)
        best_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, order)
    return best_s, best_i


# -- embedding a store in resumable shards ------------------------------------------------------
def embed_store_sharded(store, embedder, shard_dir: str | Path, shard_size: int = 1024, rank: int = 0,
                        world: int = 1, fingerprint: Optional[dict] = None, progress: bool = False) -> list[int]:
    """Embed ``store``'s records into ``shard_dir/shard_XXXXXX.safetensors`` (shard ``i`` holds records
    ``[i S, (i+1) S)``); shards already on disk are kept (resume); this process does ``i % world == rank``.
    Returns the shard numbers it wrote."""
    from safetensors.torch import save

    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    records = list(store)
    n_shards = (len(records) + shard_size - 1) // shard_size
    fp = {"records": len(records), "shard_size": shard_size, **(fingerprint or {})}
    fpath = shard_dir / "fingerprint.json"
    if fpath.exists():
        old = json.loads(fpath.read_text())
        if old != fp:
            raise SearchError(f"{shard_dir} holds shards of another build ({old}); remove it or use another index")
    elif rank == 0:
        _atomic_write(fpath, json.dumps(fp, sort_keys=True).encode())
    mine = [i for i in range(n_shards) if i % world == rank]
    written = []
    it = mine
    if progress:
        from tqdm import tqdm
        it = tqdm(mine, desc=f"embed shards (rank {rank})", unit="shard")
    for i in it:
        path = shard_dir / f"shard_{i:06d}.safetensors"
        if path.exists():
            continue
        recs = records[i * shard_size:(i + 1) * shard_size]
        z = embedder.embed(recs)
        _atomic_write(path, save({"embeddings": z.contiguous()}, metadata={"keys": json.dumps([r.key for r in recs])}))
        written.append(i)
    return written


def assemble_shards(shard_dir: str | Path, n_records: int, shard_size: int, wait_s: float = 0.0) -> tuple[torch.Tensor, list[str]]:
    """Concatenate every shard (waiting up to ``wait_s`` seconds for other processes' shards)."""
    from safetensors import safe_open

    shard_dir = Path(shard_dir)
    n_shards = (n_records + shard_size - 1) // shard_size
    paths = [shard_dir / f"shard_{i:06d}.safetensors" for i in range(n_shards)]
    deadline = time.time() + wait_s
    while True:
        missing = [p for p in paths if not p.exists()]
        if not missing or time.time() >= deadline:
            break
        time.sleep(1.0)
    if missing:
        raise SearchError(f"{len(missing)} of {n_shards} shards are missing (first {missing[0]}); run the build again")
    zs, keys = [], []
    for p in paths:
        with safe_open(str(p), framework="pt") as f:
            zs.append(f.get_tensor("embeddings"))
            keys.extend(json.loads(f.metadata()["keys"]))
    return torch.cat(zs), keys


# -- CLI ----------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="search_command", metavar="{build,query}")
    sub.required = True
    b = sub.add_parser("build", help="build an on-disk index of a store's embeddings")
    b.add_argument("store", nargs="?", default=None, help="INR zoo directory to embed (with --checkpoint)")
    b.add_argument("--index", required=True, help="index directory to write")
    b.add_argument("--checkpoint", default=None, help="training checkpoint: embed the store with its encoder")
    b.add_argument("--embeddings", default=None, help="or index these embeddings (`gmn-inr embed --out`)")
    b.add_argument("--kind", default="auto", choices=KINDS, help="auto: FAISS when installed (HNSW from 20k rows)")
    b.add_argument("--shard-size", type=int, default=1024, help="records per resumable shard")
    b.add_argument("--batch-size", type=int, default=None, help="INRs per batch (default: sized to the device)")
    b.add_argument("--block-form", default="auto", choices=("auto", "efficient", "plain"),
                   help="message-passing block as run (auto: efficient on the CPU, plain on a GPU)")
    b.add_argument("--device", default=None)
    b.add_argument("--no-progress", action="store_true")
    q = sub.add_parser("query", help="the nearest INRs of INR files or store keys")
    q.add_argument("index", help="index directory")
    q.add_argument("queries", nargs="+", help="store keys (object/function/arch) or INR files")
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--checkpoint", default=None, help="encoder for INR files (default: the one the index was built with)")
    q.add_argument("--exact", action="store_true", help="exact search even when the index is approximate")
    q.add_argument("--json", action="store_true")
    add_reader_arguments(q)                      # query files in any form zoo import reads


def run(args: argparse.Namespace) -> int:
    from gmn_inr.train import CheckpointError
    from gmn_inr.zoo.store import ZooError

    try:
        return _build(args) if args.search_command == "build" else _query(args)
    except (SearchError, CheckpointError, ZooError, FileNotFoundError, ValueError) as exc:
        print(f"gmn-inr search: error: {exc}", file=sys.stderr)
        return 2


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _build(args) -> int:
    from gmn_inr.atomic import ensure_writable_dir

    t0 = time.time()
    ensure_writable_dir(args.index)            # before any embedding work
    if (args.checkpoint is None) == (args.embeddings is None):
        raise SearchError("give either STORE --checkpoint CKPT (embed the store) or --embeddings FILE")
    if args.embeddings is not None:
        from safetensors import safe_open

        with safe_open(args.embeddings, framework="pt") as f:
            z = f.get_tensor("embeddings")
            info = json.loads((f.metadata() or {}).get("records", "null") or "null")
            ckpt = (f.metadata() or {}).get("checkpoint")
        if not isinstance(info, list) or len(info) != z.shape[0]:
            raise SearchError(f"{args.embeddings} has no per-row records metadata (write it with `gmn-inr embed`)")
        keys = [f"{r['object_id']}/{r['function']}/{r['arch']}" for r in info]
        out = build_index(z, keys, args.index, args.kind, {"checkpoint": ckpt, "source": str(args.embeddings)})
    else:
        if args.store is None:
            raise SearchError("search build --checkpoint needs the STORE to embed")
        from gmn_inr.embedder import Embedder
        from gmn_inr.zoo import open_store
        from gmn_inr.zoo.store import sha256_file

        rank, world = _dist()
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and world > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        emb = Embedder.from_checkpoint(args.checkpoint, device=device, batch_size=args.batch_size,
                                       block_form=args.block_form)
        store = open_store(args.store)
        ck = Path(args.checkpoint)
        ck = ck / "checkpoint.safetensors" if ck.is_dir() else ck
        shard_dir = Path(args.index) / "shards"
        embed_store_sharded(store, emb, shard_dir, args.shard_size, rank, world,
                            fingerprint={"checkpoint_sha256": sha256_file(ck), "store": str(Path(args.store).resolve())},
                            progress=not args.no_progress)
        if rank != 0:
            return 0
        z, keys = assemble_shards(shard_dir, len(store), args.shard_size, wait_s=24 * 3600 if world > 1 else 0)
        out = build_index(z, keys, args.index, args.kind, {"checkpoint": str(args.checkpoint),
                                                           "store": str(Path(args.store).resolve())})
    idx = SearchIndex(out, use_faiss=False)
    print(f"indexed {len(idx)} embeddings ({idx.info['dim']}-d, {idx.kind}) in {out} in {time.time() - t0:.1f}s")
    return 0


def _query(args) -> int:
    index = SearchIndex(args.index)
    qs, excluded = [], []
    files = [q for q in args.queries if q not in index.row]
    for q in files:
        if not Path(q).exists():
            raise SearchError(f"{q!r} is neither a key of the index nor an existing INR file")
    zf = {}
    if files:
        from gmn_inr.embedder import Embedder

        ckpt = args.checkpoint or index.info.get("checkpoint")
        if not ckpt:
            raise SearchError("querying with INR files needs --checkpoint (the index does not name its encoder)")
        emb = Embedder.from_checkpoint(ckpt)
        opts = reader_from_args(args)
        z = emb.embed([read_inr(p, opts) for p in files])
        zf = dict(zip(files, z))
    for q in args.queries:
        qs.append(index.embedding(q) if q in index.row else zf[q])
        excluded.append(q if q in index.row else None)
    scores, rows = index.search(torch.stack(qs), args.k + 1, exact=args.exact)
    results = []
    for q, ex, s_row, i_row in zip(args.queries, excluded, scores.tolist(), rows.tolist()):
        hits = [(index.keys[i], s) for i, s in zip(i_row, s_row) if i >= 0 and index.keys[i] != ex][:args.k]
        results.append({"query": q, "hits": [{"key": k, "score": round(s, 6)} for k, s in hits]})
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            print(f"{r['query']}:")
            for rank_, h in enumerate(r["hits"], 1):
                print(f"  {rank_:3d}  {h['score']:.4f}  {h['key']}")
    return 0
