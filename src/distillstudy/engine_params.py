"""The checks of params.yaml that concern the two engines (students.builtin_engine): what a
schema cannot say about the standard engine's students, teachers and recipes. Called by
params.check_params; every message names the key and the value.

Your factory's engine under `engine: auto` is decided by building its module (the
Snakefile does, before any job: engine.factories.family_engine); the rules below need only
the names, so `distillstudy validate` applies them without torch.
"""

from __future__ import annotations

from distillstudy.students import IMAGE_KINDS, STANDARD, ZOO_SIZES, builtin_engine, distill_students, standard_teacher

#: Input rank of the zoo's models: images (C, H, W).
IMAGE_RANK = 3


def _teacher_errors(i: int, spec: dict, params: dict) -> list[str]:
    where = f"prepare.datasets[{i}].teacher"
    teacher = spec.get("teacher", {})
    messages = []
    if "family" in teacher:
        if set(teacher) - {"family", "size", "weights"}:
            messages.append(f"{where}: a zoo teacher takes family, size (and weights), not "
                            f"{', '.join(sorted(set(teacher) - {'family', 'size', 'weights'}))}")
        if teacher.get("size") not in ZOO_SIZES:
            messages.append(f"{where}.size: {teacher.get('size')!r} is not a model of the cifar zoo "
                            f"({', '.join(ZOO_SIZES)})")
        if "weights" in teacher:
            messages.append(f"{where}.weights: weights trained elsewhere go with your factory (teacher.factory); "
                            "a zoo teacher is trained here with teacher.recipe")
    elif spec["kind"] in IMAGE_KINDS and "factory" not in teacher:
        messages.append(f"{where}: image data need a teacher: {{family: cifar, size: resnet32x4}} (trained here with "
                        "teacher.recipe) or your factory (with or without weights)")
    if standard_teacher(spec) and "weights" not in teacher and "recipe" not in params["teacher"]:
        messages.append(f"teacher.recipe: dataset {spec['name']!r}'s teacher is trained by the standard engine; give "
                        "its recipe (optimizer, schedule, epochs, batch_size)")
    return messages


def _student_errors(i: int, entry: dict, datasets: dict[str, dict], params: dict, shape_of) -> list[str]:
    where = f"distill.students[{i}]"
    messages = []
    if entry["family"] == "cifar":
        for j, size in enumerate(entry["sizes"]):
            if size not in ZOO_SIZES:
                messages.append(f"{where}.sizes[{j}]: {size!r} is not a model of the cifar zoo ({', '.join(ZOO_SIZES)})")
    else:
        for j, size in enumerate(entry["sizes"]):
            if isinstance(size, str):
                messages.append(f"{where}.sizes[{j}]: {size!r}: the {entry['label']} family's sizes are numbers "
                                "(model names are the cifar family's)")
    names = entry["datasets"] or list(datasets)
    engines = {name: builtin_engine(entry, datasets[name]["kind"]) for name in names if name in datasets}
    standard_on = [name for name, engine in engines.items() if engine == STANDARD]
    if standard_on and "recipe" not in params["distill"]:
        messages.append(f"distill.recipe: the standard engine trains {where} ({entry['label']}) on "
                        f"{', '.join(standard_on)}; give its recipe (optimizer, schedule, epochs, batch_size)")
    if entry.get("engine") == "stacked" and (entry["family"] == "cifar" or standard_on):
        messages.append(f"{where}.engine: stacked cannot train {entry['label']!r} on {', '.join(standard_on)} "
                        "(the zoo and image data train on the standard engine)")
    for name in names:
        spec = datasets.get(name)
        if spec is None:
            continue
        if entry["family"] == "cifar" and spec["kind"] not in IMAGE_KINDS and len(shape_of(spec)) != IMAGE_RANK:
            messages.append(f"{where}: the cifar zoo takes images (C, H, W); dataset {name!r} is {spec['kind']!r} "
                            "(list the family's datasets)")
        mixed = {e for e in engines.values() if e is not None}
        if len(mixed) > 1:
            messages.append(f"{where}: {entry['label']!r} would train on the stacked engine on some datasets and "
                            f"on the standard engine on {', '.join(standard_on)}: give it one engine (engine: "
                            "standard) or list it twice with its datasets")
            break
    augment = (params["distill"].get("recipe") or {}).get("augment")
    flat = [name for name in standard_on if datasets[name]["kind"] not in IMAGE_KINDS]
    if augment and flat:
        messages.append(f"distill.recipe.augment: crop and flip are for image data; {where} trains on "
                        f"{', '.join(flat)} with the standard engine (drop augment, or list the family's datasets)")
    return messages


