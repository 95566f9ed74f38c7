"""The checks of params.yaml that concern language models (students.LM_KINDS datasets, the gpt
family, distill.token_objectives): what a schema cannot say, before any job. Called by
params.check_params; every message names the key and the value. Files are checked for
existence here; their contents (UTF-8, ids in range, a tokenizer that loads, a teacher's
vocabulary) by the prepare and teacher jobs, which read them (engine/lm_data.py, engine/hf.py).
"""

from __future__ import annotations

from pathlib import Path

from distillstudy.engine_params import recipe_errors
from distillstudy.lm_grid import token_objectives
from distillstudy.spelling import TOKEN_OBJECTIVES, format_number
from distillstudy.students import LM_FAMILIES, LM_KINDS, distill_students, fits, is_factory

#: The teacher of a language-model dataset that names none: trained here (the contract's default).
DEFAULT_LM_TEACHER = {"family": "gpt", "size": 64}
#: Sequences sampled per replicate and split for the generation metrics (evaluate.lm_samples).
DEFAULT_LM_SAMPLES = 64


def lm_teacher(spec: dict) -> dict:
    """A language-model dataset's teacher: its entry's, else DEFAULT_LM_TEACHER."""
    return spec.get("teacher") or dict(DEFAULT_LM_TEACHER)


def trains_lm_teacher(spec: dict) -> bool:
    """Whether the teacher stage trains this dataset's teacher (gpt or a factory without weights)."""
    teacher = lm_teacher(spec)
    return "hf" not in teacher and "weights" not in teacher


def _dataset_errors(i: int, spec: dict, params: dict, base: Path) -> list[str]:
    where = f"prepare.datasets[{i}]"
    teacher = lm_teacher(spec)
    messages = []
    if spec["kind"] == "text":
        if not (base / spec["path"]).is_file():
            messages.append(f"{where}.path: {spec['path']!r} is not a file")
        tok = spec["tokenizer"]
        if tok != "bytes" and not (base / tok).is_dir():
            messages.append(f"{where}.tokenizer: {tok!r} is neither 'bytes' nor a folder (a local Hugging Face "
                            "tokenizer, save_pretrained)")
        if "hf" in teacher and tok == "bytes":
            messages.append(f"{where}.teacher.hf: a Hugging Face teacher reads its own tokenizer's ids: give "
                            f"{where}.tokenizer its tokenizer folder, not 'bytes'")
    keys = set(teacher)
    if "family" in teacher:
        if teacher["family"] not in LM_FAMILIES:
            messages.append(f"{where}.teacher.family: {teacher['family']!r} is not a language-model family "
                            f"({', '.join(LM_FAMILIES)})")
        if not isinstance(teacher.get("size"), int):
            messages.append(f"{where}.teacher.size: a gpt teacher's size is its width, a number "
                            f"(got {teacher.get('size')!r})")
        keys -= {"family", "size"}
    elif "hf" in teacher:
        if not (base / teacher["hf"]).is_dir():
            messages.append(f"{where}.teacher.hf: {teacher['hf']!r} is not a folder (a local causal LM, "
                            "save_pretrained; nothing is downloaded)")
        keys -= {"hf"}
    elif "factory" in teacher:
        if not isinstance(teacher.get("size"), int):
            messages.append(f"{where}.teacher.size: your language-model factory f(vocab_size, block, size) needs "
                            "the teacher's size, a number")
        keys -= {"factory", "size", "weights"}
    if keys:
        messages.append(f"{where}.teacher: a language-model teacher is {{family: gpt, size}}, {{hf: folder}} or "
                        f"{{factory, size[, weights]}}; {', '.join(sorted(keys))} does not apply")
    if trains_lm_teacher(spec) and "lm_recipe" not in params["teacher"]:
        messages.append(f"teacher.lm_recipe: dataset {spec['name']!r}'s teacher is trained here; give its recipe "
                        "(optimizer, schedule, epochs, batch_size)")
    return messages


def lm_errors(params: dict, base: str | Path = ".") -> list[str]:
    """Every problem of the language-model part of a study ([] when it has none)."""
    base = Path(base)
    datasets = [(i, d) for i, d in enumerate(params["prepare"]["datasets"]) if d["kind"] in LM_KINDS]
    distill = params["distill"]
    entries = distill_students(distill)
    messages = []
    for i, entry in enumerate(entries):
        if entry["family"] in LM_FAMILIES:
            for j, size in enumerate(entry["sizes"]):
                if isinstance(size, str):
                    messages.append(f"distill.students[{i}].sizes[{j}]: {size!r}: gpt sizes are widths (numbers)")
        if entry["datasets"] and is_factory(entry["family"]):
            kinds = {d["name"]: d["kind"] in LM_KINDS for d in params["prepare"]["datasets"]}
            if len({kinds[n] for n in entry["datasets"] if n in kinds}) > 1:
                messages.append(f"distill.students[{i}].datasets: your factory {entry['label']!r} is listed on "
                                "language-model and other datasets: list it twice, once per kind of data")
    for i, spec in datasets:
        messages += _dataset_errors(i, spec, params, base)
        if not any(fits(e, spec, params) and (e["datasets"] is None or spec["name"] in e["datasets"]) for e in entries):
            messages.append(f"distill.students: no family trains on the language-model dataset {spec['name']!r}; "
                            "add {family: gpt, sizes: [16, 32]} (or your factory listing it in datasets)")
    if not datasets:
        return messages
    if "lm_recipe" not in distill:
        messages.append("distill.lm_recipe: the study has language-model data; give the students' recipe "
                        "(optimizer, schedule, epochs, batch_size)")
    for section in ("teacher", "distill"):
        recipe = params[section].get("lm_recipe")
        if recipe is not None:
            messages += recipe_errors(f"{section}.lm_recipe", recipe)
            if "augment" in recipe:
                messages.append(f"{section}.lm_recipe.augment: crop and flip are for images, not token sequences")
    messages += _sweep_errors(distill)
    names = {d["name"] for _, d in datasets}
    for key in ("datasets", "generation_datasets", "resample_datasets"):
        for j, name in enumerate(params["designs"].get(key) or []):
            if name in names:
                messages.append(f"designs.{key}[{j}]: {name!r} is language-model data; the study designs run on "
                                "classification data (leave it out)")
    return messages


def _sweep_errors(distill: dict) -> list[str]:
    """Each token objective takes only its own hyper-parameters (TOKEN_OBJECTIVES), and no swept
    list names a value twice (1 and 1.0 are one cell): both would change the grid silently."""
    messages = []
    lists = [("distill.on_policy_fraction", distill.get("on_policy_fraction") or [])]
    for name, spec in token_objectives(distill).items():
        for key in sorted(set(spec) - {"sequences"}):
            if key not in TOKEN_OBJECTIVES[name]:
                takes = ", ".join(TOKEN_OBJECTIVES[name]) or "no hyper-parameters"
                messages.append(f"distill.token_objectives.{name}.{key}: {name} takes {takes}")
            else:
                lists.append((f"distill.token_objectives.{name}.{key}", spec[key]))
    for key, values in lists:
        spelled = [format_number(v) for v in values]
        twice = sorted({s for s in spelled if spelled.count(s) > 1})
        if twice:
            messages.append(f"{key}: {', '.join(twice)} listed twice (one cell per value)")
    return messages
