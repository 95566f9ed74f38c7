"""Command-line entry: one subcommand per stage, called alike by Snakemake and DVC.

    distillstudy validate params.yaml
    distillstudy prepare --name sine --kind sine --out-data data/prepared/sine.npz ...
    distillstudy {teacher,transfer,distill,evaluate,walkthrough,report} --help
"""

from __future__ import annotations

import argparse
import json
import sys

from distillstudy import launch
from distillstudy.errors import DataError, ParamsError, TrainingDiverged


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def size_arg(text: str) -> int | str:
    """A student size: a positive number, or a zoo model's name (the cifar family)."""
    from distillstudy.students import size_value

    value = size_value(text)
    if isinstance(value, int) and value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive size")
    return value


def add_prepare(sub):
    p = sub.add_parser("prepare", help="make, split and hash one dataset")
    p.add_argument("--name", required=True)
    p.add_argument("--kind", required=True,
                   choices=["sine", "digits", "mnist1d", "csv", "npz", "cifar10", "cifar100", "imagefolder",
                            "synthetic_lm", "text"])
    p.add_argument("--seed", type=int, required=True, help="global seed")
    p.add_argument("--val-fraction", type=float, required=True)
    p.add_argument("--test-fraction", type=float, required=True)
    p.add_argument("--n-train", type=positive_int, help="sine: training pool size")
    p.add_argument("--n-test", type=positive_int, help="sine: test size")
    p.add_argument("--path", help="csv: the table; npz: the arrays; cifar10, cifar100, imagefolder: the folder")
    p.add_argument("--label", help="csv: the label column")
    p.add_argument("--teacher-logits", help="csv, npz: an offline teacher's logits (npz), rows aligned with the data")
    p.add_argument("--spec", type=json.loads, help="synthetic_lm, text: the prepare.datasets entry as JSON")
    p.add_argument("--out-data", required=True)
    p.add_argument("--out-meta", required=True)


def cmd_prepare(a):
    from distillstudy.stages import prepare

    meta = prepare.run(name=a.name, kind=a.kind, global_seed=a.seed, val_fraction=a.val_fraction,
                       test_fraction=a.test_fraction, n_train=a.n_train, n_test=a.n_test, path=a.path,
                       label=a.label, teacher_logits=a.teacher_logits, out_data=a.out_data, out_meta=a.out_meta,
                       spec=a.spec)
    if "vocab_size" in meta:
        return  # a language model's data: its summary is printed by the stage
    print(f"prepare[{a.name}]: {meta['n_train']}/{meta['n_val']}/{meta['n_test']} train/val/test, "
          f"{meta['n_features']} features, {meta['n_classes']} classes, sha256 {meta['sha256'][:12]}")


def add_teacher_knobs(p, required: bool = True) -> None:
    """params.yaml's `teacher` section as options (the `transfer` stage trains teachers too)."""
    p.add_argument("--max-epochs", type=positive_int, required=required)
    p.add_argument("--patience", type=positive_int, required=required)
    p.add_argument("--batch-size", type=positive_int, required=required)
    p.add_argument("--lr", type=float, required=required)
    p.add_argument("--weight-decay", type=float, required=required)
    p.add_argument("--cnn-channels", type=positive_int, required=required)
    p.add_argument("--mlp-width", type=positive_int, required=required)
    p.add_argument("--dropout", type=float, required=required)


def add_teacher(sub):
    p = sub.add_parser("teacher", help="train one dataset's teacher, save weights and logits")
    p.add_argument("--data", required=True)
    p.add_argument("--lm", type=json.loads, help="language-model data: the job as JSON (dataset, teacher, recipe, "
                   "seed, lm_samples); needs --data, --out-meta (and --out-model unless the teacher is hf)")
    p.add_argument("--meta", required=False)
    p.add_argument("--seed", type=int, help="global seed")
    add_teacher_knobs(p, required=False)
    p.add_argument("--factory", help="your teacher: '<file>.py:<function>' (input_shape, n_classes) -> nn.Module")
    p.add_argument("--weights", help="with --factory: a state_dict trained elsewhere, loaded, not retrained")
    p.add_argument("--zoo", help="a zoo teacher ({family: cifar, size}): the model's name, e.g. resnet32x4")
    p.add_argument("--recipe", help="teacher.recipe as JSON: the standard engine trains the teacher (zoo teachers, "
                   "image datasets)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--nondeterministic", action="store_true", help="CUDA: cuDNN's fastest kernels")
    p.add_argument("--checkpoint", help="standard engine: per-epoch checkpoint (resumed when present)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--out-model")
    p.add_argument("--out-logits")
    p.add_argument("--out-meta", required=True)