def _grid_errors(params: dict, datasets: dict[str, dict]) -> list[str]:
    """The study designs and the equal-effort tuning run on the stacked engines: refuse
    them where they would meet a standard-engine family, naming both."""
    distill, designs = params["distill"], params["designs"]
    students = distill_students(distill)
    messages = []
    reference = students[0]
    for name in designs.get("datasets") or []:
        if name in datasets and builtin_engine(reference, datasets[name]["kind"]) == STANDARD:
            messages.append(f"designs.datasets: {name!r}: the study designs run on the stacked engines, and the "
                            f"reference family {reference['label']!r} trains on the standard engine there "
                            "(set designs.datasets: [] for this study)")
    tune = distill.get("tune") or {}
    for entry in students:
        for name in entry["datasets"] or list(datasets):
            if name not in datasets or builtin_engine(entry, datasets[name]["kind"]) != STANDARD:
                continue
            if "families" in tune and entry["label"] not in tune["families"]:
                continue
            if "datasets" in tune and name not in tune["datasets"]:
                continue
            if tune:
                messages.append(f"distill.tune: would tune {entry['label']!r} on {name!r}, which the standard engine "
                                "trains with distill.recipe; list the tuned families (distill.tune.families) "
                                "or datasets (distill.tune.datasets) without it")
    return messages


def recipe_errors(where: str, recipe: dict) -> list[str]:
    """What the schema cannot say about a recipe (distill.recipe, teacher.recipe)."""
    opt, sched = recipe["optimizer"], recipe["schedule"]
    messages = []
    if opt.get("nesterov") and (opt["name"] != "sgd" or not opt.get("momentum")):
        messages.append(f"{where}.optimizer.nesterov: needs sgd with momentum > 0")
    if opt.get("momentum") and opt["name"] != "sgd":
        messages.append(f"{where}.optimizer.momentum: sgd only ({opt['name']} has its own betas)")
    milestones = list(sched.get("milestones", []))
    if milestones != sorted(set(milestones)):
        messages.append(f"{where}.schedule.milestones: {milestones} must increase")
    if sched["name"] == "cosine" and sched.get("warmup_epochs", 0) >= recipe["epochs"]:
        messages.append(f"{where}.schedule.warmup_epochs: {sched.get('warmup_epochs', 0)} leaves no epoch of the cosine "
                        f"schedule ({recipe['epochs']} epochs)")
    return messages


def engine_errors(params: dict, shape_of) -> list[str]:
    """Every problem of the standard engine's part of params (see the module docstring);
    `shape_of(dataset entry)` gives one example's shape, () when its file cannot tell."""
    datasets = {d["name"]: d for d in params["prepare"]["datasets"]}
    messages = []
    for section in ("teacher", "distill"):
        if params[section].get("recipe"):
            messages += recipe_errors(f"{section}.recipe", params[section]["recipe"])
    for i, spec in enumerate(params["prepare"]["datasets"]):
        messages += _teacher_errors(i, spec, params)
    for i, entry in enumerate(distill_students(params["distill"])):
        messages += _student_errors(i, entry, datasets, params, shape_of)
    return messages + _grid_errors(params, datasets)
