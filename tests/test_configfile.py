"""A study of your own through `snakemake --configfile mine.yaml`, params.yaml untouched.

Snakemake merges the configfile into params.yaml key by key (snakemake.utils.update_config:
mappings merged, lists replaced), so the default study's lists that pick datasets and
families for a setting (distill.tune.datasets / families, designs.datasets,
designs.generation_datasets, distill.students[*].datasets) stay. They apply where the study
has the names they list: a built-in name it lacks (a dataset kind such as mnist1d, a
built-in family such as mlp) is skipped with a note, any other unknown name is refused as a
typo naming the key; designs.sizes and designs.alpha are checked only where a design runs.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config

from conftest import BIN, ROOT, make_workspace, run
from distillstudy import grid
from distillstudy.errors import ParamsError
from distillstudy.params import check_params, skipped_names

#: The user's configfile: one CSV table, one npz of 4x4 arrays, their own student family first.
MINE = """
prepare:
  datasets:
    - {name: mytable, kind: csv, path: data/raw/mytable.csv, label: label}
    - {name: myarrays, kind: npz, path: data/raw/myarrays.npz}
distill:
  students:
    - {family: "zoo/x.py:f", sizes: [2, 4]}   # yours: f(input_shape, n_classes, size)
    - {family: mlp, sizes: [16]}
"""

FACTORY = '''import math

import torch.nn as nn


def f(input_shape, n_classes, size):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), size), nn.ReLU(),
                         nn.Linear(size, n_classes))
'''


def user_files(root) -> None:
    """The files MINE names, under `root`: 60 rows each, three classes."""
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    (root / "zoo").mkdir(exist_ok=True)
    (root / "zoo/x.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{'pqr'[i % 3]}" for i, (a, b) in enumerate(rng.normal(size=(60, 2)))]
    (root / "data/raw/mytable.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    np.savez(root / "data/raw/myarrays.npz", x=rng.normal(size=(60, 4, 4)), y=np.arange(60) % 3)


def merged(mine: dict) -> dict:
    """params.yaml with the configfile merged in, exactly as Snakemake merges them."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    update_config(params, copy.deepcopy(mine))
    return params


@pytest.fixture
def user_root(tmp_path):
    user_files(tmp_path)
    return tmp_path


def test_your_configfile_passes_the_checks_and_the_default_studys_names_are_skipped(user_root):
    params = merged(yaml.safe_load(MINE))
    check_params(params, base=user_root)
    notes = "\n".join(skipped_names(params))
    for key, names in [("distill.tune.datasets", "mnist1d, digits"), ("designs.datasets", "mnist1d, sine"),
                       ("designs.generation_datasets", "sine")]:
        assert f"{key}: {names} skipped" in notes, notes
    assert "distill.tune.families" not in notes  # mlp is one of this study's families
    # The grid agrees: no design variant, no tuned cell on your datasets.
    for spec in params["prepare"]["datasets"]:
        assert grid.dataset_variants(params, spec) == []
        assert not grid.tuned(params["distill"], spec["name"], "mlp")
    assert grid.design_datasets(params) == grid.generation_datasets(params) == []


def test_the_default_study_skips_nothing():
    assert skipped_names(yaml.safe_load((ROOT / "params.yaml").read_text())) == []


def test_names_you_give_apply_where_your_study_has_them(user_root):
    mine = yaml.safe_load(MINE)
    mine["distill"]["tune"] = {"datasets": ["mytable", "digits"], "families": ["f"]}
    mine["designs"] = {"datasets": ["myarrays", "sine"], "sizes": [2], "generation_datasets": ["sine"]}
    params = merged(mine)
    check_params(params, base=user_root)
    assert grid.tuned(params["distill"], "mytable", "f") and not grid.tuned(params["distill"], "myarrays", "f")
    assert not grid.tuned(params["distill"], "mytable", "mlp")
    assert grid.design_datasets(params) == ["myarrays"]
    variants = grid.dataset_variants(params, params["prepare"]["datasets"][1])
    assert "epochs-100" in variants and not any(v.startswith("generation-") for v in variants)
    assert not any(v.startswith("resample-") for v in variants)  # params.yaml's resample_datasets: [sine]
    assert grid.dataset_variants(params, params["prepare"]["datasets"][0]) == []
    mine["designs"]["resample_datasets"] = ["myarrays"]
    variants = grid.dataset_variants(merged(mine), params["prepare"]["datasets"][1])
    assert [v for v in variants if v.startswith("resample-")] == [f"resample-{r}" for r in (1, 2, 3, 4)]