def cmd_teacher(a):
    from distillstudy.stages import teacher

    if a.lm is not None:
        teacher.run_lm(job=a.lm, data=a.data, out_model=a.out_model, out_meta=a.out_meta, threads=a.threads,
                       checkpoint=a.checkpoint)
        return
    missing = [k for k in ("meta", "seed", "max_epochs", "patience", "batch_size", "lr", "weight_decay",
                           "cnn_channels", "mlp_width", "dropout", "out_model", "out_logits") if getattr(a, k) is None]
    if missing:
        raise SystemExit(f"distillstudy teacher: missing {', '.join('--' + k.replace('_', '-') for k in missing)}")

    teacher.run(data=a.data, meta=a.meta, global_seed=a.seed, max_epochs=a.max_epochs,
                patience=a.patience, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                cnn_channels=a.cnn_channels, mlp_width=a.mlp_width, dropout=a.dropout,
                factory=a.factory, weights=a.weights, out_model=a.out_model,
                out_logits=a.out_logits, out_meta=a.out_meta, threads=a.threads, zoo=a.zoo, recipe=a.recipe,
                device=a.device, precision=a.precision, checkpoint=a.checkpoint,
                deterministic=not a.nondeterministic)


def add_transfer(sub):
    p = sub.add_parser("transfer", help="build one study-design variant's transfer set")
    p.add_argument("--data", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--teacher-model", required=True, help="the reference teacher's weights")
    p.add_argument("--teacher-logits", required=True, help="the reference teacher's logits")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", required=True, help="e.g. transfer-cross_fitted, width-2, labels-0.1")
    p.add_argument("--seed", type=int, required=True, help="global seed")
    # Only the knobs a variant reads are given (so changing another re-runs nothing).
    add_teacher_knobs(p, required=False)
    p.add_argument("--folds", type=int, help="cross_fitted: fold teachers")
    p.add_argument("--copies", type=positive_int, help="augmented: copies per point")
    p.add_argument("--noise", type=float, help="augmented: noise sigma (x feature std)")
    p.add_argument("--shift", type=int, help="augmented (mnist1d): largest circular shift")
    p.add_argument("--pixel-shift", type=float, help="augmented (digits): largest image shift")
    p.add_argument("--factory", help="the dataset's teacher is your '<file>.py:<function>' (trained here)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--out-set", required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-meta", required=True)


def cmd_transfer(a):
    from distillstudy.stages import transfer

    record = transfer.run(
        data=a.data, meta=a.meta, teacher_model=a.teacher_model, teacher_logits=a.teacher_logits,
        dataset=a.dataset, variant=a.variant, global_seed=a.seed, max_epochs=a.max_epochs,
        patience=a.patience, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
        cnn_channels=a.cnn_channels, mlp_width=a.mlp_width, dropout=a.dropout, folds=a.folds,
        copies=a.copies, noise=a.noise, shift=a.shift, pixel_shift=a.pixel_shift,
        out_set=a.out_set, out_model=a.out_model, out_meta=a.out_meta, threads=a.threads, factory=a.factory)
    print(f"transfer[{a.dataset}, {a.variant}]: {record.get('n_transfer')} transfer points")


def add_distill(sub):
    p = sub.add_parser("distill", help="train all seeds of one grid cell (or, on the standard engine, one "
                       "replicate: --replicate; or gather a cell's replicates: --gather)")
    p.add_argument("--gather", nargs="+", metavar="REPLICATE_LOGITS",
                   help="standard engine: the cell's replicates' logits files, in replicate order, into one cell file "
                        "(with --out-model, --out-logits; nothing else is read)")
    p.add_argument("--data")
    p.add_argument("--lm", type=json.loads, help="language-model data: the cell's job as JSON (dataset, family, size, "
                   "cell, seeds, seed, recipe, teacher, lm_samples); with --data, --out-model, --out-logits")
    targets = p.add_mutually_exclusive_group()
    targets.add_argument("--teacher-logits", help="the reference teacher's logits (reference grid)")
    targets.add_argument("--transfer", help="a study-design variant's transfer set")
    p.add_argument("--variant", default="reference", help="study-design variant (reference: the main grid)")
    p.add_argument("--dataset")
    p.add_argument("--size", type=size_arg, help="the family's size (mlp width, cnn channels, a zoo model's name)")
    p.add_argument("--family", default="mlp", help="mlp, cnn, or your factory '<file>.py:<function>'")
    p.add_argument("--depth", type=positive_int, help="mlp only: hidden layers (default 2)")
    p.add_argument("--teacher-model", help="the reference teacher's weights (consistent-teaching sets only)")
    p.add_argument("--previous-generation", help="born-again generation k > 1: generation k - 1's alpha = 1 cell")
    p.add_argument("--tune-lr", type=float, nargs="+", help="tune on validation: learning rates")
    p.add_argument("--tune-weight-decay", type=float, nargs="+", help="tune on validation: weight decays")
    p.add_argument("--tune-epochs", type=positive_int, nargs="+", help="tune on validation: epochs levels")
    p.add_argument("--cell",
                   help="baseline | control | <objective>[_<setting>]_mix<alpha>, e.g. kd_T4_mix0.9")
    p.add_argument("--seeds", type=positive_int, help="number of replicates")
    p.add_argument("--seed", type=int, help="global seed")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    standard = p.add_argument_group("standard engine (one replicate per job)")
    standard.add_argument("--replicate", type=int, help="train only this replicate (0-based)")
    standard.add_argument("--recipe", help="distill.recipe as JSON (optimizer, schedule, epochs, batch_size, augment)")
    standard.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    standard.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    standard.add_argument("--nondeterministic", action="store_true",
                          help="CUDA: let cuDNN pick its fastest kernels (distill.deterministic: false)")
    standard.add_argument("--checkpoint", help="per-epoch checkpoint (resumed when present, removed at the end)")
    standard.add_argument("--teacher-meta", help="the teacher's record (models/teachers/<dataset>.json): rebuilds "
                          "it to run on augmented batches")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-logits", required=True)


def _tune(a) -> dict | None:
    from distillstudy.grid import TUNING_KEYS

    given = [a.tune_lr, a.tune_weight_decay, a.tune_epochs]
    if not any(given):
        return None
    if not all(given):
        raise SystemExit("distillstudy distill: --tune-lr, --tune-weight-decay and --tune-epochs go together")
    return dict(zip(TUNING_KEYS, given))


def cmd_distill(a):
    from distillstudy.stages import distill

    if a.gather:
        distill.gather(a.gather, out_model=a.out_model, out_logits=a.out_logits)
        return
    if a.lm is not None:
        distill.run_lm(job=a.lm, data=a.data, out_model=a.out_model, out_logits=a.out_logits,
                       teacher_model=a.teacher_model, checkpoint=a.checkpoint, threads=a.threads)
        return
    standard = a.replicate is not None  # the standard engine: one replicate of the reference grid
    required = ["data", "dataset", "size", "cell", "seeds", "seed"] + (
        ["teacher_logits", "recipe"] if standard else ["epochs", "batch_size", "lr", "weight_decay"])
    missing = [f"--{k.replace('_', '-')}" for k in required if getattr(a, k) is None]
    if not standard and (a.teacher_logits is None) == (a.transfer is None):
        missing.append("exactly one of --teacher-logits and --transfer")
    if missing:
        raise SystemExit(f"distillstudy distill: missing {', '.join(missing)}")
    if standard:
        distill.train_replicate(data=a.data, teacher_logits=a.teacher_logits, dataset=a.dataset, family=a.family,
                                size=a.size, cell=a.cell, replicate=a.replicate, n_seeds=a.seeds, global_seed=a.seed,
                                recipe=a.recipe, device=a.device, precision=a.precision, out_model=a.out_model,
                                out_logits=a.out_logits, checkpoint=a.checkpoint, teacher_model=a.teacher_model,
                                teacher_meta=a.teacher_meta, threads=a.threads, deterministic=not a.nondeterministic)
        return
    distill.run(data=a.data, teacher_logits=a.teacher_logits, transfer=a.transfer, variant=a.variant,
                dataset=a.dataset, size=a.size, family=a.family, depth=a.depth, tune=_tune(a),
                cell=a.cell, n_seeds=a.seeds, global_seed=a.seed, epochs=a.epochs,
                batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                out_model=a.out_model, out_logits=a.out_logits, threads=a.threads, teacher_model=a.teacher_model,
                previous_generation=a.previous_generation)


def add_evaluate(sub):
    p = sub.add_parser("evaluate", help="metrics of every model on every split")
    # "*": a study of language models alone has no classification dataset (header-only tables)
    p.add_argument("--data", nargs="*", help="prepared datasets, one per dataset")
    p.add_argument("--teachers", nargs="*", help="teacher logits, same order")
    p.add_argument("--teacher-meta", nargs="*", help="teacher records, same order")
    p.add_argument("--cells", nargs="*", help="student cell logits")
    p.add_argument("--lm-cells", nargs="*", help="language-model cells (.lm.npz): with --lm-teachers, --out-results, "
                   "--out-metrics, instead of the classification options")
    p.add_argument("--lm-teachers", nargs="*", default=[], help="language-model teachers' records (.lm.json)")
    p.add_argument("--design-cells", nargs="*", default=[], help="study-design variants' cell logits")
    p.add_argument("--transfer-sets", nargs="*", default=[], help="study-design variants' transfer sets")
    p.add_argument("--out-designs", help="designs.csv (written, header only, when there are no designs)")
    p.add_argument("--out-variance", help="variance.csv (written, header only, without designs.resamples)")
    p.add_argument("--out-generations", help="generations.csv (header only without designs.generations)")
    p.add_argument("--out-curves", help="training_curves.csv: the standard engine's per-epoch curves (header only "
                   "without)")
    p.add_argument("--ece-bins", type=positive_int)
    p.add_argument("--out-results", required=True)
    p.add_argument("--out-metrics", required=True)


def cmd_evaluate(a):
    from distillstudy.stages import evaluate

    if a.lm_cells is not None:
        evaluate.run_lm(cells=a.lm_cells, teachers=a.lm_teachers, out_results=a.out_results,
                        out_metrics=a.out_metrics)
        return
    missing = [k for k in ("data", "teachers", "teacher_meta", "cells", "ece_bins") if getattr(a, k) is None]
    if missing:
        raise SystemExit(f"distillstudy evaluate: missing {', '.join('--' + k.replace('_', '-') for k in missing)}")

    evaluate.run(data=a.data, teachers=a.teachers, teacher_meta=a.teacher_meta, cells=a.cells,
                 ece_bins=a.ece_bins, out_results=a.out_results, out_metrics=a.out_metrics,
                 design_cells=a.design_cells, transfer_sets=a.transfer_sets, out_designs=a.out_designs,
                 out_variance=a.out_variance, out_generations=a.out_generations, out_curves=a.out_curves)


def add_walkthrough(sub):
    p = sub.add_parser("walkthrough", help="reproduce the blog walkthrough's sine experiment")
    p.add_argument("--n-train", type=positive_int, nargs="+", required=True)
    p.add_argument("--trials", type=positive_int, required=True)
    p.add_argument("--pool-size", type=positive_int, required=True)
    p.add_argument("--rng-seed", type=int, required=True)
    p.add_argument("--split-seed", type=int, required=True)
    p.add_argument("--degree", type=positive_int, required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-test-png", required=True)
    p.add_argument("--out-train-png", required=True)
    p.add_argument("--out-variance-csv", help="bias2 + variance per n and model (omit: not computed)")


def cmd_walkthrough(a):
    from distillstudy.stages import walkthrough

    frame, variance = walkthrough.run(n_train=a.n_train, trials=a.trials, pool_size=a.pool_size,
                                      rng_seed=a.rng_seed, split_seed=a.split_seed, degree=a.degree,
                                      out_csv=a.out_csv, out_test_png=a.out_test_png,
                                      out_train_png=a.out_train_png, out_variance_csv=a.out_variance_csv)
    test = frame[frame["split"] == "test"].pivot(index="n_train", columns="model", values="log_loss")
    print("walkthrough test log loss:\n" + test.to_string(float_format=lambda v: f"{v:.4f}"))
    if variance is not None:
        print("walkthrough bias2 + variance:\n" + variance.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def add_report(sub):
    p = sub.add_parser("report", help="write reports/index.html")
    p.add_argument("--results", required=True)
    p.add_argument("--calibration", help="calibration.csv from evaluate (omit: no reliability diagrams)")
    p.add_argument("--walkthrough", help="walkthrough.csv (omit when the walkthrough is disabled)")
    p.add_argument("--designs", help="designs.csv from evaluate (omit: no study-design section)")
    p.add_argument("--variance", help="variance.csv from evaluate (omit: no variance design)")
    p.add_argument("--generations", help="generations.csv from evaluate (omit: no born-again generations)")
    p.add_argument("--walkthrough-pngs", nargs="*", default=[])
    p.add_argument("--walkthrough-variance", help="walkthrough_variance.csv (omit: no bias2 + variance table)")
    p.add_argument("--dataset-meta", nargs="*", required=True, help="the classification datasets' records")
    p.add_argument("--params-json", required=True, help="the effective params as one JSON string")
    p.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark files")
    p.add_argument("--lm-results", help="lm_results.csv from evaluate (omit: no language-model section)")
    p.add_argument("--out-html", required=True)
    p.add_argument("--figures-dir", required=True)
    p.add_argument("--plots-dir", required=True)


def cmd_report(a):
    from distillstudy.stages import report

    report.run(results=a.results, dataset_meta=a.dataset_meta, params=json.loads(a.params_json),
               out_html=a.out_html, figures_dir=a.figures_dir, plots_dir=a.plots_dir, calibration=a.calibration,
               walkthrough=a.walkthrough, walkthrough_pngs=a.walkthrough_pngs, designs=a.designs,
               variance=a.variance, walkthrough_variance=a.walkthrough_variance, generations=a.generations,
               benchmarks=a.benchmarks, lm_results=a.lm_results)
    print(f"report: wrote {a.out_html}")


def add_validate(sub):
    p = sub.add_parser("validate", help="check a params file against the schema")
    p.add_argument("params", nargs="?", default="params.yaml")


def cmd_validate(a):
    from distillstudy.students import distill_students, is_factory, without_language_models
    from distillstudy.params import load_params

    params = load_params(a.params)
    if any(is_factory(e["family"]) for e in distill_students(params["distill"])):
        from distillstudy.engine.factories import check_students  # imports torch: only for your factories

        check_students(without_language_models(params))
    print(f"{a.params}: valid")


COMMANDS = {
    "validate": (add_validate, cmd_validate),
    "prepare": (add_prepare, cmd_prepare),
    "teacher": (add_teacher, cmd_teacher),
    "transfer": (add_transfer, cmd_transfer),
    "distill": (add_distill, cmd_distill),
    "evaluate": (add_evaluate, cmd_evaluate),
    "walkthrough": (add_walkthrough, cmd_walkthrough),
    "report": (add_report, cmd_report),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillstudy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command][1](args)
    except (ParamsError, DataError, TrainingDiverged) as exc:
        print(f"distillstudy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def entry() -> int:
    """The `distillstudy` console script: a stage command runs in the warm worker when one
    serves this code (launch.py), else here."""
    argv = sys.argv[1:]
    code = launch.run(argv)
    return main(argv) if code is None else code


if __name__ == "__main__":
    sys.exit(entry())
