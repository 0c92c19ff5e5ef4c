"""``splitfed-models``: build, inspect and baseline the model artifacts (command line).

Exit codes: 0 success, 1 runtime failure (model/artifact error, integrity
mismatch), 2 usage or configuration error. ``build`` and ``baseline`` need
TensorFlow (the ``[build]`` extra); ``inspect`` and ``list`` do not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from models.data import WindowConfig, default_data_dir, default_window
from models.manifest import file_sha256, list_artifacts, list_full_artifacts, load_manifest
from models.spec import ZOO
from models.tflite_ops import format_model_info, read_model_info
from protocol.errors import ConfigError, ModelError
from service.cli import run_click


@click.group(name="splitfed-models", context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """iiot-splitfed model build and inspection."""


def _window(dataset: str, length: int | None, mode: str | None,
            per_window: bool | None) -> WindowConfig:
    base = default_window(dataset)
    return WindowConfig(dataset=dataset, length=length or base.length,
                        mode=mode or base.mode,  # type: ignore[arg-type]
                        per_window=base.per_window if per_window is None else per_window)


_data_dir = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                         default=default_data_dir,
                         show_default="$SPLITFED_DATA_DIR or the checkout's data/",
                         help="directory with <DATASET>_TRAIN.ts / _TEST.ts")


@cli.command()
@click.option("--model", "model_ids", multiple=True, type=click.Choice(sorted(ZOO)),
              help="model id (repeatable; default: all)")
@click.option("--cut", "cuts", multiple=True, type=int, help="cut point (repeatable; default: all)")
@click.option("--dataset", default="PLAID", show_default=True)
@click.option("--length", type=int, default=None, help="window length (default per dataset)")
@click.option("--mode", type=click.Choice(["crop", "pad", "resample"]), default=None)
@click.option("--per-window/--no-per-window", default=None,
              help="z-score each window before the dataset constants")
@click.option("--max-batch", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="root for <model>/cut<N>/ (default: the packaged models/artifacts)")
@click.option("--full", is_flag=True,
              help="export the whole model (fl-dpsgd, <model>/full/) instead of cut pairs")
@_data_dir
def build(model_ids: tuple[str, ...], cuts: tuple[int, ...], dataset: str, length: int | None,
          mode: str | None, per_window: bool | None, max_batch: int, seed: int,
          out: Path | None, full: bool, data_dir: Path) -> None:
    """Export client/server .tflite pairs and manifests (reproducible; needs TensorFlow)."""
    from models.baseline import spec_for
    from models.data import load_windows
    from models.export import export_full, export_pair

    window = _window(dataset, length, mode, per_window)
    windows = load_windows(window, data_dir=data_dir)
    for model_id in model_ids or sorted(ZOO):
        spec = spec_for(model_id, windows)
        if full:
            if cuts:
                raise ConfigError("--full exports the whole model; do not pass --cut")
            fm = export_full(spec, out_dir=None if out is None else out / model_id / "full",
                             max_batch=max_batch, seed=seed, norm_mean=windows.mean,
                             norm_std=windows.std, norm_per_window=windows.per_window,
                             dataset=dataset, window=window.as_dict())
            click.echo(f"{model_id} full: {fm.directory} model {fm.client_sha256[:16]}")
            continue
        for cut in cuts or spec.cuts:
            spec.check_cut(cut)
            target = None if out is None else out / model_id / f"cut{cut}"
            m = export_pair(spec, cut, out_dir=target, max_batch=max_batch, seed=seed,
                            norm_mean=windows.mean, norm_std=windows.std,
                            norm_per_window=windows.per_window, dataset=dataset,
                            window=window.as_dict())
            click.echo(f"{model_id} cut{cut}: {m.directory} client {m.client_sha256[:16]} "
                       f"server {m.server_sha256[:16]}")


@cli.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
def inspect(file: Path) -> None:
    """Print signatures, shapes and sha256 of a .tflite file or a manifest's pair."""
    if file.is_dir() or file.suffix == ".json":
        m = load_manifest(file)
        click.echo(m.to_json().rstrip())
        files = ((m.client_file, m.client_sha256), (m.server_file, m.server_sha256))
        for name, expected in files[:1] if m.kind == "full" else files:
            path = m.directory / name
            actual = file_sha256(path)
            status = "OK" if actual == expected else "MISMATCH"
            click.echo(f"\n== {name} (sha256 {status})")
            click.echo(format_model_info(read_model_info(path.read_bytes())))
            if actual != expected:
                raise ModelError(f"{path}: sha256 {actual} != manifest {expected}")
    else:
        click.echo(format_model_info(read_model_info(file.read_bytes())))


@cli.command(name="list")
def list_cmd() -> None:
    """List the packaged artifacts."""
    for m in list_artifacts():
        click.echo(f"{m.model_id} cut{m.cut} input {m.input_shape} activations "
                   f"{m.activation_shape} classes {m.num_classes} dataset {m.dataset}")
    for m in list_full_artifacts():
        click.echo(f"{m.model_id} full input {m.input_shape} classes {m.num_classes} "
                   f"dataset {m.dataset}")


@cli.command()
@click.option("--model", "model_ids", multiple=True, type=click.Choice(sorted(ZOO)))
@click.option("--cut", "cuts", multiple=True, type=int)
@click.option("--dataset", "datasets", multiple=True, default=("PLAID", "ACSF1"),
              show_default=True)
@click.option("--epochs", type=int, default=60, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="also write the results as JSON")
@_data_dir
def baseline(model_ids: tuple[str, ...], cuts: tuple[int, ...], datasets: tuple[str, ...],
             epochs: int, seed: int, json_out: Path | None, data_dir: Path) -> None:
    """Central non-private training: Keras vs chained LiteRT halves (needs TensorFlow)."""
    from models.baseline import TrainConfig, run_baseline

    cfg = TrainConfig(epochs=epochs, seed=seed)
    results = []
    click.echo("dataset model cut keras_acc litert_acc")
    for dataset in datasets:
        for model_id in model_ids or sorted(ZOO):
            for cut in cuts or (1, 2):
                r = run_baseline(model_id, cut, default_window(dataset), cfg, data_dir=data_dir)
                results.append(r)
                click.echo(f"{dataset} {model_id} {cut} {r['keras']['accuracy']:.3f} "
                           f"{r['litert']['accuracy']:.3f}")
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code (see module docstring)."""
    return run_click(cli, argv, prog_name="splitfed-models", click_error_code=2,
                     errors=((ConfigError, 2), (ModelError, 1)))


if __name__ == "__main__":
    sys.exit(main())