def test_design_sizes_are_checked_where_a_design_runs(user_root):
    """designs.sizes: [16, 64] names the default mlp's sizes: nothing while no design runs on
    your datasets, refused naming the key once one does (your reference family has 2 and 4)."""
    mine = yaml.safe_load(MINE)
    mine["designs"] = {"datasets": ["mytable"]}
    with pytest.raises(ParamsError, match=r"designs.sizes\[0\]: 16 is not one of the sizes of the reference "
                                          r"family 'f'"):
        check_params(merged(mine), base=user_root)


TYPOS = [  # (where the typo goes, the message it must give)
    (["designs", "datasets"], "designs.datasets[1]: 'mytabel' is not a dataset of prepare.datasets"),
    (["designs", "generation_datasets"], "designs.generation_datasets[1]: 'mytabel' is not a dataset"),
    (["distill", "tune", "datasets"], "distill.tune.datasets[1]: 'mytabel' is not a dataset"),
    (["distill", "students", 1, "datasets"], "distill.students[1].datasets[1]: 'mytabel' is not a dataset"),
    (["distill", "tune", "families"], "distill.tune.families[1]: 'mytabel' is not a family of distill.students"),
]


@pytest.mark.parametrize("path, message", TYPOS, ids=[".".join(map(str, p)) for p, _ in TYPOS])
def test_a_typo_is_refused_naming_the_key(path, message, user_root):
    """A name that is neither in your study nor a built-in one: a typo, refused."""
    params = merged(yaml.safe_load(MINE))
    node = params
    for key in path[:-1]:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    # A built-in name first (skipped), then the typo.
    node[path[-1]] = ["mlp" if path[-1] == "families" else "mnist1d", "mytabel"]
    with pytest.raises(ParamsError) as error:
        check_params(params, base=user_root)
    assert message in str(error.value)
    assert "a typo?" in str(error.value)


@pytest.mark.slow
def test_snakemake_dry_run_of_your_configfile_from_the_repository_root(tmp_path):
    """`snakemake -n --configfile mine.yaml` beside the repository's own params.yaml: the
    top-level Snakefile, its profile, your datasets only, the skipped names said."""
    ws = make_workspace(tmp_path / "study", ROOT / "params.yaml")
    user_files(ws)
    (ws / "mine.yaml").write_text(MINE)
    proc = run(["snakemake", "-n", "--configfile", "mine.yaml"], ws)
    out = proc.stdout + proc.stderr
    assert "Using workflow specific profile profiles/default" in out
    assert "params: designs.datasets: mnist1d, sine skipped" in out
    prepared = set(re.findall(r"data/prepared/([A-Za-z0-9_-]+)\.npz", out))
    assert prepared == {"mytable", "myarrays"}
    students = set(re.findall(r"models/students/[A-Za-z0-9_-]+/([A-Za-z0-9_-]+)/baseline\.logits\.npz", out))
    assert students == {"f-2", "f-4", "h16"}
    assert "models/transfer/" not in out  # no design applies to your datasets
    # A typo in the same configfile stops before any job, naming the key.
    (ws / "typo.yaml").write_text(MINE + "designs: {datasets: [mytabel]}\n")
    proc = run(["snakemake", "-n", "--configfile", "typo.yaml"], ws, check=False)
    assert proc.returncode != 0
    assert "designs.datasets[0]: 'mytabel' is not a dataset of prepare.datasets" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_readme_example_is_studies_mine_and_it_runs(tmp_path):
    """The README's "your own data" example is the repository's studies/mine.yaml (a CSV, an
    npz of 8x8 images, your student family first), shown verbatim; run as the README says,
    it trains your family on both datasets and writes the report."""
    readme = (ROOT / "README.md").read_text()
    for name in ("mine.yaml", "mine.py"):
        shown = "\n".join("   " + line if line else "" for line in (ROOT / "studies" / name).read_text().splitlines())
        assert shown in readme, f"README does not show studies/{name} as it is"
    ws = make_workspace(tmp_path / "study", ROOT / "params.yaml")
    for name in ("mine.yaml", "mine.py", "mine_data.py"):
        (ws / "studies").mkdir(exist_ok=True)
        (ws / "studies" / name).write_bytes((ROOT / "studies" / name).read_bytes())
    run([str(BIN / "python"), "studies/mine_data.py"], ws)
    run(["snakemake", "-c2", "--configfile", "studies/mine.yaml"], ws, timeout=900)
    results = pd.read_csv(ws / "reports/results.csv")
    students = results[results["model"] != "teacher"]
    assert set(zip(students["dataset"], students["family"])) == {("iris", "small_net"), ("digits8", "small_net")}
    tuned = students[students["metric"] == "lr"]
    assert tuned.empty  # params.yaml's tune.datasets name the default study's datasets: skipped here
    html = (ws / "reports/index.html").read_text()
    assert "My study: iris and 8x8 digits" in html and "small_net students" in html
