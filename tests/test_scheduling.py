"""The test suite's own scheduling (tests/conftest.py): every ONE_WORKER prefix still names
tests that exist (a renamed file or test would silently split its module fixture between
the two xdist workers again), and pytest-xdist still offers the hook and the class the
scheduler is built on."""

from __future__ import annotations

import re

from conftest import ONE_WORKER, ROOT, one_worker_group


def test_every_one_worker_prefix_names_existing_tests():
    for prefix, group in ONE_WORKER.items():
        path, _, test = prefix.partition("::")
        source = ROOT / path
        assert source.is_file(), f"ONE_WORKER[{prefix!r}] ({group}): no file {path}"
        name = test.rstrip("[")
        if name:
            assert re.search(rf"^def {re.escape(name)}\(", source.read_text(), re.M), \
                f"ONE_WORKER[{prefix!r}] ({group}): no test {name} in {path}"
        else:
            assert re.search(r"^def test_", source.read_text(), re.M), f"{path} has no tests"


def test_groups_by_prefix_and_leaves_other_tests_alone():
    assert one_worker_group("tests/test_slurm.py::test_slurm_profiles_dry_run") == "slurm"
    assert one_worker_group("tests/test_reliability.py::test_bad_params_stop_every_front_door[distill.sizes=[]]") \
        == "front_doors"
    assert one_worker_group("tests/test_reliability.py::test_kill_minus_nine_then_resume_is_byte_identical") is None
    assert one_worker_group("tests/test_gpt.py::test_sample_with_and_without_cache") is None


def test_pytest_xdist_still_offers_what_the_scheduler_uses():
    from xdist import newhooks
    from xdist.scheduler import LoadScopeScheduling

    assert hasattr(newhooks, "pytest_xdist_make_scheduler")
    assert callable(getattr(LoadScopeScheduling, "_split_scope", None))
