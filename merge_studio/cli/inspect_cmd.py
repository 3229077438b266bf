"""``merge-studio inspect PATH...``: what is inside checkpoints, and whether they fit together."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from merge_studio.core.checkpoints import open_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("inspect", help="summarise checkpoints (and check that several are compatible)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files or folders")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--tensors", action="store_true", help="list every tensor")
    parser.add_argument("--scan", action="store_true",
                        help="also read every value and report tensors holding NaN or infinity (reads the whole file)")
    parser.set_defaults(func=run)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _scan(checkpoints: list, quiet: bool) -> dict[str, list]:
    """NaN/infinity per checkpoint, with a progress bar (Ctrl+C stops it)."""
    from merge_studio.cli.progress_bar import ProgressBar
    from merge_studio.core.finite import scan_checkpoint
    from merge_studio.core.progress import drive

    found = {}
    for ck in checkpoints:
        bar = ProgressBar(enabled=not quiet)
        try:
            found[ck.name] = drive(scan_checkpoint(ck), on_progress=bar)
        finally:
            bar.close()
    return found


def run(args: argparse.Namespace) -> int:
    checkpoints = []
    try:
        for p in args.paths:
            checkpoints.append(open_checkpoint(p))
        non_finite = _scan(checkpoints, args.json) if args.scan else {}
        report = None
        if len(checkpoints) > 1:
            from merge_studio.core.checkpoints.compat import check_compatibility

            report = check_compatibility(checkpoints, non_finite=non_finite)
        if args.json:
            out = []
            for ck in checkpoints:
                entry = asdict(ck.summary())
                if args.tensors:
                    entry["tensors"] = [
                        {"name": i.name, "shape": list(i.shape), "dtype": i.dtype_name, "numel": i.numel}
                        for i in ck.infos.values()
                    ]
                if args.scan:
                    entry["non_finite"] = [{"name": b.name, "nan": b.nan, "inf": b.inf} for b in non_finite[ck.name]]
                out.append(entry)
            doc = {"checkpoints": out}
            if report is not None:
                doc["compatibility"] = report.to_dict()
            print(json.dumps(doc, indent=2, default=str))
            return 0
        for ck in checkpoints:
            s = ck.summary()
            print(f"{ck.name}  [{s.format}]")
            print(f"  tensors     {s.tensor_count}")
            print(f"  parameters  {human_count(s.parameter_count)} ({s.parameter_count:,})")
            print(f"  size        {human_bytes(s.total_bytes)} of tensors, {human_bytes(s.file_bytes)} on disk")
            print(f"  dtypes      {', '.join(f'{k} ×{v}' for k, v in s.dtypes.items())}")
            for key, value in s.metadata.items():
                short = value if len(value) < 70 else value[:67].replace("\n", " ") + "…"
                print(f"  meta        {key}: {short}")
            if args.scan:
                bad = non_finite[ck.name]
                print(f"  values      {'all finite' if not bad else 'NaN or infinite in ' + ', '.join(b.describe() for b in bad[:8])}")
            if args.tensors:
                for info in ck.infos.values():
                    print(f"    {info.name}  {list(info.shape)}  {info.dtype_name}")
        if report is not None:
            print()
            for line in report.lines():
                print(line)
        return 0
    finally:
        for ck in checkpoints:
            ck.close()
