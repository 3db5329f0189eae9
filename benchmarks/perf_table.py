"""The README's performance table (issue 14), regenerated from the benchmarks' JSON output:

    .venv/bin/python benchmarks/bench_cli.py > cli.json
    .venv/bin/python benchmarks/bench_api.py resolve --duration 10 --setup-mlflow /tmp/mlflow-venv > resolve.json
    .venv/bin/python benchmarks/bench_api.py mixed --duration 10 > mixed.json
    .venv/bin/python benchmarks/bench_api.py transfer --size-gb 1 > transfer.json
    .venv/bin/python benchmarks/bench_scale.py > scale.json
    .venv/bin/python benchmarks/perf_table.py cli.json resolve.json mixed.json transfer.json scale.json

Every row is a figure beside its reference from the same run, and the issue's target. A ``-`` in place
of a file leaves that benchmark's rows out (to refresh part of the table from a new run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(path: str) -> Any:
    text = Path(path).read_text()
    return json.loads(text[text.index("{") :])  # a benchmark may print a line before its JSON


def rows(cli: Any, resolve: Any, mixed: Any, transfer: Any, scale: Any) -> list[str]:
    out = _machine_line(cli) if cli is not None else []
    out += [
        "| what | measured | reference in the same run | ratio | target |",
        "|---|---|---|---|---|",
    ]
    out += _cli_rows(cli) if cli is not None else []
    out += _transfer_rows(transfer) if transfer is not None else []
    out += _load_rows(resolve, mixed) if resolve is not None and mixed is not None else []
    return out + (_scale_rows(scale) if scale is not None else [])


def _machine_line(cli: Any) -> list[str]:
    m = cli.get("machine", {})
    if "sum_range_1e6_ms" not in m:  # from a bench_cli.py that did not describe the machine
        return []
    return [
        f"Machine: {m['cpus']} cores ({m['cpu'] or 'CPU model unknown'}), Python {m['python']}; its pace during "
        f'the run: `python -m timeit "sum(range(10**6))"` {m["sum_range_1e6_ms"]:.1f} ms.',
        "",
    ]


def _cli_rows(cli: Any) -> list[str]:
    s, n, f = cli["start"], cli["noop_sync"], cli["flow"]
    return [
        f"| `wanlora --help` | {s['help_s']:.2f} s | `python -c pass` {s['python_s']:.3f} s; "
        f"`python -c 'import typer, rich.console'` {s['python_import_typer_s']:.2f} s | "
        f"{s['help_vs_import_typer']:.1f}× the bare typer import | ≤ 0.25 s |",
        f"| `wanlora sync --help` / `wanlora inspect FILE --json` | {s['sync_help_s']:.2f} s / {s['inspect_s']:.2f} s "
        f"| same | {s['sync_help_s'] / s['python_import_typer_s']:.1f}× / {s['inspect_vs_import_typer']:.1f}× | ≤ 0.25 s |",
        f"| `wanlora sync` with nothing to do, {n['loras']:,} current LoRAs (process) | {n['noop_sync_s']:.2f} s | "
        f"the first, full sync {n['first_sync_s']:.2f} s; a Python process `stat`ing the same files "
        f"{n['python_stat_of_the_files_s']:.3f} s | {n['noop_vs_first_sync_speedup']:.0f}× faster than the first | ≤ 0.35 s |",
        f"| register + promote + sync of a {f['file_mb']:.0f} MB LoRA, three `wanlora` processes | "
        f"{f['register_promote_sync_s']:.2f} s | two runs of `cp` (into two new files) + `sha256sum`: {f['two_cp_plus_sha256sum_s']:.2f} s | "
        f"**{f['flow_speed_vs_two_cp_plus_sha256sum']:.2f}×** their speed | ≥ 1.0× |",
    ]


def _transfer_rows(transfer: Any) -> list[str]:
    ref = transfer["cp_plus_sha256sum_s"]
    fastest = f"fastest of {transfer['repeats']} interleaved rounds each"
    if "median_upload_speed_vs_cp_plus_sha256sum" in transfer:
        fastest += (
            f"; the median rounds: {transfer['median_upload_and_register_s']:.2f} s and "
            f"{transfer['median_download_sync_s']:.2f} s against {transfer['median_cp_plus_sha256sum_s']:.2f} s, "
            f"{transfer['median_upload_speed_vs_cp_plus_sha256sum']:.2f}× and "
            f"{transfer['median_download_speed_vs_cp_plus_sha256sum']:.2f}×"
        )
    return [
        f"| {transfer['file_mb']:,.0f} MB: upload + register through the API | {transfer['upload_and_register_s']:.2f} s | "
        f"`cp` + `sha256sum`: {ref:.2f} s ({fastest}) | "
        f"**{transfer['upload_speed_vs_cp_plus_sha256sum']:.2f}×** | ≥ 0.9× |",
        f"| the same file: `wanlora sync` with a production token | {transfer['download_sync_s']:.2f} s | same ({ref:.2f} s) | "
        f"**{transfer['download_speed_vs_cp_plus_sha256sum']:.2f}×** | ≥ 0.9× |",
        f"| the same two, against `cp` + `openssl dgst -sha256` (the hash hashlib uses) | | "
        f"{transfer['cp_plus_openssl_sha256_s']:.2f} s | "
        f"{transfer['upload_speed_vs_cp_plus_openssl_sha256']:.2f}× / {transfer['download_speed_vs_cp_plus_openssl_sha256']:.2f}× | |",
        f"| peak memory: server / uploading client / syncing client | {transfer['server_peak_rss_mb']} / "
        f"{transfer['upload_client_peak_rss_mb']} / {transfer['download_client_peak_rss_mb']} MB | "
        f"(the file: {transfer['file_mb']:,.0f} MB) | flat in file size | flat |",
    ]


def _load_rows(resolve: Any, mixed: Any) -> list[str]:
    w, m = resolve["wanlora"], resolve["mlflow"]
    r = mixed["reads"]
    return [
        f"| `GET …/resolve?lora=` at 32 connections (wrk, {resolve['duration_s']} s), default workers | "
        f"{w['rps']:,.0f} req/s, p99 {w['p99_ms']:.1f} ms, {w['errors']:.0f} errors | stock MLflow `mlflow server`, "
        f"`GET …/registered-models/alias`: {m['rps']:,.0f} req/s, p99 {m['p99_ms']:,.0f} ms | "
        f"**{resolve['rps_vs_mlflow']:.0f}×** the requests/s | ≥ 10×; p99 ≤ 20 ms |",
        f"| the same reads at 64 connections while registers and promotes run | {r['rps']:,.0f} req/s, "
        f"p99 {r['p99_ms']:.0f} ms, {r['errors']:.0f} errors | {mixed['writes']['promoted']} register + promote "
        f"cycles, {mixed['writes']['errors']} failed | | 0 errors; p99 ≤ 100 ms |",
    ]


def _scale_rows(scale: Any) -> list[str]:
    sizes = list(scale["loras"])
    small, large = scale["loras"][sizes[0]], scale["loras"][sizes[1]]
    growth = next(v for k, v in scale.items() if k.startswith("growth"))
    names = {
        "list_first_page": "`GET …/loras?limit=50` (first page)",
        "list_deep_page": "`GET …/loras?limit=50&after=NAME` (a page deep inside)",
        "resolve_one_lora": "`GET …/resolve?lora=NAME` (a different LoRA each request: no cached answer)",
        "noop_sync_304": "no-op sync over HTTP: `GET /api/v1/resolve` + `If-None-Match` → 304",
        "noop_sync_embedded_tag": "no-op sync, embedded: the state query of `registry.sync.quick`",
        "full_sync_targets_all": "a full sync's targets, every current version (the answer grows with it)",
    }
    out = [
        "",
        f"| PostgreSQL, {int(sizes[0]):,} → {int(sizes[1]):,} LoRAs × 10 versions | p50 / p99 at {int(sizes[0]):,} | "
        f"p50 / p99 at {int(sizes[1]):,} | growth p50 / p99 (1.0 = flat, 10 = linear) |",
        "|---|---|---|---|",
    ]
    for key, label in names.items():
        a, b, g = small[key], large[key], growth[key]
        out.append(
            f"| {label} | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} ms | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} ms | "
            f"{g['p50_growth']:.2f} / {g['p99_growth']:.2f} |"
        )
    return out


def main() -> None:
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    print("\n".join(rows(*(None if p == "-" else _load(p) for p in sys.argv[1:]))))


if __name__ == "__main__":
    main()
