"""The order tests/conftest.py collects files in, which `make test` hands out to its workers in."""

from types import SimpleNamespace

from tests.conftest import HEAVIEST_FIRST, ROOT, pytest_collection_modifyitems


def test_every_file_named_heaviest_first_exists():
    assert [path for path in HEAVIEST_FIRST if not (ROOT / path).is_file()] == []


def test_the_heaviest_files_come_first_then_the_others_most_tests_first_each_file_together_in_its_order():
    one, two = "tests/a/test_one.py", "tests/b/test_two.py"
    nodeids = [
        f"{one}::test_x",
        f"{HEAVIEST_FIRST[1]}::test_b",
        f"{two}::test_z",
        f"{one}::test_y",
        f"{HEAVIEST_FIRST[0]}::test_a",
        f"{two}::test_w",
        f"{two}::test_v",
    ]
    items = [SimpleNamespace(nodeid=nodeid) for nodeid in nodeids]

    pytest_collection_modifyitems(items)

    assert [item.nodeid for item in items] == [
        f"{HEAVIEST_FIRST[0]}::test_a",
        f"{HEAVIEST_FIRST[1]}::test_b",
        f"{two}::test_z",
        f"{two}::test_w",
        f"{two}::test_v",
        f"{one}::test_x",
        f"{one}::test_y",
    ]
