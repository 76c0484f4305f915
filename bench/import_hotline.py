"""Hotline import throughput: rows/s of `import_hotline` on the real 12345-style file, per store.

Runs on a fresh SQLite file and, when a server answers, a fresh PostgreSQL database; imports the
file once (the figure), then again to time the idempotent re-import (everything `existing`).
Goal: ≥ 2,000 rows/s on both. Usage: python bench/import_hotline.py [--help]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, backends, database, emit, load_city, make_app, pg_base_url, workdir

DEFAULT_FILE = SHARED_DATA / "complaints" / "teddy2020_attachment4_messages_replies.csv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE, help="CSV or .xlsx to import (default: %(default)s)")
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], help="run one store only")
    ap.add_argument("--pg", help="PostgreSQL server URL (default: ZHIZHI_TEST_PG or 127.0.0.1:5432)")
    ap.add_argument("--city", choices=["auto", "demo", "tiny"], default="auto",
                    help="place hierarchy: the Chongqing demo city or the tests' tiny city (default: auto)")
    ap.add_argument("--batch-size", type=int, default=500, help="rows per transaction; 1 = row by row through "
                    "zz.handle (default: %(default)s)")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "cache", help="demo city and index cache")
    args = ap.parse_args(argv)
    if not args.file.is_file():
        print(f"no such file: {args.file}", file=sys.stderr)
        return 2

    from zhizhi.adapters.hotline import import_hotline

    hierarchy, label = load_city(args.city, args.cache_dir)
    print(f"# city: {label}; file: {args.file.name}; batch size {args.batch_size}")
    pg = pg_base_url(args.pg)
    if pg is None and not args.backend:
        print("# PostgreSQL: no server answers; SQLite only")
    with workdir() as tmp:
        for backend in backends(pg, args.backend):
            with database(backend, pg, Path(tmp)) as url:
                zz = make_app(url, hierarchy, Path(tmp) / backend, args.cache_dir)
                try:
                    zz.gazetteer.locate_address("重庆市渝中区")  # build the address index outside the timing
                    s = import_hotline(zz, args.file, reject_path=Path(tmp) / f"rejects-{backend}.csv",
                                       batch_size=args.batch_size)
                    emit(f"import_rows_per_s_{backend}", s.rows_per_s, "rows/s")
                    emit(f"import_seconds_{backend}", s.seconds, "s")
                    emit(f"import_rows_{backend}", s.rows, "rows")
                    emit(f"import_created_{backend}", s.created, "rows")
                    emit(f"import_rejected_{backend}", s.rejected, "rows")
                    emit(f"import_unlocated_{backend}", s.unlocated, "rows")
                    again = import_hotline(zz, args.file, batch_size=args.batch_size)
                    emit(f"reimport_rows_per_s_{backend}", again.rows_per_s, "rows/s")
                    emit(f"reimport_created_{backend}", again.created, "rows")
                finally:
                    zz.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
