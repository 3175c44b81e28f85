"""URSAMLib.organs: organs chosen by name, and one message for a name that is not there."""
import pytest

from URSAMLib.errors import URSAMError
from URSAMLib.organs import check_known, select_by_name

CLASSES = {1: "spleen", 2: "kidney_right", 5: "liver"}


def test_selection_keeps_the_requested_order():
    assert list(select_by_name(CLASSES, ["liver", "spleen"]).items()) == [(5, "liver"), (1, "spleen")]


def test_an_unknown_organ_is_named_with_what_there_is():
    with pytest.raises(URSAMError, match=r"^hepar not in classes.json; it names: spleen, kidney_right, liver\.$"):
        select_by_name(CLASSES, ["liver", "hepar"], "classes.json")


def test_a_long_list_of_known_organs_is_cut():
    known = [f"organ_{k}" for k in range(100)]
    with pytest.raises(URSAMError, match=r"organ_29 and 70 more\.$") as error:
        check_known(["x"], known, "the template")
    assert "organ_30" not in str(error.value)
    check_known(known[:3], known, "the template")  # all known: no error
