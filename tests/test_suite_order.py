"""The order tests/conftest.py hands the heaviest files out in names files that exist, and comes first."""

from tests.conftest import HEAVIEST_FIRST, ROOT, pytest_collection_modifyitems


def test_every_file_named_heaviest_first_exists():
    assert [path for path in HEAVIEST_FIRST if not (ROOT / path).is_file()] == []


def test_the_heaviest_files_are_collected_first_in_their_order_and_the_others_keep_theirs():
    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid = nodeid

    light = ["tests/a/test_one.py::test_x", "tests/a/test_one.py::test_y", "tests/b/test_two.py::test_z"]
    heavy = [f"{HEAVIEST_FIRST[1]}::test_b", f"{HEAVIEST_FIRST[0]}::test_a"]
    items = [Item(nodeid) for nodeid in (light[0], heavy[0], light[1], heavy[1], light[2])]
    pytest_collection_modifyitems(items)
    assert [item.nodeid for item in items] == [heavy[1], heavy[0], *light]
