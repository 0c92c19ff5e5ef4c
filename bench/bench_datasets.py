"""Dataset speed: .ts loading, windowing, vibration generation and streaming, partitioning.

Run: ``.venv/bin/python -m bench datasets``. Ratios compare variants measured
side by side in the same run (stream chunk sizes; 1 vs 2 channels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import peak_rss_mib, time_per_call, write_results
from models.data import default_data_dir
from models.datasets.partition import dirichlet_partition
from models.datasets.ucr import load_ts
from models.datasets.vibration import VibrationStream, generate, random_profile
from models.datasets.windows import to_fixed_length

DATA = default_data_dir()


def main() -> None:
    data: dict[str, Any] = {}
    table: list[tuple[str, str]] = []
    for name in ("PLAID_TRAIN", "ACSF1_TRAIN"):
        path = DATA / f"{name}.ts"
        s = time_per_call(lambda p=path: load_ts(p), min_time=1.0, repeat=3)
        mb = path.stat().st_size / 1e6
        data[f"load_{name}_s"] = s
        table.append((f"load_ts {name} ({mb:.1f} MB)", f"{s * 1e3:.1f} ms ({mb / s:.0f} MB/s)"))
    plaid = load_ts(DATA / "PLAID_TRAIN.ts")
    for mode in ("crop", "pad", "resample"):
        s = time_per_call(lambda m=mode: to_fixed_length(plaid.series, length=256, mode=m),
                          min_time=0.5, repeat=3)
        data[f"fixed_length_{mode}_s"] = s
        table.append((f"to_fixed_length PLAID 537 -> 256, {mode}", f"{s * 1e3:.1f} ms"))
    per_ch = {}
    for ch in (1, 2):
        s = time_per_call(lambda c=ch: generate(machines=4, windows_per_machine=25, length=1024,
                                                channels=c, seed=0), min_time=1.0, repeat=3)
        per_ch[ch] = 100 / s
        data[f"generate_windows_per_s_{ch}ch"] = per_ch[ch]
        table.append((f"generate, 1024-sample windows, {ch} channel(s)",
                      f"{per_ch[ch]:.0f} windows/s"))
    table.append(("generate speed ratio 2 ch / 1 ch", f"{per_ch[2] / per_ch[1]:.2f}"))
    prof = random_profile(0, seed=0, channels=2)
    rates = {}
    for chunk in (100, 12_000):
        stream = VibrationStream(prof, 0)
        s = time_per_call(lambda st=stream, n=chunk: st.next_samples(n), min_time=1.0, repeat=3)
        rates[chunk] = chunk / s / prof.sample_rate_hz
        data[f"stream_realtime_factor_chunk_{chunk}"] = rates[chunk]
        table.append((f"VibrationStream 2 ch @ 12 kHz, chunks of {chunk}",
                      f"{rates[chunk]:.0f}x real time"))
    table.append(("stream ratio chunk 12000 / chunk 100", f"{rates[12_000] / rates[100]:.1f}"))
    labels = np.random.default_rng(0).integers(0, 10, size=100_000)
    s = time_per_call(lambda: dirichlet_partition(labels, n_parts=100, alpha=0.3,
                                                  rng=np.random.default_rng(1)),
                      min_time=1.0, repeat=3)
    data["dirichlet_100k_100parts_s"] = s
    table.append(("dirichlet_partition 100k labels, 10 classes, 100 parts", f"{s * 1e3:.1f} ms"))
    data["peak_rss_mib"] = peak_rss_mib()
    table.append(("peak RSS", f"{data['peak_rss_mib']:.0f} MiB"))
    write_results("datasets", data, table)


if __name__ == "__main__":
    main()
