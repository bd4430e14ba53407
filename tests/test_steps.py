import pytest

from rewind import steps
from rewind.errors import UserError


@pytest.mark.parametrize("text, expected", [
    ("500it", 500), ("2ep", 782), ("1ep109it", 500), ("0it", 0), ("0ep", 0), ("500", 500), (" 3ep ", 1173),
])
def test_parse_at_391_iterations_per_epoch(text, expected):
    assert steps.parse(text, 391) == expected


@pytest.mark.parametrize("bad", ["", "ep", "it", "5x", "2ep3", "it500", "1.5ep", "-3it", "3it2ep", "two"])
def test_bad_step_strings_name_the_text_and_the_fix(bad):
    with pytest.raises(UserError) as e:
        steps.parse(bad, 391, "rewind point")
    assert repr(bad) in str(e.value) and "rewind point" in str(e.value) and "'1ep109it'" in str(e.value)


def test_recipe_epoch_is_391_iterations():
    assert steps.iterations_per_epoch(50000, 128) == 391
    assert steps.parse("160ep", 391) == 62560


def test_format_is_the_inverse_of_parse():
    for it in (0, 1, 390, 391, 392, 500, 62560):
        assert steps.parse(steps.format(it, 391), 391) == it
    assert steps.format(500, 391) == "1ep109it"


def test_parse_list():
    assert steps.parse_list("80ep,120ep", 391) == [31280, 46920]
    assert steps.parse_list("", 391) == []
